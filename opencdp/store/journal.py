"""The ingest journal: an append-only, fsync'd file log in front of the engine.

Collection acknowledges a message only once its bytes are on disk here. Writes from many concurrent
requests are gathered into one ``write`` + ``fdatasync`` (group commit), so durability costs one disk flush
per group, not per request. The loader (:mod:`opencdp.store.raw_log`) later moves journalled lines into the
engine's tables in bulk and records how far it got in the same transaction, so a crash at any point
neither loses nor doubles a message.

Layout: ``journal/<segment:012d>.jrn``, each a sequence of complete lines in the format of :data:`COLUMNS`.
Recovery truncates a torn tail (bytes after the last newline), which can only hold a group that was never
acknowledged. The loader asks the journal to :meth:`Journal.seal` the active segment, then loads whole
sealed segment files with the engine's own bulk reader.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from opencdp.errors import Transient

log = logging.getLogger("opencdp.journal")

SUFFIX = ".jrn"
HELD_DIR = "held"


@dataclass(frozen=True, order=True)
class Position:
    """A place in the journal: segment number and byte offset inside it."""

    segment: int
    offset: int


def segment_path(directory: Path, segment: int) -> Path:
    return directory / f"{segment:012d}{SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in directory.glob(f"*{SUFFIX}") if p.stem.isdigit())


def _lock_directory(directory: Path) -> int:
    """Take the journal directory for this process (``flock``; released when the process dies, even by kill -9).

    A second process would cut what it takes for a torn tail off the live segment, and load a segment that is
    still being written: it must not open the journal at all.
    """
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise Transient(f"the journal in {directory} is in use by another process", code="journal_locked") from exc
    return fd


def _cut_torn_tail(path: Path) -> None:
    data_len = path.stat().st_size
    if not data_len:
        return
    with path.open("r+b") as f:
        f.seek(data_len - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        good = f.read().rfind(b"\n") + 1
        log.warning("journal: cutting %d torn bytes off the end of %s", data_len - good, path.name)
        f.truncate(good)
        os.fsync(f.fileno())


# The line format, shared by collection (which writes it) and the engines' bulk readers (which load it).
# Tab-separated, no quoting or escaping, an empty field is NULL. Every field but ``doc`` is either produced by
# the server or checked to hold no tab, CR, LF or \x01; ``doc`` is compact JSON, which holds none of them
# raw. Kinds: ``A`` an accepted message; ``X`` an accepted message whose client-supplied header fields could
# not be written safely (a tab in a userId, say): they are left empty and read from ``doc`` instead;
# ``R`` a rejected item, with ``doc`` = {code, reason, index, payload}.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("kind", "VARCHAR"),
    ("source_id", "VARCHAR"),
    ("message_id", "VARCHAR"),
    ("type", "VARCHAR"),
    ("event", "VARCHAR"),
    ("user_id", "VARCHAR"),
    ("anonymous_id", "VARCHAR"),
    ("timestamp", "TIMESTAMPTZ"),
    ("original_timestamp", "TIMESTAMPTZ"),
    ("sent_at", "TIMESTAMPTZ"),
    ("received_at", "TIMESTAMPTZ"),
    ("doc", "VARCHAR"),
)
_UNSAFE = re.compile("[\t\n\r\x00\x01]").search


def accepted_line(
    source_id: str,
    client: tuple[str, str, str | None, str | None, str | None],
    times: tuple[str | None, str | None, str | None, str],
    doc: bytes,
) -> bytes:
    """A journal line for an accepted message.

    ``client`` is (message_id, type, event, user_id, anonymous_id) as the client sent them; ``times`` is
    (timestamp, original_timestamp, sent_at, received_at) in RFC 3339. An empty ``timestamp`` is derived when
    the line is loaded (``original_timestamp`` corrected for the device's clock skew, see
    :mod:`opencdp.store.raw_log`); an empty ``original_timestamp`` means the message carried none.
    """
    message_id, type_, event, user_id, anonymous_id = client
    fields = f"{message_id}\t{type_}\t{event or ''}\t{user_id or ''}\t{anonymous_id or ''}"
    kind = "A"
    if _UNSAFE(fields.replace("\t", " ", 4)):
        kind, fields = "X", "\t\t\t\t"
    timestamp, original, sent_at, received_at = times
    head = f"{kind}\t{source_id}\t{fields}\t{timestamp or ''}\t{original or ''}\t{sent_at or ''}\t{received_at}\t"
    return head.encode() + doc + b"\n"


def line_parts(line: bytes) -> tuple[bytes, bytes, bytes]:
    """(kind, source_id, doc) of one journal line."""
    fields = line.rstrip(b"\n").split(b"\t", len(COLUMNS) - 1)
    return fields[0], fields[1], fields[-1]


def rejected_line(source_id: str, received_at: str, doc: bytes) -> bytes:
    """A journal line for a rejected item or request (``doc`` holds code, reason and payload)."""
    return f"R\t{source_id}\t\t\t\t\t\t\t\t\t{received_at}\t".encode() + doc + b"\n"


class Journal:
    """Appends lines durably. ``append`` is awaited by request handlers; one thread does the disk I/O."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        group_max_bytes: int = 8 * 1024 * 1024,
        fsync: bool = True,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.group_max_bytes = group_max_bytes
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self._owner = _lock_directory(directory)  # one process at a time writes, recovers and loads
        self._lock = threading.Lock()  # guards the file and ``_committed`` against the loader's reads
        self._segment, self._size = self._recover()
        self._fd = self._open(self._segment)
        self._committed = Position(self._segment, self._size)
        # Until the loader reports, everything on disk counts as not loaded.
        self._unloaded_bytes = sum(segment_path(directory, s).stat().st_size for s in list_segments(directory))
        # A segment may already be loaded (whole) by a previous run: never append to it, start a new one.
        self._sealed = True
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opencdp-journal")
        self.groups = 0
        """Number of group commits done (for benchmarks and tests)."""

    # -- recovery and files ---------------------------------------------------------------------------------
    def _recover(self) -> tuple[int, int]:
        """The last segment and its size, after cutting off a torn tail (a write that was never acknowledged)."""
        segments = list_segments(self.directory)
        if not segments:
            return 1, 0
        path = segment_path(self.directory, segments[-1])
        _cut_torn_tail(path)
        return segments[-1], path.stat().st_size

    def _open(self, segment: int) -> int:
        fd = os.open(segment_path(self.directory, segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fsync_dir()
        return fd

    def _fsync_dir(self) -> None:
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- writing --------------------------------------------------------------------------------------------
    def write_sync(self, data: bytes) -> Position:
        """Write complete lines and make them durable; returns the committed end position.

        On failure nothing of ``data`` stays in the journal and :class:`Transient` is raised.
        """
        with self._lock:
            if self._size and (self._sealed or self._size + len(data) > self.segment_bytes):
                self._rotate()
            start = self._size
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                if self.fsync:
                    os.fdatasync(self._fd)
            except OSError as exc:
                self._undo(start)
                raise Transient(f"journal write failed: {exc.strerror}", code="storage_unavailable") from exc
            self._size = start + len(data)
            self._unloaded_bytes += len(data)
            self._sealed = False  # an empty sealed segment was written to: it is the live one now
            self._committed = Position(self._segment, self._size)
            self.groups += 1
            return self._committed

    def _undo(self, start: int) -> None:
        try:
            os.ftruncate(self._fd, start)
        except OSError:
            log.exception("journal: could not roll back a failed write; reopening a new segment")
            try:
                self._rotate()
            except OSError:  # the caller still answers Transient with the original error
                log.exception("journal: could not finish the old segment or open a new one")

    def _rotate(self) -> None:
        # Never keep a closed descriptor in ``_fd``: the OS hands its number to the next file or socket opened,
        # and a later write would land there. If opening fails, ``_fd`` stays -1: the next write fails with
        # EBADF, and its rollback rotates again.
        fd, self._fd = self._fd, -1
        self._sealed = False
        self._segment += 1
        self._size = 0
        try:
            if fd >= 0:
                os.fsync(fd)
        finally:
            if fd >= 0:
                os.close(fd)
            self._fd = self._open(self._segment)

    async def append(self, data: bytes) -> None:
        """Durably append ``data`` (complete lines). Returns once it is on disk; raises :class:`Transient`."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._waiters.append(fut)
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                # Take everything queued so far (up to the group cap): one write and one fsync for all of it.
                if self._pending_bytes <= self.group_max_bytes:  # all of it fits (the usual case): no counting
                    chunks, self._pending = self._pending, []
                    waiters, self._waiters = self._waiters, []
                    self._pending_bytes = 0
                else:
                    take, size = 0, 0
                    while take < len(self._pending) and (
                        take == 0 or size + len(self._pending[take]) <= self.group_max_bytes
                    ):
                        size += len(self._pending[take])
                        take += 1
                    chunks, self._pending = self._pending[:take], self._pending[take:]
                    waiters, self._waiters = self._waiters[:take], self._waiters[take:]
                    self._pending_bytes -= size
                try:
                    await loop.run_in_executor(self._executor, self.write_sync, b"".join(chunks))
                except Exception as exc:
                    error = exc if isinstance(exc, Transient) else Transient(f"journal write failed: {exc}")
                    for w in waiters:
                        if not w.done():
                            w.set_exception(error)
                else:
                    for w in waiters:
                        if not w.done():
                            w.set_result(None)
        finally:
            self._flushing = False

    # -- reading (the loader) -------------------------------------------------------------------------------
    @property
    def committed(self) -> Position:
        with self._lock:
            return self._committed

    def seal(self) -> Position:
        """Close the active segment to writes (the next write starts a new one) and return its end.

        Every segment up to the returned position is then immutable, so the loader can hand whole files to
        the engine's own bulk reader.
        """
        with self._lock:
            if self._size:  # an empty active segment stays open: it is not offered for loading either
                self._sealed = True
            return self._committed

    def segments_to_load(self, loaded: Position, until: Position) -> list[tuple[int, Path]]:
        """Sealed segments after ``loaded`` up to ``until`` (from :meth:`seal`), oldest first, with their paths.

        A segment's torn tail (a failed write whose rollback failed too; never acknowledged) is cut off first.
        """
        out = []
        last = until.segment if until.offset else until.segment - 1
        for segment in list_segments(self.directory):
            if loaded.segment < segment <= last:
                path = segment_path(self.directory, segment)
                _cut_torn_tail(path)
                out.append((segment, path))
        return out

    def hold(self, segment: int) -> Path:
        """Move a sealed segment the engine could not read into ``held/`` (kept for an operator, never deleted)."""
        held = self.directory / HELD_DIR
        held.mkdir(exist_ok=True)
        target = held / segment_path(self.directory, segment).name
        segment_path(self.directory, segment).replace(target)
        self._fsync_dir()
        return target

    def held(self) -> list[str]:
        """Names of the segments set aside by :meth:`hold`."""
        held = self.directory / HELD_DIR
        return sorted(p.name for p in held.glob(f"*{SUFFIX}")) if held.exists() else []

    @property
    def unloaded_bytes(self) -> int:
        """Bytes journalled but not yet reported loaded (:meth:`mark_loaded`): the loader's backlog."""
        return self._unloaded_bytes

    def mark_loaded(self, loaded: Position, keep: int) -> None:
        """Record that everything through ``loaded`` is in the engine, and delete the segments wholly before it,
        keeping the newest ``keep`` of those for inspection."""
        with self._lock:
            sizes = {
                s: self._size if s == self._segment else segment_path(self.directory, s).stat().st_size
                for s in list_segments(self.directory)
                if s > loaded.segment
            }
            self._unloaded_bytes = sum(sizes.values())
        done = [s for s in list_segments(self.directory) if s < loaded.segment]
        for segment in done[: max(0, len(done) - keep)]:
            segment_path(self.directory, segment).unlink(missing_ok=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            try:
                if self._fd >= 0:  # a failed rotation may have left no segment open
                    os.fsync(self._fd)
                    os.close(self._fd)
            finally:
                os.close(self._owner)  # releases the directory lock
