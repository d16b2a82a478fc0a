"""The collection front: authenticates write keys, rate-limits, validates and durably journals messages.

This is the only writer of the raw log. It holds an in-memory map of write keys and of the sources whose PII
policy drops a class, refreshed from the engine when an admin changes a source or the policy through this
server (a change made by another process is seen after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from opencdp.collect import messages
from opencdp.collect.scrub import Scrubber
from opencdp.collect.timestamps import format_utc
from opencdp.errors import Rejected, Transient
from opencdp.model.sources import Source
from opencdp.store.journal import Journal
from opencdp.store.plans import PiiStore
from opencdp.store.raw_log import LoadResult
from opencdp.store.sources import SourceRegistry

CLIENT_SIDE_KINDS = frozenset({"web", "mobile"})
_ZERO, _ONE_MS = timedelta(0), timedelta(milliseconds=1)
_received_text: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "")
"""The start of the millisecond last formatted as a ``receivedAt`` text, and that text."""


def received_now() -> tuple[datetime, str]:
    """The time now and ``format_utc`` of it, formatted once per millisecond (many requests share one)."""
    global _received_text
    now = datetime.now(UTC)
    start, text = _received_text
    if not _ZERO <= now - start < _ONE_MS:
        text = format_utc(now)
        _received_text = (now.replace(microsecond=now.microsecond - now.microsecond % 1000), text)
    return now, text


class TokenBucket:
    """Per-write-key request rate limit."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> float:
        """0 if a request may pass, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Ingestor:
    def __init__(self, registry: SourceRegistry, journal: Journal, *, max_backlog_bytes: int = 2**31) -> None:
        self.registry = registry
        self.journal = journal
        self.max_backlog_bytes = max_backlog_bytes
        self._keys: dict[str, Source] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._scrubbers: dict[str, Scrubber] = {}
        self._policies = PiiStore(registry.engine)
        self._lock = threading.Lock()
        self.listeners: list[Callable[[list[bytes]], None]] = []
        """Called with the journal lines of each request once durable (``opencdp tail``)."""
        self.refresh()

    def refresh(self) -> None:
        """Reload write keys and PII drop policies from the engine (after a source or the policy changed)."""
        keys = {s.write_key: s for s in self.registry.list()}
        policy, _ = self._policies.get()
        declared = policy.declared()
        scrubbers: dict[str, Scrubber] = {}
        for s in keys.values():
            dropped = frozenset(c for c, a in policy.actions(s.source_id).items() if a == "drop")
            if dropped:
                scrubbers[s.source_id] = Scrubber(dropped, declared)
        with self._lock:
            self._keys = keys
            self._scrubbers = scrubbers
            self._buckets = {
                k: self._buckets.get(k) or TokenBucket(s.limits.rate_per_second, s.limits.burst)
                for k, s in keys.items()
            }

    def max_request_bytes(self) -> int:
        """The largest body any enabled source accepts (the cap while the source is not yet known)."""
        sizes = [s.limits.max_request_bytes for s in self._keys.values() if s.enabled]
        return max(sizes, default=32 * 1024)

    def source(self, write_key: str | None) -> Source:
        source = self._keys.get(write_key or "")
        if source is None or not source.enabled:
            raise Rejected("unknown or disabled write key", code="invalid_write_key", status=401)
        return source

    def scrubber(self, source: Source) -> Scrubber | None:
        """What drops PII from this source's messages before they are journalled; None when nothing is dropped."""
        return self._scrubbers.get(source.source_id)

    def throttle(self, source: Source) -> float:
        bucket = self._buckets.get(source.write_key)
        return bucket.take() if bucket else 0.0

    def request_info(self, source: Source, ip: str | None) -> messages.RequestInfo:
        now, text = received_now()
        scrubber = self._scrubbers.get(source.source_id)
        if scrubber is not None and "ip_address" in scrubber.dropped:
            ip = None  # the server does not add what the policy drops
        return messages.RequestInfo(
            source_id=source.source_id,
            received_at=now,
            received_at_text=text,
            max_message_bytes=source.limits.max_message_bytes,
            max_batch_items=source.limits.max_batch_items,
            max_depth=source.limits.max_depth,
            ip=ip if source.kind in CLIENT_SIDE_KINDS else None,
            scrubber=scrubber,
        )

    async def write(self, lines: list[bytes]) -> None:
        """Durably journal the lines of one request (raises Transient when storage fails)."""
        if not lines:
            return
        if self.journal.unloaded_bytes > self.max_backlog_bytes:
            raise Transient("the loader is too far behind; retry shortly", code="backlog_full", retry_after=2)
        await self.journal.append(b"".join(lines))
        for listener in self.listeners:
            listener(lines)

    async def reject(self, source: Source, ip: str | None, error: Rejected, body: bytes) -> None:
        """Keep a whole request that was refused (bad JSON, too large) where an operator can see it."""
        req = self.request_info(source, ip)
        item = messages.ItemError(None, error.code, error.message)
        kept = body[: source.limits.max_request_bytes]
        if req.scrubber is not None:  # the policy drops a class: keep only what it allows (unreadable: nothing)
            kept = req.scrubber.payload(kept)
        await self.write([messages.rejected_line(req, item, kept)])


MAX_LOAD_PAUSE_SECONDS = 1.0
HEAVY_LOAD_LINES = 5_000
"""A load of this many journal lines or more means heavy traffic (run_loader), if they came in fast enough."""
HEAVY_LOAD_RATE = 5_000.0
"""Journal lines per second, since the previous load started, below which even a large load is light traffic:
the backlog of a stall (the engine busy with other work), to be cleared without the pauses of heavy traffic."""
LOADER_NICE = 10


def _background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux nice is per thread), so collection comes first."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICE)


def next_pause(lines: int | None, took: float, period: float, interval: float) -> float:
    """How long the loader waits after a load of ``lines`` journal lines (None: it failed) that took ``took``
    seconds and started ``period`` seconds after the previous one (see :func:`run_loader`)."""
    heavy = lines is None or (lines >= HEAVY_LOAD_LINES and lines >= HEAVY_LOAD_RATE * period)
    return min(max(interval, 2 * took), MAX_LOAD_PAUSE_SECONDS) if heavy else interval


async def run_loader(load: Callable[[], LoadResult | None], interval: float, stop: asyncio.Event) -> None:
    """Call ``load`` (in a thread) every ``interval`` seconds until ``stop`` is set, then once more.

    Under heavy traffic (a load of at least :data:`HEAVY_LOAD_LINES` lines, which came in at
    :data:`HEAVY_LOAD_RATE` lines/s or faster) the pause grows to twice the last load's duration, up to a
    second: collection keeps at least two thirds of the core, and each load gets larger and cheaper per row.
    Under light traffic, and while a backlog that a stall left is cleared, the pause stays at ``interval``, so
    that what was just collected reaches profiles (and the profile API) quickly; the loader's thread is niced
    either way.
    """
    pause = interval
    loop = asyncio.get_running_loop()
    previous = time.monotonic()
    with ThreadPoolExecutor(1, thread_name_prefix="opencdp-loader", initializer=_background_priority) as executor:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
            started = time.monotonic()
            result = await loop.run_in_executor(executor, load)
            took = time.monotonic() - started
            pause = next_pause(None if result is None else result.lines, took, started - previous, interval)
            previous = started
