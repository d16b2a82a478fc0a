"""Request bodies: size caps before and during gzip decompression (a gzip bomb stops at cap + 1 byte)."""

from __future__ import annotations

import zlib

from opencdp.errors import Rejected

MAX_GZIP_RATIO = 1000
"""A compressed body may expand at most this many times (besides the absolute cap)."""


def too_large(limit: int) -> Rejected:
    return Rejected(f"request body exceeds {limit} bytes", code="payload_too_large")


class BodyReader:
    """Accumulates the chunks of one request body, decompressing gzip on the fly, never past ``limit``."""

    def __init__(self, limit: int, encoding: str) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._compressed = 0
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._inflater = None
        elif encoding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflater = zlib.decompressobj()
        else:
            raise Rejected(f"unsupported Content-Encoding {encoding!r}", code="unsupported_encoding")

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._inflater is None:
            self._add(chunk)
            return
        self._compressed += len(chunk)
        if self._compressed > self.limit:
            raise too_large(self.limit)
        try:
            out = self._inflater.decompress(chunk, self.limit + 1 - self._size)
        except zlib.error as exc:
            raise Rejected("the gzip body is corrupt", code="invalid_gzip") from exc
        self._add(out)
        if self._inflater.unconsumed_tail:
            raise too_large(self.limit)

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.limit:
            raise too_large(self.limit)
        if self._inflater is not None and self._size > MAX_GZIP_RATIO * max(self._compressed, 1):
            raise too_large(self.limit)
        self._parts.append(data)

    def finish(self) -> bytes:
        if self._inflater is not None:
            try:
                self._add(self._inflater.flush())
            except zlib.error as exc:
                raise Rejected("the gzip body is corrupt", code="invalid_gzip") from exc
            if not self._inflater.eof:
                raise Rejected("the gzip body is truncated", code="invalid_gzip")
        return b"".join(self._parts)
