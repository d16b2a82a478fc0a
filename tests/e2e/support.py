"""Helpers for the durability tests: restarting a killed server, reading the store and the journal off disk."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from opencdp.model.sources import SourceLimits
from tests.helpers import Admin, ServerProcess

# High enough that no crash test is rate-limited (429): these tests are about durability, not limits.
UNLIMITED = SourceLimits(rate_per_second=100_000, burst=100_000)


def restart(server: ServerProcess) -> None:
    """Start ``server`` again on the same port and data directory (after ``kill9`` or ``stop``)."""
    server.admin.close()
    server.admin = Admin(server.url)
    server.start()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def stored_ids(admin: Admin, source_id: str) -> Counter[str]:
    """How many rows of the ``events`` view each messageId of one source has."""
    rows = admin.query(
        f"SELECT message_id, count(*) AS n FROM events WHERE source_id = '{source_id}' GROUP BY message_id"
    )
    return Counter({r["message_id"]: int(r["n"]) for r in rows})


def store_counts(admin: Admin) -> tuple[int, int]:
    """(rows, distinct (source_id, message_id)) of the whole ``events`` view: equal when nothing is doubled."""
    [row] = admin.query("SELECT count(*) AS n, count(DISTINCT (source_id, message_id)) AS d FROM events")
    return int(row["n"]), int(row["d"])


def journal_ids(data_dir: Path) -> Counter[str]:
    """messageIds of the complete accepted (``A``/``X``) lines in the journal files on disk (a torn tail is ignored)."""
    ids: Counter[str] = Counter()
    for path in sorted((data_dir / "journal").glob("*.jrn")):
        data = path.read_bytes()
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            fields = line.split(b"\t", 11)
            kind, doc = fields[0], fields[11]
            if kind in (b"A", b"X"):
                ids[json.loads(doc)["messageId"]] += 1
    return ids
