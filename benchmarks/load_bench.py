"""Journal -> engine load benchmark: ``RawLog.load_all`` from a pre-filled journal into DuckDB.

Fills an ingest journal with ``--rows`` stored track events (each the ~1.3 KB line collection writes for
the benchmark's payload, with a unique messageId), then times, in the same run:

* ``load_all`` into an empty DuckDB raw log (bulk read of the segment files, dedup, insert, commit);
* ``load_all`` of as many new rows again, into the raw log that now holds the first batch (the dedup
  anti-join then has something to look at);
* baseline 1: DuckDB ``read_json`` of the same documents as an NDJSON file into a new table;
* baseline 2: DuckDB ``read_csv`` of the same journal files straight into a plain table (the bulk read and
  the write with nothing else: what ``load`` adds to it is deduplication and the log's bookkeeping).

Prints one line per figure and a ``LOADJSON`` line for ``benchmarks/bench.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # after PYTHONPATH: another checkout of opencdp can be measured

from benchmarks.payloads import PLACEHOLDER, single_body  # noqa: E402
from opencdp.collect.messages import RequestInfo, collect_single, read_body  # noqa: E402
from opencdp.collect.timestamps import format_utc  # noqa: E402
from opencdp.config import Settings  # noqa: E402
from opencdp.store import open_engine  # noqa: E402
from opencdp.store.journal import COLUMNS, Journal, line_parts  # noqa: E402
from opencdp.store.raw_log import RawLog  # noqa: E402

SOURCE_ID = "src_0123456789abcdef"
ID_MARK = "M" * 36


def stored_line() -> bytes:
    """The journal line collection writes for the benchmark's track event (messageId = ``ID_MARK``)."""
    now = datetime.now(UTC)
    req = RequestInfo(SOURCE_ID, now, format_utc(now), 32 * 1024, 2500, 32)
    body = read_body(single_body().replace(PLACEHOLDER.encode(), ID_MARK.encode()), batch=False)
    return collect_single(body, "track", req).lines[0]


def lines(first: int, count: int) -> list[bytes]:
    template = stored_line()
    return [template.replace(ID_MARK.encode(), f"bench-{i:030d}".encode()) for i in range(first, first + count)]


def fill(journal: Journal, rows: list[bytes], chunk_bytes: int = 8 * 1024 * 1024) -> int:
    """Append rows as journal lines; returns the bytes written."""
    chunk: list[bytes] = []
    size = total = 0
    for line in rows:
        chunk.append(line)
        size += len(line)
        if size >= chunk_bytes:
            journal.write_sync(b"".join(chunk))
            total, chunk, size = total + size, [], 0
    if chunk:
        journal.write_sync(b"".join(chunk))
        total += size
    return total


def timed_load(raw_log: RawLog, journal: Journal, expected: int) -> float:
    t0 = time.perf_counter()
    result = raw_log.load_all(journal)
    seconds = time.perf_counter() - t0
    if result.accepted != expected:
        raise RuntimeError(f"loaded {result.accepted} rows, expected {expected}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--tmpdir", default="/var/tmp")
    args = parser.parse_args()
    n = args.rows
    work = Path(tempfile.mkdtemp(prefix="opencdp-loadbench-", dir=args.tmpdir))
    try:
        first = lines(0, n)
        settings = Settings(data_dir=work / "data")
        journal = Journal(settings.journal_dir, fsync=False)
        journal_bytes = fill(journal, first)
        engine = open_engine(settings)
        raw_log = RawLog(engine)
        t_empty = timed_load(raw_log, journal, n)
        fill(journal, lines(n, n))
        t_second = timed_load(raw_log, journal, n)
        engine.close()
        journal.close()

        ndjson = work / "events.ndjson"
        ndjson.write_bytes(b"\n".join(line_parts(line)[2] for line in first) + b"\n")
        con = duckdb.connect(str(work / "read_json.duckdb"))
        t0 = time.perf_counter()
        con.execute(f"CREATE TABLE events AS SELECT * FROM read_json('{ndjson}', format = 'newline_delimited')")
        t_read_json = time.perf_counter() - t0
        loaded = con.execute("SELECT count(*) FROM events").fetchone()
        con.close()
        if loaded != (n,):
            raise RuntimeError(f"read_json loaded {loaded}, expected {n}")

        tsv = work / "journal.tsv"
        tsv.write_bytes(b"".join(first))
        spec = ", ".join(f"'{name}': '{type_}'" for name, type_ in COLUMNS)
        con = duckdb.connect(str(work / "read_csv.duckdb"))
        t0 = time.perf_counter()
        con.execute(
            f"CREATE TABLE stage AS SELECT * FROM read_csv('{tsv}', delim = '\t', quote = '\x01', escape = '\x01', "
            f"header = false, auto_detect = false, nullstr = '', columns = {{{spec}}})"
        )
        t_append = time.perf_counter() - t0
        con.close()

        figures = {
            "rows": n,
            "line_bytes": journal_bytes / n,
            "load_all_rows_per_s": n / t_empty,
            "load_all_second_rows_per_s": n / t_second,
            "read_json_rows_per_s": n / t_read_json,
            "read_csv_rows_per_s": n / t_append,
        }
        print(f"  journal: {n:,} lines of {figures['line_bytes']:,.0f} B ({journal_bytes / 1e6:,.0f} MB)")
        print(
            f"  RawLog.load_all, empty raw log        {figures['load_all_rows_per_s']:10,.0f} rows/s  ({t_empty:.2f} s)"
        )
        print(
            f"  RawLog.load_all, raw log of {n:,} rows {figures['load_all_second_rows_per_s']:10,.0f} rows/s"
            f"  ({t_second:.2f} s)"
        )
        print(
            f"  baseline DuckDB read_json (NDJSON)    "
            f"{figures['read_json_rows_per_s']:10,.0f} rows/s  ({t_read_json:.2f} s)"
        )
        print(
            f"  baseline DuckDB read_csv (journal)    "
            f"{figures['read_csv_rows_per_s']:10,.0f} rows/s  ({t_append:.2f} s)"
        )
        print("LOADJSON " + json.dumps(figures), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
