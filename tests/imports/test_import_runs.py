"""Whole imports, on DuckDB and PostgreSQL: records in the raw log, rejects, flags, idempotence, every kind."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from email_validator import validate_email
from faker import Faker

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.errors import Rejected
from opencdp.model.records import FieldMapping, Mapping
from tests.conftest import make_settings


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def records(rt: Runtime, kind: str) -> dict[str, dict[str, Any]]:
    rows = rt.engine.fetch_all(
        "SELECT record_key, fields, attributes, flags, row_number FROM records WHERE kind = ? ORDER BY seq", (kind,)
    )
    return {
        r[0]: {
            "fields": json.loads(r[1]),
            "attributes": json.loads(r[2] or "null"),
            "flags": json.loads(r[3]),
            "row": r[4],
        }
        for r in rows
    }


def customers(n: int, seed: int = 7) -> list[list[Any]]:
    fake = Faker("de_DE")
    Faker.seed(seed)
    return [
        [f"C{i:05d}", fake.first_name().upper(), fake.last_name(), fake.email(), fake.phone_number(),
         fake.date_of_birth().isoformat(), fake.city(), "DE", fake.random_element(["gold", "silver"])]
        for i in range(n)
    ]  # fmt: skip


def expected_phone(text: str) -> str | None:
    try:
        parsed = phonenumbers.parse(text, "DE")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


HEADER = ["Customer ID", "First Name", "Last Name", "Email", "Phone", "Birth Date", "City", "Country", "Tier"]


def test_customers_are_normalised_by_the_libraries_and_kept_with_their_attributes(
    runtime: Runtime, tmp_path: Path
) -> None:
    rows = customers(120)
    rows[5][3] = "not-an-email"
    rows[6][4] = "12"
    rows[7][0] = ""  # no natural key: rejected, with the row number
    rows[8][5] = "31.02.1990"  # not a date: flagged, kept as sent
    path = write_csv(tmp_path / "crm.csv", HEADER, rows)
    result = runtime.import_files("crm", "customers", [path])
    assert (result.rows, result.accepted, result.rejected, result.duplicates) == (120, 119, 1, 0)
    phones = {row[0]: expected_phone(row[4]) for i, row in enumerate(rows) if i != 7}
    assert result.flagged == {"email": 1, "phone": sum(p is None for p in phones.values()), "birth_date": 1}
    stored = records(runtime, "customers")
    assert len(stored) == 119
    for i, row in enumerate(rows):
        if i == 7:
            continue
        got = stored[row[0]]
        assert got["row"] == i + 1
        assert got["attributes"] == {"Tier": row[8]}
        assert got["fields"]["first_name"] == row[1].title()
        if i == 5:
            assert got["fields"]["email"] is None and "@" in got["flags"]["email"]
        else:  # checked against the library called directly
            assert got["fields"]["email"] == validate_email(row[3], check_deliverability=False).normalized
        assert got["fields"]["phone"] == phones[row[0]]  # the library's verdict, called directly
        assert ("phone" in got["flags"]) == (phones[row[0]] is None)
        assert got["fields"]["birth_date"] == (None if i == 8 else row[5])
    reject = runtime.engine.fetch_all("SELECT file, row_number, column_name, reason FROM rejects")
    assert reject == [("crm.csv", 8, "customer_id", "required field customer_id is missing")]


def test_importing_the_same_file_again_stores_nothing_and_a_changed_row_is_a_new_version(
    runtime: Runtime, tmp_path: Path
) -> None:
    rows = customers(30)
    path = write_csv(tmp_path / "crm.csv", HEADER, rows)
    first = runtime.import_files("crm", "customers", [path])
    again = runtime.import_files("crm", "customers", [path])
    assert (first.accepted, first.duplicates) == (30, 0)
    assert (again.accepted, again.duplicates) == (0, 30)
    rows[3][6] = "Hamburg"
    changed = runtime.import_files("crm", "customers", [write_csv(tmp_path / "crm2.csv", HEADER, rows)])
    assert (changed.accepted, changed.duplicates) == (1, 29)
    versions = runtime.engine.fetch_all(
        "SELECT json_extract_string(fields, '$.city') FROM records WHERE record_key = ? ORDER BY seq", (rows[3][0],)
    )
    assert [v[0] for v in versions][-1] == "Hamburg" and len(versions) == 2
    imports = runtime.engine.fetch_all("SELECT accepted, duplicates FROM imports ORDER BY started_at")
    assert imports == [(30, 0), (0, 30), (1, 29)]


def test_orders_and_returns_with_amounts_currencies_and_a_mapping(runtime: Runtime, tmp_path: Path) -> None:
    orders = write_csv(
        tmp_path / "pos.csv",
        ["Beleg", "Kunde", "Summe", "Waehrung", "Datum"],
        [
            ["O1", "C1", "1,234.50", "eur", "24.12.2025 18:30"],
            ["O2", "C1", "19.99", "XXQ", "25.12.2025 09:00"],
            ["O3", "C2", "abc", "EUR", "26.12.2025 10:00"],
        ],
    )
    mapping = Mapping(
        fields={
            "order_id": FieldMapping(column="Beleg"),
            "customer_id": FieldMapping(column="Kunde"),
            "amount": FieldMapping(column="Summe"),
            "currency": FieldMapping(column="Waehrung"),
            "ordered_at": FieldMapping(column="Datum", format="%d.%m.%Y %H:%M"),
            "channel": FieldMapping(default="store"),
        }
    )
    result = runtime.import_files("crm", "orders", [orders], mapping)
    assert (result.accepted, result.rejected) == (2, 1)  # an unreadable amount: the order is refused
    got = records(runtime, "orders")
    assert got["O1"]["fields"] | {} == {
        "order_id": "O1", "customer_id": "C1", "amount": "1234.5", "currency": "EUR",
        "ordered_at": "2025-12-24T18:30:00.000Z", "channel": "store",
    }  # fmt: skip
    assert got["O2"]["fields"]["currency"] is None and "ISO 4217" in got["O2"]["flags"]["currency"]
    times = runtime.engine.fetch_all("SELECT record_key, record_time FROM records WHERE kind = 'orders' ORDER BY 1")
    assert times[0][1].isoformat().startswith("2025-12-24T18:30:00")
    returns = write_csv(tmp_path / "ret.csv", ["return_id", "order_id", "amount"], [["R1", "O1", "-34.50"]])
    assert runtime.import_files("crm", "returns", [returns], Mapping(default_currency="EUR")).accepted == 1
    assert records(runtime, "returns")["R1"]["fields"] == {
        "return_id": "R1", "order_id": "O1", "amount": "-34.5", "currency": "EUR"
    }  # fmt: skip


def test_tickets_from_json_lines(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "tickets.jsonl"
    lines = [
        {"id": "T1", "from": "ann smith", "email": "ANN@EXAMPLE.COM", "subject": "Broken drill", "body": "It broke."},
        {"id": "T2", "email": "bob@example.com", "body": "Thanks!", "tags": ["happy"]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{oops\n")
    result = runtime.import_files("crm", "tickets", [path])
    assert (result.accepted, result.rejected) == (2, 1)
    got = records(runtime, "tickets")
    assert got["T1"]["fields"]["name"] == "Ann Smith" and got["T1"]["fields"]["email"] == "ANN@example.com"
    assert got["T2"]["attributes"] == {"tags": '["happy"]'}


def test_events_are_checked_as_collection_checks_them(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    rows = [
        {"type": "track", "event": "Order Completed", "userId": "u1", "properties": {"revenue": 10.5},
         "timestamp": "2025-01-01T10:00:00.000Z"},
        {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}, "messageId": "given-id"},
        {"type": "track", "userId": "u2"},  # no event name: refused, with the reason
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    first = runtime.import_files("crm", "events", [path])
    assert (first.accepted, first.rejected) == (2, 1)
    assert "missing_event" in runtime.engine.fetch_all("SELECT reason FROM rejects")[0][0]
    stored = runtime.engine.fetch_all("SELECT type, event, user_id, message_id, properties FROM events ORDER BY seq")
    assert [s[:3] for s in stored] == [("track", "Order Completed", "u1"), ("identify", None, "u1")]
    assert json.loads(stored[0][4]) == {"revenue": 10.5} and stored[1][3] == "given-id"
    assert runtime.import_files("crm", "events", [path]).duplicates == 2  # ids from content: idempotent


def test_unknown_source_and_kind_are_refused(runtime: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "x.csv", ["id"], [["1"]])
    with pytest.raises(Rejected) as info:
        runtime.import_files("crm", "invoices", [path])
    assert info.value.code == "unknown_kind"
    with pytest.raises(Rejected):
        runtime.import_files("nope", "customers", [path])


def test_records_are_deduplicated_beyond_the_dedup_window(tmp_path: Path, engine_name: str) -> None:
    """The window bounds how long a retried *message* is recognised; an imported record is recognised forever."""
    settings = make_settings(tmp_path, engine_name, dedup_window_days=0)
    rt = Runtime(settings)
    try:
        rt.registry.create("crm", "server", None)
        path = write_csv(tmp_path / "crm.csv", HEADER, customers(5))
        assert rt.import_files("crm", "customers", [path]).accepted == 5
        assert rt.import_files("crm", "customers", [path]).duplicates == 5
    finally:
        rt.close()
        if engine_name == "postgres":
            from opencdp.store.postgres_engine import PostgresEngine

            PostgresEngine(settings.postgres_dsn, schema=settings.postgres_schema).drop_schema()


def test_distinct_values_are_checked_in_chunks_with_the_same_verdicts(
    duck_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opencdp.collect import imports

    monkeypatch.setattr(imports, "VERDICT_CHUNK", 7)  # 40 rows: several chunks per field
    rows = customers(40, seed=3)
    rows[2][3] = "not-an-email"
    rt = Runtime(duck_settings)
    try:
        rt.registry.create("crm", "server", None)
        result = rt.import_files("crm", "customers", [write_csv(tmp_path / "crm.csv", HEADER, rows)])
        assert result.accepted == 40
        stored = records(rt, "customers")
        for row in rows:
            assert stored[row[0]]["fields"]["phone"] == expected_phone(row[4])
            want = None if row[3] == "not-an-email" else validate_email(row[3], check_deliverability=False).normalized
            assert stored[row[0]]["fields"]["email"] == want
    finally:
        rt.close()
