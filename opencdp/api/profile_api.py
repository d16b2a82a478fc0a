"""The real-time profile API (``/v1/profiles``) as a lean ASGI app, served from the in-memory read model.

``GET /v1/profiles/{ref}`` answers one profile by profile id, absorbed id or identifier (``email:ada@x.org``,
URL-encoded as needed): golden traits (``?lineage=true``: with source, message or record, time and rule),
custom and computed traits, identities and the first page of its timeline (``?limit=``, up to 20 from memory;
``?before=SEQ`` pages on from the engine). ``POST /v1/profiles/lookup`` answers up to 100 refs at once.

Only the read token opens it (``Authorization: Bearer``): a write key or the admin token is refused (401), as
is a missing one. Lookups never touch the engine, so they do not wait on the processor. Like collection, this
stays hand-routed ASGI with msgspec (docs/performance.md has why).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec

from opencdp.api.collection import Receive, Scope, Send
from opencdp.profiles.inspect import MAX_TIMELINE_PAGE
from opencdp.profiles.serving import CACHED_TIMELINE, ProfileCache

PREFIX = "/v1/profiles"
LOOKUP = "/v1/profiles/lookup"
MAX_LOOKUP_REFS = 100
MAX_LOOKUP_BYTES = 64 * 1024
MAX_REF_BYTES = 1024

_encode = msgspec.json.Encoder().encode
_decode_lookup = msgspec.json.Decoder(dict[str, Any]).decode
TimelinePage = Callable[[str, int, int], list[dict[str, Any]]]


def _error(code: str, message: str) -> bytes:
    return _encode({"success": False, "code": code, "message": message})


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


class ProfileApp:
    def __init__(self, cache: ProfileCache, read_token: str, timeline_page: TimelinePage) -> None:
        self.cache = cache
        self._token = f"Bearer {read_token}".encode()
        self.timeline_page = timeline_page

    @staticmethod
    def handles(path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if not hmac.compare_digest(auth, self._token):
            await _answer(send, 401, _error("invalid_read_token", "send the read token as Authorization: Bearer"))
            return
        path, method = scope["path"], scope["method"]
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        if path == LOOKUP:
            if method != "POST":
                await _answer(send, 405, _error("method_not_allowed", "use POST"))
                return
            await self._lookup(receive, send)
            return
        if method != "GET":
            await _answer(send, 405, _error("method_not_allowed", "use GET"))
            return
        ref = unquote(path[len(PREFIX) + 1 :])
        if not ref or len(ref) > MAX_REF_BYTES:
            await _answer(send, 400, _error("bad_ref", "name a profile: /v1/profiles/{profile id or type:value}"))
            return
        try:
            limit = max(1, min(int(query.get("limit", CACHED_TIMELINE)), MAX_TIMELINE_PAGE))
            before = int(query["before"]) if "before" in query else None
        except ValueError:
            await _answer(send, 400, _error("bad_parameter", "limit and before are whole numbers"))
            return
        found = self.cache.lookup(ref)
        if found is None:
            await _answer(send, 404, _error("unknown_profile", "no profile is known by that reference"))
            return
        lineage = _flag(query.get("lineage"))
        if before is None and limit == CACHED_TIMELINE:  # the usual request: sent as it was encoded
            await _answer(send, 200, found.lineage if lineage else found.plain)
            return
        answer = found.document(lineage=lineage)
        if before is None and limit < CACHED_TIMELINE:
            rows = answer["timeline"][:limit]
        else:  # beyond the cached first page: from the engine
            since = before if before is not None else 2**62
            rows = await asyncio.to_thread(self.timeline_page, answer["profile_id"], limit, since)
        answer["timeline"] = rows
        answer["timeline_next"] = rows[-1]["seq"] if len(rows) == limit else None
        await _answer(send, 200, _encode(answer))

    async def _lookup(self, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_LOOKUP_BYTES:
                await _answer(
                    send, 413, _error("payload_too_large", f"a lookup is limited to {MAX_LOOKUP_BYTES} bytes")
                )
                return
            if not message.get("more_body"):
                break
        try:
            doc = _decode_lookup(body)
            refs = doc.get("refs")
            if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
                raise ValueError
        except (msgspec.DecodeError, ValueError):
            await _answer(send, 400, _error("bad_lookup", 'send {"refs": ["type:value" or profile id, ...]}'))
            return
        if len(refs) > MAX_LOOKUP_REFS:
            await _answer(send, 413, _error("too_many_refs", f"at most {MAX_LOOKUP_REFS} refs per lookup"))
            return
        lineage = doc.get("lineage") is True
        found = [self.cache.lookup(r) for r in refs]
        parts = [(f.lineage if lineage else f.plain) if f else b"null" for f in found]
        await _answer(send, 200, b'{"profiles":[' + b",".join(parts) + b"]}")
