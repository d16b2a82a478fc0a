"""The Segment-compatible collection API as a lean ASGI app (the hot path).

Measured on this machine, FastAPI with a pydantic model answers ~4k requests/s where a bare ASGI route
answers ~31k/s, so the collection routes stay a hand-routed ASGI callable with msgspec; the admin API
(:mod:`opencdp.api.admin`) is FastAPI. Wire contract: ``shared/spec/segment-http-api.md``.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import msgspec

from opencdp.collect import messages
from opencdp.collect.body import BodyReader, too_large
from opencdp.collect.ingest import Ingestor
from opencdp.errors import Rejected, Transient
from opencdp.model.sources import Source

log = logging.getLogger("opencdp.collect")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

SHORT_TYPES = {"i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group", "a": "alias"}
SINGLE_ROUTES = {f"/v1/{t}": t for t in messages.TYPES} | {f"/v1/{k}": t for k, t in SHORT_TYPES.items()}
BATCH_ROUTES = frozenset({"/v1/batch", "/v1/import", "/v1/b", "/beacon/v1/batch"})
METRICS_ROUTES = frozenset({"/v1/m"})
COLLECTION_PATHS = frozenset(SINGLE_ROUTES) | BATCH_ROUTES | METRICS_ROUTES
ACCEPTED_CONTENT_TYPES = (b"application/json", b"text/plain", b"")

_encode = msgspec.json.Encoder().encode
_OK = _encode({"success": True})
_OK_HEADERS = (
    (b"content-length", str(len(_OK)).encode()),
    (b"content-type", b"application/json"),
    (b"access-control-allow-origin", b"*"),
)
"""What ``_respond`` sends with ``_OK`` to a request without an Origin (the usual answer, prepared once)."""


def normalise_path(path: str) -> str:
    """Tolerate doubled and trailing slashes (``//v1/batch/``)."""
    while "//" in path:
        path = path.replace("//", "/")
    return path.rstrip("/") or "/"


def settings_path_key(path: str) -> str | None:
    """The write key in ``/v1/projects/{key}/settings`` (and Jitsu-style variants), else None."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[-1] == "settings" and parts[-3] == "projects":
        return parts[-2]
    return None


def basic_write_key(header: bytes | None) -> str | None:
    """The username of an ``Authorization: Basic`` header (password ignored; the colon optional)."""
    if not header:
        return None
    if header in _basic_keys:
        return _basic_keys[header]
    if header[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Rejected("malformed Basic authorization header", code="invalid_write_key", status=401) from exc
    key = decoded.split(":", 1)[0] or None
    if len(header) <= _BASIC_HEADER_CACHED_BYTES:
        if len(_basic_keys) >= _BASIC_KEYS_CACHED:
            _basic_keys.clear()
        _basic_keys[header] = key
    return key


# Clients send the same few Authorization headers over and over: decoding one costs ~1 us a request.
_basic_keys: dict[bytes, str | None] = {}
_BASIC_KEYS_CACHED = 1024
_BASIC_HEADER_CACHED_BYTES = 512


def settings_document(write_key: str, api_host: str, protocol: str) -> dict[str, Any]:
    """What analytics.js fetches before it sends anything; lists only ``Segment.io`` so no CDN code loads."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "metrics": {"sampleRate": 0},
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "remotePlugins": [],
        "legacyVideoPluginsEnabled": False,
        "analyticsNextEnabled": True,
        "edgeFunction": {},
    }


