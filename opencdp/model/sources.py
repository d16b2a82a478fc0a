"""Sources: where events come from, each with its own write key and limits."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SourceKind = Literal["web", "mobile", "server", "http", "rudderstack"]

KIB = 1024


class SourceLimits(BaseModel):
    """Per-source limits. Defaults follow Segment's HTTP API; RudderStack SDK sources need larger ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_message_bytes: int = Field(default=32 * KIB, gt=0, le=16 * 1024 * KIB)
    """Largest single call, and largest item in a batch (after decompression)."""
    max_batch_bytes: int = Field(default=500 * KIB, gt=0)
    """Largest batch request body (after decompression)."""
    max_batch_items: int = Field(default=2500, gt=0)
    """Items beyond this many in one batch are rejected (the rest of the batch is kept)."""
    max_depth: int = Field(default=32, gt=0)
    """Deepest nesting of objects/arrays allowed in a message."""
    rate_per_second: float = Field(default=1000.0, gt=0)
    """Sustained requests per second per write key (token bucket); excess gets 429 with Retry-After."""
    burst: int = Field(default=2000, gt=0)
    """Requests allowed in a burst above the sustained rate."""

    @property
    def max_request_bytes(self) -> int:
        return max(self.max_message_bytes, self.max_batch_bytes)

    @classmethod
    def for_kind(cls, kind: SourceKind) -> SourceLimits:
        if kind == "rudderstack":
            # rudder-sdk-python caps messages at 4 MiB, like rudder-server's gateway default, but closes a batch
            # only once it has reached 4 MiB: a batch carries up to 4 MiB plus one more message (and its commas).
            return cls(max_message_bytes=4096 * KIB, max_batch_bytes=8192 * KIB + 64 * KIB)
        return cls()


class Source(BaseModel):
    """A place events come from, identified on the wire by its write key."""

    model_config = ConfigDict(frozen=True)

    source_id: str
    name: str
    kind: SourceKind
    write_key: str
    enabled: bool
    limits: SourceLimits
    created_at: datetime
    updated_at: datetime
