"""Real peers on loopback for activation tests: an HTTP receiver whose answers a test scripts, and an SMTP
mailbox (an aiosmtpd handler)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], bytes]
Script = Callable[[Received, int], Answer]


def ok(_: Received, __: int) -> Answer:
    return 200, {}, b'{"ok":true}'


@dataclass
class Receiver:
    """A threaded HTTP server on 127.0.0.1; ``script(request, n)`` answers the n-th request (0-based)."""

    script: Script = ok
    received: list[Received] = field(default_factory=list)
    hang: threading.Event | None = None
    """While set, every request waits (until released or the server stops): a peer that hangs."""

    def __post_init__(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # the answer's head and body are two writes

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                req = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with lock:
                    n = len(receiver.received)
                    receiver.received.append(req)
                if receiver.hang is not None:
                    while receiver.hang.is_set() and not receiver.stopping.is_set():
                        time.sleep(0.02)
                status, headers, answer = receiver.script(req, n)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer)))
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def keys(self) -> list[str]:
        return [r.headers.get("idempotency-key", "") for r in self.received]


class Mailbox:
    """An aiosmtpd handler: keeps what it accepts; ``refuse`` answers RCPT with that reply instead."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.messages: list[Message] = []
        self.rcpt_attempts = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:  # fmt: skip
        self.rcpt_attempts += 1
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted"