class CollectionApp:
    """ASGI app for ``/v1/*`` collection routes, the settings document and ``/health``."""

    def __init__(self, ingestor: Ingestor, *, trusted_proxies: frozenset[str] = frozenset()) -> None:
        self.ingestor = ingestor
        self.trusted_proxies = trusted_proxies

    @staticmethod
    def handles(path: str) -> bool:
        path = normalise_path(path)
        return path in COLLECTION_PATHS or path == "/health" or settings_path_key(path) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = normalise_path(scope["path"])
        method = scope["method"]
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if method == "OPTIONS":
            await _respond(send, 204, b"", origin, preflight=True)
            return
        if path == "/health":
            await _respond(send, 200, _encode({"status": "ok"}), origin)
            return
        settings_key = settings_path_key(path) if path not in COLLECTION_PATHS else None
        if settings_key is not None:
            await self._settings(scope, send, settings_key, headers, origin)
            return
        if method != "POST":
            await _respond(send, 405, _error("method_not_allowed", "use POST"), origin)
            return
        if path in METRICS_ROUTES:
            await _drain(receive)
            await _respond(send, 200, _OK, origin)
            return
        try:
            status, body = await self._collect(scope, receive, path, headers)
        except Rejected as exc:
            await _respond(send, exc.status, _error(exc.code, exc.message), origin)
            return
        except Transient as exc:
            log.warning("collection unavailable: %s", exc.code)
            await _respond(send, 503, _error(exc.code, exc.message), origin, retry_after=exc.retry_after)
            return
        await _respond(send, status, body, origin, retry_after=_retry_after(body) if status == 429 else None)

    async def _collect(
        self, scope: Scope, receive: Receive, path: str, headers: dict[bytes, bytes]
    ) -> tuple[int, bytes]:
        header_key = basic_write_key(headers.get(b"authorization"))
        query_key = _query_key(scope.get("query_string", b""))
        source = self.ingestor.source(header_key or query_key) if (header_key or query_key) else None
        limit = source.limits.max_request_bytes if source else self.ingestor.max_request_bytes()
        content_type = headers.get(b"content-type", b"")
        if content_type != b"application/json":
            content_type = content_type.split(b";", 1)[0].strip().lower()
            if content_type not in ACCEPTED_CONTENT_TYPES:
                raise Rejected("send application/json or text/plain", code="unsupported_content_type")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large(limit)
        ip = self._client_ip(scope, headers)
        raw = b""
        try:
            encoding = headers.get(b"content-encoding")
            if encoding is None:
                raw = await _read_plain_body(receive, limit)
            else:
                raw = await _read_body(receive, BodyReader(limit, encoding.decode("latin-1")))
            body = messages.read_body(raw, batch=path not in SINGLE_ROUTES)
        except Rejected as exc:
            if source is not None and exc.code != "payload_too_large":
                await self.ingestor.reject(source, ip, exc, raw)
            raise
        body_key = body.write_key
        if header_key and body_key and header_key != body_key:
            raise Rejected(
                "the Authorization header and the body name different write keys",
                code="conflicting_write_keys",
                status=401,
            )
        if source is None:
            source = self.ingestor.source(body_key)
        wait = self.ingestor.throttle(source)
        if wait:
            return 429, _error("rate_limited", f"retry in {wait:.2f}s", retry_after=wait)
        return await self._store(source, path, body, ip)

    async def _store(self, source: Source, path: str, body: messages.Body, ip: str | None) -> tuple[int, bytes]:
        req = self.ingestor.request_info(source, ip)
        single = SINGLE_ROUTES.get(path)
        if single is not None:
            if len(body.raw) > source.limits.max_message_bytes:
                error = Rejected(
                    f"a single call is limited to {source.limits.max_message_bytes} bytes", code="payload_too_large"
                )
                await self.ingestor.reject(source, ip, error, body.raw)
                raise error
            outcome = messages.collect_single(body, single, req)
        else:
            if len(body.raw) > source.limits.max_batch_bytes:
                raise too_large(source.limits.max_batch_bytes)
            try:
                outcome = messages.collect_batch(body, req)
            except Rejected as exc:
                await self.ingestor.reject(source, ip, exc, body.raw)
                raise
        await self.ingestor.write(outcome.lines)
        if single is not None and outcome.errors:
            err = outcome.errors[0]
            return 400, _error(err.code, err.message)
        if outcome.errors:
            return 200, _encode(
                {"success": True, "accepted": outcome.accepted, "errors": [e.as_json() for e in outcome.errors]}
            )
        return 200, _OK

    async def _settings(
        self, scope: Scope, send: Send, key: str, headers: dict[bytes, bytes], origin: bytes | None
    ) -> None:
        try:
            self.ingestor.source(key)
        except Rejected:
            await _respond(send, 404, _error("invalid_write_key", "unknown or disabled write key"), origin)
            return
        host = headers.get(b"host", b"localhost").decode("latin-1")
        protocol = scope.get("scheme", "http")
        doc = settings_document(key, f"{host}/v1", protocol)
        await _respond(send, 200, _encode(doc), origin, cache_seconds=300)

    def _client_ip(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        client = scope.get("client")
        peer = client[0] if client else None
        forwarded = headers.get(b"x-forwarded-for")
        if forwarded and peer in self.trusted_proxies:
            return forwarded.split(b",")[0].strip().decode("latin-1")
        return peer


def _query_key(query_string: bytes) -> str | None:
    if b"writeKey" not in query_string:
        return None
    values = parse_qs(query_string.decode("latin-1")).get("writeKey")
    return values[0] if values else None


async def _read_body(receive: Receive, reader: BodyReader) -> bytes:
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Rejected("the client went away", code="client_disconnected")
        reader.feed(message.get("body", b""))
        more = message.get("more_body", False)
    return reader.finish()


async def _read_plain_body(receive: Receive, limit: int) -> bytes:
    """``_read_body`` of a body without Content-Encoding, without a BodyReader when it comes in one message."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise Rejected("the client went away", code="client_disconnected")
    if message.get("more_body", False):
        reader = BodyReader(limit, "")
        reader.feed(message.get("body", b""))
        return await _read_body(receive, reader)
    body = message.get("body", b"")
    if len(body) > limit:
        raise too_large(limit)
    return body if type(body) is bytes else bytes(body)


async def _drain(receive: Receive) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False) and message["type"] != "http.disconnect"


def _error(code: str, message: str, *, retry_after: float | None = None) -> bytes:
    doc: dict[str, Any] = {"code": code, "message": message}
    if retry_after is not None:
        doc["retryAfter"] = max(1, int(retry_after + 0.999))
    return _encode(doc)


def _retry_after(body: bytes) -> int:
    value = msgspec.json.decode(body).get("retryAfter", 1)
    return int(value)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    origin: bytes | None,
    *,
    preflight: bool = False,
    retry_after: int | None = None,
    cache_seconds: int | None = None,
) -> None:
    if body is _OK and not origin and not preflight and retry_after is None and cache_seconds is None:
        await send({"type": "http.response.start", "status": status, "headers": list(_OK_HEADERS)})
        await send({"type": "http.response.body", "body": body})
        return
    headers: list[tuple[bytes, bytes]] = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    if origin:
        headers += [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]
    else:
        headers.append((b"access-control-allow-origin", b"*"))
    if preflight:
        headers += [
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (
                b"access-control-allow-headers",
                b"Authorization, Content-Type, Content-Encoding, X-Retry-Count, AnonymousId",
            ),
            (b"access-control-max-age", b"900"),
        ]
    if retry_after is not None:
        headers += [(b"retry-after", str(retry_after).encode()), (b"x-ratelimit-reset", str(retry_after).encode())]
    if cache_seconds is not None:
        headers.append((b"cache-control", f"public, max-age={cache_seconds}".encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
