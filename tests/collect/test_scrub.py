"""The ingest path's PII drop: the pre-check never misses what exact classification would drop, and a
message that reaches the journal holds none of a dropped class (checked against ``classify``, independently)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from opencdp.collect import messages
from opencdp.collect.scrub import WITHHELD, Scrubber
from opencdp.model.pii import CLASSES, PiiClass, classify

_SAMPLES = ["4111 1111 1111 1111", "ada@example.org", "+44 20 7946 0958", "10.0.0.1", "078-05-1120",
            "GB82 WEST 1234 5698 7654 32", "AB123456C", "::1", "hello", ""]  # fmt: skip
_keys = st.sampled_from(["email", "note", "card_number", "cc", "name", "ip", "sku", "phone", "x", "Pass-Port", "c_c"])
_values = st.one_of(
    st.sampled_from(_SAMPLES),
    st.integers(min_value=-(10**17), max_value=10**17),
    st.sampled_from([4111111111111111, 1.5, True, None, {"nested": "4111111111111111"}, ["x"]]),
    st.text(max_size=20),
)
_objects = st.dictionaries(_keys, _values, max_size=5)
_contexts = st.fixed_dictionaries({}, optional={"ip": _values, "traits": _objects, "page": _objects})
_messages = st.fixed_dictionaries(
    {"type": st.just("track"), "event": st.just("E"), "userId": st.just("u")},
    optional={"properties": _objects, "traits": _objects, "context": _contexts},
)
_classes = st.frozensets(st.sampled_from(CLASSES), min_size=1)


def expected(message: dict[str, Any], dropped: frozenset[PiiClass]) -> dict[str, Any]:
    """The message without the fields ``classify`` puts in a dropped class (a walk of its own)."""
    out = json.loads(json.dumps(message))
    context = out.get("context")
    containers = [("properties", out.get("properties")), ("traits", out.get("traits")), ("context", context),
                  ("context.traits", context.get("traits") if isinstance(context, dict) else None)]  # fmt: skip
    for name, obj in containers:
        for key in list(obj or {}):
            value = obj[key]
            if value is None or isinstance(value, dict | list):
                continue
            text = value if isinstance(value, str) else str(value) if type(value) is int else None
            if classify(name, key, text, {}) in dropped:
                del obj[key]
    return out


def request(scrubber: Scrubber) -> messages.RequestInfo:
    now = datetime.now(UTC)
    return messages.RequestInfo("src", now, "2026-01-01T00:00:00.000Z", 32768, 100, 32, scrubber=scrubber)


def stored(line: bytes) -> dict[str, Any]:
    return dict(json.loads(line.rstrip(b"\n").rsplit(b"\t", 1)[1]))


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(_messages, min_size=1, max_size=5), dropped=_classes)
def test_what_reaches_the_journal_holds_nothing_of_a_dropped_class(
    batch: list[dict[str, Any]], dropped: frozenset[PiiClass]
) -> None:
    scrubber = Scrubber(dropped, {})
    for i, m in enumerate(batch):
        m["messageId"] = f"m{i}"
        if expected(m, dropped) != m:  # something to drop: the pre-check must say so
            raw = [msgspec_raw(m.get(k)) for k in ("properties", "traits", "context")]
            assert scrubber.may_drop(*raw), m
    body = json.dumps({"batch": batch}).encode()
    outcome = messages.collect_batch(messages.read_body(body, batch=True), request(scrubber))
    assert outcome.accepted == len(batch)
    assert [stored(line) for line in outcome.lines] == [expected(m, dropped) for m in batch]


def msgspec_raw(value: object) -> Any:
    import msgspec

    return msgspec.Raw(b"") if value is None else msgspec.Raw(json.dumps(value).encode())


def test_a_rejected_item_keeps_no_dropped_value_and_an_unreadable_one_is_withheld() -> None:
    scrubber = Scrubber(frozenset({"payment_card"}), {})
    body = json.dumps({"batch": [{"type": "track", "userId": "u", "properties": {"cc": "4111111111111111"}},
                                 "4111111111111111"]}).encode()  # fmt: skip
    outcome = messages.collect_batch(messages.read_body(body, batch=True), request(scrubber))
    assert [e.code for e in outcome.errors] == ["missing_event", "invalid_item"]
    assert b"4111111111111111" not in b"".join(outcome.lines)
    assert scrubber.payload(b"not json") == WITHHELD
    plain = b'{"type":"track","properties":{"a":1}}'
    assert scrubber.payload(plain) is plain
