"""The limit: a bare ASGI app that validates the same JSON with msgspec and keeps the raw bytes, no storage.

Same routes and request shapes as OpenCDP's collection API (``/v1/track``, ``/v1/batch``), served by
``python benchmarks/bare_app.py --port P`` under exactly the uvicorn settings of ``opencdp serve``
(httptools, uvloop, one process, no access log). It decodes each body fully into typed msgspec structs
(every event, every nested object), checks the few rules a collector must (a type, an event name, a user or
anonymous id), appends the raw body to an in-memory buffer that is dropped every 64 MiB, and answers
``{"success":true}``. It writes nothing to disk: this is what the web stack and JSON validation cost alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
import uvicorn

try:  # run_server's GIL switch interval (irrelevant to this single-threaded app, kept for identical settings)
    from opencdp.cli.serving import SWITCH_INTERVAL_SECONDS
except ImportError:  # an OpenCDP from before it was set
    SWITCH_INTERVAL_SECONDS = sys.getswitchinterval()

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Event(msgspec.Struct):
    type: str | None = None
    event: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    messageId: str | None = None
    timestamp: str | None = None
    sentAt: str | None = None
    context: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


class Batch(msgspec.Struct):
    batch: list[Event]
    sentAt: str | None = None
    context: dict[str, Any] | None = None


_decode_event = msgspec.json.Decoder(Event).decode
_decode_batch = msgspec.json.Decoder(Batch).decode
_OK = b'{"success":true}'
_KEEP_BYTES = 64 * 1024 * 1024


def _valid(event: Event, type_: str | None) -> bool:
    if (event.type or type_) is None or (event.userId is None and event.anonymousId is None):
        return False
    return (event.type or type_) != "track" or bool(event.event)


class BareApp:
    def __init__(self) -> None:
        self.kept: list[bytes] = []
        self.kept_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            while scope["type"] == "lifespan":
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
            return
        path = scope["path"]
        if scope["method"] != "POST":
            await _respond(send, 200 if path == "/health" else 405, b'{"status":"ok"}')
            return
        parts = []
        more = True
        while more:
            message = await receive()
            parts.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(parts)
        try:
            if path == "/v1/batch":
                ok = all(_valid(e, None) for e in _decode_batch(body).batch)
            else:
                ok = _valid(_decode_event(body), path.rsplit("/", 1)[-1])
        except msgspec.DecodeError:
            ok = False
        if not ok:
            await _respond(send, 400, b'{"code":"invalid"}')
            return
        self.kept.append(body)
        self.kept_bytes += len(body)
        if self.kept_bytes > _KEEP_BYTES:
            self.kept, self.kept_bytes = [], 0
        await _respond(send, 200, _OK)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        (b"access-control-allow-origin", b"*"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = BareApp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    # The same settings as opencdp.cli.serving.run_server.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http="httptools",
        loop="uvloop",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
