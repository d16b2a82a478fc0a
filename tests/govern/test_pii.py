"""PII classification and policies on both engines: by name, by value (checked against independent Python
computations: Luhn, mod 97, ipaddress), masks, salted hashes, drop on the ingest path, and the queryable
classification of every field."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.errors import Rejected
from opencdp.govern.pii import classified
from opencdp.model.pii import PiiPolicy, class_by_value, classify, iban_ok, luhn_ok, parse_pii_policy
from tests.govern.test_tracking_plans import send, track

RAW = "SELECT seq, source_id, type, event, message FROM raw_events"

VALUES: dict[str, str | None] = {
    "4111 1111 1111 1111": "payment_card",  # Visa test number, in groups
    "4111-1111-1111-1112": None,  # Luhn fails
    "5555555555554444": "payment_card",
    "378282246310005": "payment_card",  # Amex
    "1234567812345670": None,  # passes Luhn, but no card network starts with 1
    "GB82 WEST 1234 5698 7654 32": "iban",
    "DE89370400440532013000": "iban",
    "DE89370400440532013001": None,  # mod 97 fails
    "078-05-1120": "national_id",
    "000-12-3456": None,  # area 000 is never issued
    "AB123456C": "national_id",  # UK NINO shape
    "Ada.Lovelace@Example.org": "email",
    "not an email@": None,
    "192.168.10.254": "ip_address",
    "256.1.1.1": None,
    "2001:db8::8a2e:370:7334": "ip_address",
    "12:30:45": None,  # a time, not IPv6
    "+33 6 12 34 56 78": "phone",
    "0612345678": None,  # without + a number is not called a phone by value
    "hello world": None,
    "": None,
}


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def field_classes(rt: Runtime, policy: PiiPolicy) -> dict[tuple[str, str, str], tuple[str, str, str, Any]]:
    """(messageId, container, field) -> (class, detected_by, action, new value), from the SQL."""
    sql = (
        "SELECT r.message_id, f.container, f.field, f.class, f.detected_by, f.action, f.new_value "
        f"FROM ({classified(policy, 'salt', RAW)}) AS f JOIN raw_events AS r ON r.seq = f.seq"
    )
    out = {}
    for mid, container, field, cls, by, action, new in rt.engine.fetch_all(sql):
        out[(mid, container, field)] = (cls, by, action, None if new is None else json.loads(new))
    return out


def test_python_checks_agree_with_the_standard_examples() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    for value, expected in VALUES.items():
        assert class_by_value(value) == expected, value


def test_sql_classifies_values_as_python_does(rt: Runtime) -> None:
    src = rt.registry.create("web", "web", None).source_id
    send(rt, src, *(track(f"m{i}", "Note", note=v) for i, v in enumerate(VALUES)))
    found = field_classes(rt, PiiPolicy())
    for i, (value, expected) in enumerate(VALUES.items()):
        got = found.get((f"m{i}", "properties", "note"))
        assert (got[0] if got else None) == expected, value
        if got:
            assert got[1] == "value"


_digits = st.text(alphabet="0123456789", min_size=12, max_size=20)
_mixed = st.text(alphabet="0123456789 -.:+@abcdefABCDEFGHXYZ", max_size=30)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.one_of(_digits, _mixed, _digits.map(lambda d: "4" + d[:15])), min_size=1, max_size=30))
def test_sql_and_python_classify_random_values_alike(
    tmp_path_factory: pytest.TempPathFactory, values: list[str]
) -> None:
    from tests.conftest import make_settings

    rt = Runtime(make_settings(tmp_path_factory.mktemp("pii"), "duckdb"))
    try:
        src = rt.registry.create("web", "web", None).source_id
        send(rt, src, *(track(f"m{i}", "Note", note=v) for i, v in enumerate(values)))
        found = field_classes(rt, PiiPolicy())
        for i, value in enumerate(values):
            got = found.get((f"m{i}", "properties", "note"))
            assert (got[0] if got else None) == class_by_value(value), value
    finally:
        rt.close()


POLICY = {
    "default": {"email": "hash"},
    "sources": {"web": {"phone": "mask", "ip_address": "mask"}},
    "fields": {"loyalty_no": "national_id", "sku": "none"},
}


def governed(rt: Runtime) -> dict[str, dict[str, Any]]:
    rows = rt.engine.fetch_all("SELECT message_id, message FROM governed")
    return {mid: json.loads(m) for mid, m in rows}


def salted(rt: Runtime, normalised: str) -> str:
    return "sha256:" + hashlib.sha256((rt.governance.pii.salt() + normalised).encode()).hexdigest()


def test_the_governed_stream_carries_what_the_policy_leaves(rt: Runtime) -> None:
    web = rt.registry.create("web", "web", None).source_id
    app = rt.registry.create("app", "server", None).source_id
    rt.put_pii_policy(POLICY)
    order = track("a", "Order Completed", card_number="4111 1111 1111 1111", note="GB82 WEST 1234 5698 7654 32",
                  sku="4111111111111111", loyalty_no="AB123456C", phone="+44 20 7946 0958", revenue=12)  # fmt: skip
    order["context"] = {"ip": "203.0.113.77", "traits": {"email": " Ada@Example.org"}}
    ident = {"type": "identify", "userId": "u", "messageId": "b",
             "traits": {"email": "ada@example.org", "name": "Ada Lovelace", "phone": "+44 20 7946 0958"}}  # fmt: skip
    send(rt, web, order, ident)
    send(rt, app, {**ident, "messageId": "c"})
    out = governed(rt)
    props = out["a"]["properties"]
    assert props["card_number"] == "************1111"  # masked by default (built-in policy)
    assert props["note"] == "GB82**************5432"  # an IBAN found by its value, in a free-text field
    assert props["sku"] == "4111111111111111"  # declared not PII
    assert props["loyalty_no"] == "***456C"  # declared a national id
    assert props["phone"] == "***58" and props["revenue"] == 12  # web masks phones
    assert out["a"]["context"]["ip"] == "203.0.113.0"
    hashed = salted(rt, "ada@example.org")  # trimmed, lower case, salted: equal emails hash equal
    assert out["a"]["context"]["traits"]["email"] == hashed
    assert out["b"]["traits"] == {"email": hashed, "name": "Ada Lovelace", "phone": "***58"}
    assert out["c"]["traits"]["email"] == hashed and out["c"]["traits"]["phone"] == "+44 20 7946 0958"  # app keeps
    # the raw log keeps what was sent (only ``drop`` keeps a value out of it)
    raw = rt.engine.fetch_one("SELECT message FROM raw_events WHERE message_id = 'a'")
    assert raw is not None and json.loads(raw[0])["properties"]["card_number"] == "4111 1111 1111 1111"


def test_the_classification_of_each_field_is_queryable(rt: Runtime) -> None:
    web = rt.registry.create("web", "web", None).source_id
    rt.put_pii_policy(POLICY)
    first = track("a", "Order Completed", card_number="4111111111111111", note="call +33 6 12 34 56 78")
    second = track("b", "Order Completed", card_number="5555555555554444", sku="4111111111111111", loyalty_no="x")
    send(rt, web, first, second)
    fields = {(r["field"], r["class"], r["detected_by"], r["action"], r["values_seen"])
              for r in rt.pii_fields("web").to_pylist()}  # fmt: skip
    assert fields == {
        ("card_number", "payment_card", "name", "mask", 2),
        ("loyalty_no", "national_id", "declared", "mask", 1),
    }  # "call +33 ..." is not a phone number as a whole; sku is declared not PII


def test_a_violation_does_not_repeat_a_value_the_policy_hides(rt: Runtime) -> None:
    from opencdp.model.plans import TrackingPlan

    web = rt.registry.create("web", "web", None).source_id
    schema = {"type": "object", "properties": {"email": {"type": "string", "pattern": "^[a-z]+@shop[.]com$"}}}
    rt.governance.plans.put(web, TrackingPlan.model_validate({"identify": schema}))
    rt.put_pii_policy({"default": {"email": "hash"}})
    send(rt, web, {"type": "identify", "userId": "u", "messageId": "a", "traits": {"email": "ada@example.org"}})
    details = rt.engine.fetch_all("SELECT rule, detail FROM violations")
    assert details == [("pattern_mismatch", "[withheld: pii]")]


def test_released_messages_get_the_policy_too(rt: Runtime) -> None:
    from opencdp.model.plans import TrackingPlan

    web = rt.registry.create("web", "web", None).source_id
    rt.governance.plans.put(web, TrackingPlan.model_validate({"events": {}, "unplanned": "block"}))
    send(rt, web, track("a", "Refund Issued", iban="DE89370400440532013000"))
    assert governed(rt) == {}
    rt.governance.plans.put(web, TrackingPlan.model_validate({"events": {"Refund Issued": {"type": "object"}}}))
    assert rt.governance.release().released == 1
    assert governed(rt)["a"]["properties"]["iban"] == "DE89**************3000"


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"default": {"email": "encrypt"}}, "default.email"),
        ({"default": {"shoe_size": "mask"}}, "shoe_size"),
        ({"fields": {"x": "secret"}}, "fields.x"),
        ({"sources": {"nowhere": {"email": "drop"}}}, "nowhere"),
        ({"rules": []}, "rules"),
    ],
)
def test_a_bad_policy_is_refused_with_its_reason(rt: Runtime, doc: dict[str, Any], reason: str) -> None:
    with pytest.raises(Rejected) as info:
        rt.put_pii_policy(doc)
    assert reason in info.value.message
    assert rt.pii_policy()["version"] == 0  # nothing half-applied


def test_python_and_sql_masks_agree_on_ipaddress_independently() -> None:
    # the value rules for IP addresses against the standard library's parser
    for text in ["10.0.0.1", "255.255.255.255", "001.2.3.4", "1.2.3", "::1", "fe80::1", "2001:db8:0:0:0:0:2:1"]:
        try:
            ipaddress.ip_address(text)
            valid = True
        except ValueError:
            valid = False
        assert (class_by_value(text) == "ip_address") == valid, text


def test_declared_none_wins_over_name_and_value() -> None:
    declared = PiiPolicy.model_validate({"fields": {"Card Number": "none"}}).declared()
    assert classify("properties", "card_number", "4111111111111111", declared) is None
    assert classify("properties", "card_no", "4111111111111111", {}) == "payment_card"
    assert classify("properties", "name", "Drill", {}) is None  # a product's name
    assert classify("traits", "name", "Ada", {}) == "person_name"
    assert parse_pii_policy({"default": {"iban": "keep"}}).actions("x")["iban"] == "keep"


def test_imports_drop_before_the_journal_and_governance_masks_records(rt: Runtime, tmp_path: Any) -> None:
    from tests.imports.test_import_runs import records, write_csv

    rt.registry.create("crm", "server", None)
    rt.put_pii_policy({"sources": {"crm": {"payment_card": "drop", "phone": "drop"}}, "default": {"email": "mask"}})
    path = write_csv(
        tmp_path / "crm.csv",
        ["customer_id", "email", "phone", "card_no", "memo", "ssn", "tier"],
        [
            ["C1", "ada@example.org", "+44 20 7946 0958", "4111111111111111", "5555 5555 5555 4444", "078-05-1120",
             "gold"],
            ["C2", "bob@example.org", "+44 20 7946 0000", "", "regular customer", "", "silver"],
        ],
    )  # fmt: skip
    result = rt.import_files("crm", "customers", [path])
    assert result.accepted == 2 and sorted(result.pii_dropped) == ["card_no", "phone"]
    got = records(rt, "customers")
    assert "phone" not in got["C1"]["fields"] and got["C1"]["fields"]["email"] == "ada@example.org"  # raw log
    assert got["C1"]["attributes"] == {"memo": None, "tier": "gold"}  # the card, by value
    assert got["C1"]["fields"]["national_id"] == "078-05-1120"  # the ssn column is the national_id field
    assert got["C2"]["attributes"]["memo"] == "regular customer"
    raw_text = " ".join(str(r[0]) for r in rt.engine.fetch_all("SELECT message FROM raw_events"))
    assert "4111111111111111" not in raw_text and "5555 5555" not in raw_text and "7946" not in raw_text
    rt.load()  # an import returns once its rows are in the raw log; governance follows
    downstream = {m["key"]: m for m in governed(rt).values()}
    assert downstream["C1"]["fields"]["email"] == "a***@example.org"
    assert downstream["C1"]["fields"]["national_id"] == "***1120"  # masked by default
    fields = {(r["container"], r["field"], r["class"]) for r in rt.pii_fields("crm").to_pylist()}
    assert fields == {("fields", "email", "email"), ("fields", "national_id", "national_id")}
