"""Identity benchmark: deterministic stitching of generated multi-device traffic, full and incremental.

Prints, in the same run and on the same data:

* OpenCDP's identity stage over the whole governed stream (identifiers extracted, nodes, edges, clusters,
  guard, limits, profile ids), in events/s and seconds;
* an incremental micro-batch of 1,000 new events on top (target < 250 ms);
* baseline: networkx's connected components over the same identifier pairs, in one Python process (what a
  plain, unconstrained in-memory union would cost, without extraction, limits or storage);
* the peak resident memory of the process.

    .venv/bin/python benchmarks/identity_bench.py [--events 200000] [--people 20000] [--tmpdir /var/tmp]

Traffic: each person has a user id, an email and one to three browsers (anonymous ids); half the events are
anonymous page views, the rest identified; a few family computers are shared by two people.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

from opencdp.api.runtime import Runtime  # noqa: E402
from opencdp.config import Settings  # noqa: E402
from opencdp.store.journal import accepted_line  # noqa: E402

TIMES = (None, None, None, "2026-01-01T00:00:00.000Z")


def traffic(rng: random.Random, events: int, people: int, start: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + events):
        p = rng.randrange(people)
        browser = f"anon-{p}-{rng.randrange(1 + p % 3)}" if p % 50 else f"family-{p // 100}"
        m: dict[str, Any] = {"type": "track", "event": "Page Viewed", "messageId": f"m{i}", "anonymousId": browser}
        if rng.random() < 0.5:
            m = {"type": "identify", "messageId": f"m{i}", "anonymousId": browser, "userId": f"user-{p}",
                 "traits": {"email": f"person{p}@example.org"}}  # fmt: skip
        out.append(m)
    return out


def lines(source_id: str, messages: list[dict[str, Any]]) -> bytes:
    return b"".join(
        accepted_line(
            source_id,
            (m["messageId"], m["type"], m.get("event"), m.get("userId"), m.get("anonymousId")),
            TIMES,
            json.dumps(m).encode(),
        )
        for m in messages
    )


def networkx_baseline(messages: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    g: nx.Graph[str] = nx.Graph()
    for m in messages:
        ids = [f"a:{m['anonymousId']}"] + ([f"u:{m['userId']}", f"e:{m['traits']['email']}"] if "userId" in m else [])
        g.add_nodes_from(ids)
        g.add_edges_from((ids[0], x) for x in ids[1:])
    sum(1 for _ in nx.connected_components(g))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--tmpdir", default="/var/tmp")
    args = parser.parse_args()
    rng = random.Random(7)
    messages = traffic(rng, args.events, args.people)
    more = traffic(rng, 1_000, args.people, start=args.events)
    work = Path(tempfile.mkdtemp(prefix="opencdp-identity-bench-", dir=args.tmpdir))
    try:
        rt = Runtime(Settings(data_dir=work / "data"))
        source = rt.registry.create("web", "web", None).source_id
        rt.journal.write_sync(lines(source, messages))
        rt.raw_log.load_all(rt.journal)
        rt.governance.run()
        t0 = time.perf_counter()
        full = rt.identity.run()
        t_full = time.perf_counter() - t0
        rt.journal.write_sync(lines(source, more))
        rt.raw_log.load_all(rt.journal)
        rt.governance.run()
        t0 = time.perf_counter()
        rt.identity.run()
        t_incremental = time.perf_counter() - t0
        health = rt.identity_health()
        rt.close()
        t_nx = networkx_baseline(messages)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"OpenCDP identity benchmark: {args.events:,} events from {args.people:,} people (DuckDB, one process)")
        print(f"  full resolution                {args.events / t_full:12,.0f} events/s  ({t_full:.1f} s)")
        print(f"  incremental 1,000 events       {t_incremental * 1000:12,.0f} ms        (target < 250 ms)")
        print(f"  baseline: networkx components  {args.events / t_nx:12,.0f} events/s  ({t_nx:.1f} s; in memory, "
              "no extraction, limits or storage)")  # fmt: skip
        print(f"  ratio OpenCDP / baseline       {t_nx / t_full:12.2f}")
        print(f"  result: {health['profiles']:,} profiles, {health['identifiers']:,} identifiers, "
              f"{health['refused_edges']:,} merges refused, {health['shared_identifiers']:,} shared identifiers; "
              f"{full.created:,} profiles created and {full.merged:,} merged in the full run")  # fmt: skip
        print(f"  peak memory (this process)     {peak_mb:12,.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
