"""Delivery lag of healthy destinations with every destination up, and with one of them down.

Conditions (printed): an in-process OpenCDP runtime over a DuckDB file, real profiles, the deliverer running
as in ``opencdp serve``; ``BENCH_HEALTHY`` webhook destinations (real HTTP servers on loopback answering 200)
and one more destination that is up in the baseline phase and, in the second phase, ``down`` (nothing
listens: connection refused) or ``hang`` (accepts and never answers, so every attempt waits out its
timeout). Both phases route the same stream of audience entries and exits (``BENCH_RATE`` changes a second
for ``BENCH_SECONDS``, routed every 0.2 s like the processor's load cycle). Lag: from the change's time to the
moment the receiver has the request. Figures: p50/p95/max per phase, and the ratio of the healthy
destinations' p95 with one down to the baseline measured in the same run (target: within 10%).

Run: ``flock /tmp/opencdp-bench.lock .venv/bin/python benchmarks/destinations_bench.py``
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opencdp.api.runtime import Runtime
from tests.activation.peers import Received, Receiver
from tests.activation.support import people
from tests.conftest import make_settings

RATE = float(os.environ.get("BENCH_RATE", "100"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "12"))
HEALTHY = int(os.environ.get("BENCH_HEALTHY", "3"))
PROFILES = int(os.environ.get("BENCH_PROFILES", "1000"))
FAILURE = os.environ.get("BENCH_FAILURE", "hang")  # or "down"
CYCLE = 0.2


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Lags:
    """A receiver script that notes each request's lag (receive time minus the change's time)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def __call__(self, req: Received, n: int) -> tuple[int, dict[str, str], bytes]:
        doc = json.loads(req.body)
        if doc.get("type") == "audience":
            self.values.append(time.time() - datetime.fromisoformat(doc["happened_at"]).timestamp())
        return 200, {}, b"{}"


def webhook(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "webhook", "url": url, "secret": "bench-secret-0123456789", "allow_private": True,
            "audiences": ["bench"], "timeout_seconds": 2, "max_attempts": 3, **extra}  # fmt: skip


def phase(label: str, failing: str | None) -> dict[str, list[float]]:
    """Run one phase; ``failing``: None (all up), "down" or "hang" for the extra destination."""
    tmp = Path(tempfile.mkdtemp(prefix="opencdp-dest-bench-"))
    rt = Runtime(make_settings(tmp, "duckdb"))
    ids = people(rt, PROFILES)
    lags = {f"healthy{i}": Lags() for i in range(HEALTHY)}
    receivers = [Receiver(lags[name]) for name in lags]
    extra_lags = Lags()
    hang = threading.Event()
    if failing == "hang":
        hang.set()
    extra = Receiver(extra_lags, hang=hang if failing == "hang" else None)
    for r in [*receivers, extra]:
        r.__enter__()
    extra_url = extra.url
    if failing == "down":
        extra.__exit__()  # nothing listens there any more: connection refused
    for name, r in zip(lags, receivers, strict=True):
        rt.activation.add(webhook(name, r.url))
    rt.activation.add(webhook("extra", extra_url))
    rt.activation.route()  # the first sync (no members yet) sets every destination's offset
    rt.activation.deliverer.start()
    inside: set[str] = set()
    stop = threading.Event()
    sent = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < SECONDS:
            tick = time.monotonic()
            now = datetime.now(UTC)
            row = rt.engine.fetch_one("SELECT coalesce(max(change_seq), 0) FROM audience_changes")
            seq = int(row[0]) if row else 0
            rows = []
            for _ in range(int(RATE * CYCLE)):
                pid = ids[sent % len(ids)]
                what = "exited" if pid in inside else "entered"
                inside.symmetric_difference_update({pid})
                seq += 1
                sent += 1
                rows.append((seq, "bench", pid, what, "bench", now))
            with rt.engine.transaction():
                for r in rows:
                    rt.engine.execute("INSERT INTO audience_changes VALUES (?, ?, ?, ?, ?, ?)", r)
            rt.activation.route()
            stop.wait(max(0.0, CYCLE - (time.monotonic() - tick)))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(len(x.values) for x in lags.values()) < sent:
            time.sleep(0.05)
    finally:
        hang.clear()
        rt.activation.deliverer.stop()
        for r in receivers:
            r.__exit__()
        if failing != "down":
            extra.__exit__()
        status = {s["destination"]: s for s in rt.activation.status()}
        rt.close()
    out = {name: x.values for name, x in lags.items()}
    every = [v for vals in out.values() for v in vals]
    print(f"{label:<28} changes routed {sent:>5}; healthy deliveries {len(every):>5} "
          f"p50 {percentile(every, 0.5) * 1000:7.1f} ms  p95 {percentile(every, 0.95) * 1000:7.1f} ms  "
          f"max {max(every) * 1000:7.1f} ms; extra destination: done {status['extra']['done']}, "
          f"pending {status['extra']['pending']}, dead {status['extra']['dead']}")  # fmt: skip
    return out


def main() -> None:
    print(f"destinations benchmark: {HEALTHY} healthy webhooks + 1 extra, {RATE:.0f} audience changes/s for "
          f"{SECONDS:.0f} s, routed every {CYCLE} s, {PROFILES} profiles, DuckDB, {os.cpu_count()} cores, "
          f"extra destination failing as '{FAILURE}' in phase 2 (timeout 2 s, max 3 attempts)")  # fmt: skip
    base = phase("phase 1: all up", None)
    down = phase(f"phase 2: one {FAILURE}", FAILURE)
    p95_base = percentile([v for vals in base.values() for v in vals], 0.95)
    p95_down = percentile([v for vals in down.values() for v in vals], 0.95)
    print(f"healthy p95 lag: {p95_base * 1000:.1f} ms all up, {p95_down * 1000:.1f} ms with one {FAILURE}: "
          f"ratio {p95_down / p95_base:.2f} (target <= 1.10)")  # fmt: skip
    for name in base:
        before, after = percentile(base[name], 0.95) * 1000, percentile(down[name], 0.95) * 1000
        print(f"  {name}: p95 {before:.1f} -> {after:.1f} ms")


if __name__ == "__main__":
    main()
