"""Import benchmark: a customers CSV (names, emails, phones, addresses, birth dates) through ``opencdp import``.

Prints, in the same run and on the same file:

* OpenCDP's import: read, mapped, typed, every email, phone and name checked by its library, journalled and
  loaded into the raw log (the time until ``Runtime.import_files`` returns, i.e. until the rows are in
  ``raw_events``), with the time of each phase;
* baseline: DuckDB's own ``read_csv`` of the file into a plain table;
* the per-value cost of the normalising libraries (email-validator, phonenumbers) on a sample of the file's
  values, in one process.

    .venv/bin/python benchmarks/import_bench.py [--rows 1000000] [--tmpdir /var/tmp]

The file is generated (deterministic, no faker: 1M rows in seconds): unique emails and phone numbers per
customer, as in a real CRM export, so the libraries see every value once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import duckdb
from email_validator.syntax import validate_email_domain_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

from opencdp.api.runtime import Runtime  # noqa: E402
from opencdp.collect import values  # noqa: E402
from opencdp.config import Settings  # noqa: E402

FIRST = ["Anna", "BEN", "carla", "David", "Eva", "Felix", "Greta", "Hans", "Ida", "Jonas", "Klara", "Lukas", "Zoë"]
LAST = ["Müller", "SCHMIDT", "schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "O'Neil", "van Dijk"]
CITIES = ["Berlin", "Hamburg", "München", "Köln", "Frankfurt", "Stuttgart", "Leipzig"]
DOMAINS = ["example.com", "Example.org", "mail.example.net", "bücher.example"]


def write_customers(path: Path, rows: int) -> None:
    rnd = random.Random(42)
    with path.open("w", encoding="utf-8") as f:
        f.write("Customer ID,First Name,Last Name,Email,Phone,Street,City,Zip,Country,Birth Date,Tier\n")
        for i in range(rows):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            email = f"{first.lower()}.{i}@{rnd.choice(DOMAINS)}" if i % 50 else f"broken-{i}.example.com"
            phone = f"0151 {10_000_000 + i:08d}" if i % 3 else f"+49 30 {1_000_000 + i:07d}"
            birth = f"{rnd.randint(1940, 2005)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
            f.write(
                f"C{i:08d},{first},{last},{email},{phone},Hauptstr. {i % 200},{rnd.choice(CITIES)},"
                f"{10000 + i % 89999},DE,{birth},{rnd.choice(['gold', 'silver', 'bronze'])}\n"
            )


def per_value_us(function: values.Verdict, texts: list[str]) -> float:  # type: ignore[valid-type]
    t0 = time.perf_counter()
    for text in texts:
        function(text)  # type: ignore[operator]
    return (time.perf_counter() - t0) / len(texts) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tmpdir", default="/var/tmp")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opencdp-importbench-", dir=args.tmpdir))
    try:
        path = work / "customers.csv"
        write_customers(path, args.rows)
        size = path.stat().st_size
        cores = len(os.sched_getaffinity(0))
        print(f"  file: {args.rows:,} customers, {size / 1e6:,.0f} MB, 11 columns; cores: {cores}")

        con = duckdb.connect(str(work / "plain.duckdb"))
        t0 = time.perf_counter()
        con.execute(f"CREATE TABLE plain AS SELECT * FROM read_csv('{path}', header = true, all_varchar = true)")
        t_plain = time.perf_counter() - t0
        con.close()

        sample = [line.split(",") for line in path.read_text(encoding="utf-8").splitlines()[1:20_001]]
        email_us = per_value_us(values.email, [r[3] for r in sample])
        module = importlib.import_module("email_validator.validate_email")
        with mock.patch.object(module, "validate_email_domain_name", validate_email_domain_name):
            email_plain_us = per_value_us(values.email, [r[3] for r in sample])
        phone_us = per_value_us(values.phone_in_region, [f"DE\x1f{r[4]}" for r in sample])

        settings = Settings(data_dir=work / "data")
        runtime = Runtime(settings)
        runtime.registry.create("crm", "server", None)
        phases: dict[str, float] = {}
        last = [time.perf_counter(), ""]

        def progress(phase: str, _done: int, _total: int) -> None:
            now = time.perf_counter()
            if last[1]:
                phases[str(last[1])] = phases.get(str(last[1]), 0.0) + now - float(last[0])
            last[0], last[1] = now, phase

        t0 = time.perf_counter()
        result = runtime.import_files("crm", "customers", [path], progress=progress)
        t_import = time.perf_counter() - t0
        phases[str(last[1]) + " + load into raw_events"] = time.perf_counter() - float(last[0])
        t0 = time.perf_counter()
        governed = runtime.governance.run()
        t_govern = time.perf_counter() - t0
        runtime.close()
        assert result.accepted == args.rows, result.summary()

        rate = args.rows / t_import
        print(f"  OpenCDP import (normalised, validated, in raw_events)  {rate:10,.0f} rows/s  ({t_import:.1f} s)")
        for phase, seconds in phases.items():
            print(f"      {phase:45s} {seconds:6.1f} s")
        rate = args.rows / t_plain
        print(f"  baseline DuckDB read_csv into a plain table             {rate:10,.0f} rows/s  ({t_plain:.1f} s)")
        print(
            f"  per value, one process: email-validator {email_plain_us:.1f} µs as shipped, {email_us:.1f} µs with its"
            f" domain check memoized (as the importer calls it); phonenumbers {phone_us:.1f} µs"
        )
        print(
            f"  then governance of the imported records (PII classified, policy applied; the next stage, not part "
            f"of the import): {governed / t_govern:,.0f} rows/s ({t_govern:.1f} s)"
        )
        print(f"  flagged: {result.flagged}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
