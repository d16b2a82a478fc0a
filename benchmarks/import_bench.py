"""Import benchmark: a customers CSV (names, emails, phones, addresses, birth dates), or a support tickets CSV,
through ``opencdp import``.

Prints, in the same run and on the same file:

* OpenCDP's import: read, mapped, typed, every email, phone and name checked by its library, journalled and
  loaded into the raw log (the time until ``Runtime.import_files`` returns, i.e. until the rows are in
  ``raw_events``), with the time of each phase;
* baseline: DuckDB's own ``read_csv`` of the file into a plain table;
* the per-value cost of the normalising libraries (email-validator, phonenumbers; VADER for tickets) on a sample
  of the file's values, in one process.

    .venv/bin/python benchmarks/import_bench.py [--rows 1000000] [--tmpdir /var/tmp]
    .venv/bin/python benchmarks/import_bench.py --kind tickets --rows 100000 [--distinct 0.5]

The file is generated (deterministic, no faker: 1M rows in seconds). Customers: unique emails and phone numbers
per customer, as in a real CRM export, so the libraries see every value once. Tickets: a subject and a text of
two to four sentences (20-60 words) from 5,000 customers; ``--distinct`` is the share of
rows whose subject and text are seen for the first time (the others repeat an earlier ticket's, as templated
answers and forwarded mails do).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import itertools
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


SUBJECTS = ["Order question", "Refund", "Delivery", "Broken item", "Thank you", "Address change", "Invoice"]
SENTENCES = [
    "Thank you so much, the replacement arrived quickly and works perfectly.",
    "Your support team was friendly and solved my problem in minutes.",
    "I love the new drill, great quality for the price.",
    "The parcel arrived two weeks late and the box was damaged.",
    "This is the worst service I have ever had, nobody answers my emails.",
    "The charger stopped working after one day, I am very disappointed.",
    "Please update my delivery address to the one below.",
    "I would like to know when my order will be shipped.",
    "Can you send me a copy of the invoice for my records?",
    "The colour is not what the picture showed, but it is okay.",
    "I was charged twice for the same order and want a refund.",
    "My account still shows the old phone number.",
]


def write_tickets(path: Path, rows: int, distinct: float) -> None:
    """Row ``i`` repeats the subject and text of ticket ``i mod (rows * distinct)``."""
    texts = max(1, round(rows * distinct))
    rnd = random.Random(42)
    with path.open("w", encoding="utf-8") as f:
        f.write("Ticket ID,Email,Name,Subject,Text,Channel,Status,Created At\n")
        for i in range(rows):
            k = i % texts
            pick = random.Random(k)
            body = " ".join(pick.sample(SENTENCES, pick.randint(2, 4))) + f" Order {100_000 + k}."
            customer = rnd.randrange(5_000)
            first, last = FIRST[customer % len(FIRST)], LAST[customer % len(LAST)]
            email = f"{first.lower()}.{customer}@{DOMAINS[customer % len(DOMAINS)]}"
            f.write(
                f'T{i:08d},{email},{first} {last},{pick.choice(SUBJECTS)},"{body}",email,'
                f"{rnd.choice(['open', 'closed'])},2026-0{1 + i % 9}-1{i % 10}T10:00:00Z\n"
            )


def per_value_us(function: values.Verdict, texts: list[str]) -> float:  # type: ignore[valid-type]
    t0 = time.perf_counter()
    for text in texts:
        function(text)  # type: ignore[operator]
    return (time.perf_counter() - t0) / len(texts) * 1e6


def library_costs(kind: str, path: Path) -> list[str]:
    """The per-value cost of the libraries the import calls, on the file's first 20,000 rows, in one process."""
    with path.open(encoding="utf-8", newline="") as f:
        sample = list(itertools.islice(csv.reader(f), 1, 20_001))
    if kind == "tickets":
        email_us = per_value_us(values.email, [r[1] for r in sample])
        sentiment_us = per_value_us(values.sentiment, [f"{r[3]}. {r[4]}" for r in sample])
        return [
            f"per value, one process: email-validator {email_us:.1f} µs (domain check memoized); "
            f"VADER sentiment of a subject and text {sentiment_us:.1f} µs"
        ]
    email_us = per_value_us(values.email, [r[3] for r in sample])
    module = importlib.import_module("email_validator.validate_email")
    with mock.patch.object(module, "validate_email_domain_name", validate_email_domain_name):
        email_plain_us = per_value_us(values.email, [r[3] for r in sample])
    phone_us = per_value_us(values.phone_in_region, [f"DE\x1f{r[4]}" for r in sample])
    return [
        f"per value, one process: email-validator {email_plain_us:.1f} µs as shipped, {email_us:.1f} µs with its"
        f" domain check memoized (as the importer calls it); phonenumbers {phone_us:.1f} µs"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["customers", "tickets"], default="customers")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=float, default=0.5, help="tickets: share of rows with a new text")
    parser.add_argument("--tmpdir", default="/var/tmp")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opencdp-importbench-", dir=args.tmpdir))
    try:
        path = work / f"{args.kind}.csv"
        if args.kind == "tickets":
            write_tickets(path, args.rows, args.distinct)
            shape = f"8 columns, {args.distinct:.0%} distinct subject and text"
        else:
            write_customers(path, args.rows)
            shape = "11 columns"
        size = path.stat().st_size
        cores = len(os.sched_getaffinity(0))
        print(f"  file: {args.rows:,} {args.kind}, {size / 1e6:,.0f} MB, {shape}; cores: {cores}")

        con = duckdb.connect(str(work / "plain.duckdb"))
        t0 = time.perf_counter()
        con.execute(f"CREATE TABLE plain AS SELECT * FROM read_csv('{path}', header = true, all_varchar = true)")
        t_plain = time.perf_counter() - t0
        con.close()

        costs = library_costs(args.kind, path)

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
        result = runtime.import_files("crm", args.kind, [path], progress=progress)
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
        for line in costs:
            print("  " + line)
        print(
            f"  then governance of the imported records (PII classified, policy applied; the next stage, not part "
            f"of the import): {governed / t_govern:,.0f} rows/s ({t_govern:.1f} s)"
        )
        print(f"  flagged: {result.flagged}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
