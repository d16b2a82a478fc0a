"""Event-loop CPU per request of the collection hot path, OpenCDP vs the bare app's handler, in one run.

No HTTP server and no loader: both ASGI apps are called directly with a fake ``receive``/``send``, from
``BENCH_CONCURRENCY`` tasks at once on one (uv)loop, so what is measured is each app's own Python work per
request (OpenCDP's includes the journal's group commit hand-off; the journal's writer thread is not counted:
the figure is the CPU time of the event loop's thread). The HTTP stack (httptools, uvicorn) costs the same
for both apps and is not included, so the ratio here is not the ratio of ``benchmarks/bench.py``.

    .venv/bin/python benchmarks/hotpath_bench.py

Environment (all optional): ``BENCH_REQUESTS`` (single calls per round, default 20000), ``BENCH_BATCHES``
(batches per round, default 400), ``BENCH_BATCH_SIZE`` (100), ``BENCH_ROUNDS`` (5; the best round of each
is kept, rounds alternate the apps), ``BENCH_FSYNC`` (1), ``BENCH_TMPDIR`` (/var/tmp), ``BENCH_SOURCE_KIND``
(server).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import sys
import tempfile
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # after PYTHONPATH: another checkout of opencdp can be measured

from benchmarks.bare_app import BareApp  # noqa: E402
from benchmarks.payloads import PLACEHOLDER, batch_body, single_body  # noqa: E402
from opencdp.api.collection import CollectionApp  # noqa: E402
from opencdp.collect.ingest import Ingestor  # noqa: E402
from opencdp.model.sources import Source, SourceLimits  # noqa: E402
from opencdp.store.journal import Journal  # noqa: E402

REQUESTS = int(os.environ.get("BENCH_REQUESTS", 20_000))
BATCHES = int(os.environ.get("BENCH_BATCHES", 400))
BATCH_SIZE = int(os.environ.get("BENCH_BATCH_SIZE", 100))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 5))
FSYNC = os.environ.get("BENCH_FSYNC", "1") == "1"
TMPDIR = os.environ.get("BENCH_TMPDIR", "/var/tmp")
KIND = os.environ.get("BENCH_SOURCE_KIND", "server")
CONCURRENCY = {"single": 64, "batch": 16}
WRITE_KEY = "wk_hotpath_bench"


class _Registry:
    def __init__(self, source: Source) -> None:
        self.source = source

    def list(self) -> list[Source]:
        return [self.source]


def _source() -> Source:
    limits = SourceLimits.for_kind(KIND).model_copy(update={"rate_per_second": 1e9, "burst": 10**9})  # type: ignore[arg-type]
    now = datetime.now(UTC)
    return Source(
        source_id="src_bench",
        name="bench",
        kind=KIND,  # type: ignore[arg-type]
        write_key=WRITE_KEY,
        enabled=True,
        limits=limits,
        created_at=now,
        updated_at=now,
    )


def _bodies(shape: str, count: int) -> list[bytes]:
    template = single_body() if shape == "single" else batch_body(BATCH_SIZE)
    head, *rest = template.split(PLACEHOLDER.encode())
    out = []
    for n in range(count):
        parts = [head]
        for i, part in enumerate(rest):
            parts += [f"hotpath-{os.getpid()}-{n:08d}-{i:04d}-abcdefghijkl".encode(), part]
        out.append(b"".join(parts))
    return out


async def _drive(app: Any, path: str, bodies: list[bytes], total: int, concurrency: int) -> tuple[float, float]:
    """Send ``total`` requests from ``concurrency`` tasks; the event loop thread's CPU seconds and wall seconds."""
    auth = b"Basic " + base64.b64encode(WRITE_KEY.encode() + b":")
    statuses: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    counter = iter(range(total))

    async def worker() -> None:
        for n in counter:
            body = bodies[n % len(bodies)]
            sent = False

            async def receive(body: bytes = body) -> MutableMapping[str, Any]:
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            headers = [
                (b"host", b"127.0.0.1:8080"),
                (b"authorization", auth),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            scope = {
                "type": "http",
                "method": "POST",
                "path": path,
                "query_string": b"",
                "headers": headers,
                "client": ("127.0.0.1", 50000),
                "scheme": "http",
            }
            await app(scope, receive, send)

    cpu, wall = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    bad = [s for s in statuses if s != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests answered {sorted(set(bad))}")
    return cpu, wall


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="opencdp-hotpath-", dir=TMPDIR))
    journal = Journal(work / "journal", fsync=FSYNC)
    try:
        opencdp = CollectionApp(Ingestor(_Registry(_source()), journal))  # type: ignore[arg-type]
        bare = BareApp()
        shapes = {
            "single": ("/v1/track", _bodies("single", min(REQUESTS, 5000)), REQUESTS, 1),
            "batch": ("/v1/batch", _bodies("batch", 50), BATCHES, BATCH_SIZE),
        }
        print(f"python {sys.version.split()[0]}, loop {type(asyncio.get_running_loop()).__module__}, fsync {FSYNC}")
        print("us of event-loop CPU per request (per event for batches); best of", ROUNDS, "rounds")
        for shape, (path, bodies, total, events) in shapes.items():
            best: dict[str, float] = {}
            for r in range(ROUNDS):
                order = [("opencdp", opencdp), ("bare", bare)]
                for name, app in order if r % 2 == 0 else order[::-1]:
                    cpu, _ = await _drive(app, path, bodies, total, CONCURRENCY[shape])
                    us = cpu / total * 1e6
                    best[name] = min(best.get(name, us), us)
            o, b = best["opencdp"], best["bare"]
            print(
                f"{shape:6}  opencdp {o:7.1f} us/req ({o / events:6.2f} us/event)   "
                f"bare {b:7.1f} us/req ({b / events:6.2f} us/event)   bare/opencdp {b / o:.2f}"
            )
        print(f"journal group commits: {journal.groups}")
    finally:
        journal.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
