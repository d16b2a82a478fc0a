"""The ingest path's PII drop: the lean pass finds exactly what the plain one (decode everything) finds."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from opencdp.collect.scrub import Scrubber
from opencdp.model.pii import PiiClass, classify

_keys = st.sampled_from(["email", "note", "card_number", "cc", "name", "ip", "sku", "phone", "x"])
_SAMPLES = ["4111 1111 1111 1111", "ada@example.org", "+44 20 7946 0958", "10.0.0.1", "078-05-1120",
            "GB82 WEST 1234 5698 7654 32", "hello", ""]  # fmt: skip
_values = st.one_of(
    st.sampled_from(_SAMPLES),
    st.integers(min_value=-(10**17), max_value=10**17),
    st.sampled_from([4111111111111111, 1.5, True, None, {"nested": "4111111111111111"}, ["x"]]),
    st.text(max_size=20),
)
_objects = st.dictionaries(_keys, _values, max_size=5)
_messages = st.fixed_dictionaries(
    {"type": st.just("track"), "userId": st.just("u")},
    optional={"properties": _objects, "traits": _objects, "context": st.fixed_dictionaries({}, optional={
        "ip": _values, "traits": _objects})},
)  # fmt: skip
_classes = st.frozensets(st.sampled_from(["email", "phone", "payment_card", "iban", "ip_address", "national_id",
                                          "person_name"]), min_size=1)  # fmt: skip


def expected(message: dict[str, Any], dropped: frozenset[PiiClass]) -> dict[str, Any]:
    """The message without the fields ``classify`` puts in a dropped class (an independent walk)."""
    out = json.loads(json.dumps(message))
    containers = [("properties", out.get("properties")), ("traits", out.get("traits"))]
    context = out.get("context")
    containers += [("context", context), ("context.traits", (context or {}).get("traits"))]
    for name, obj in containers:
        if not isinstance(obj, dict):
            continue
        for key in list(obj):
            value = obj[key]
            if value is None or isinstance(value, dict | list):
                continue
            text = value if isinstance(value, str) else str(value) if type(value) is int else None
            if classify(name, key, text, {}) in dropped:
                del obj[key]
    return out


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(_messages, min_size=1, max_size=5), dropped=_classes)
def test_the_lean_pass_drops_what_classify_says(batch: list[dict[str, Any]], dropped: frozenset[PiiClass]) -> None:
    scrubber = Scrubber(dropped, {})
    body = json.dumps({"batch": batch}).encode()
    out = scrubber.body(body, batch=True)
    assert out is not None
    assert json.loads(out)["batch"] == [expected(m, dropped) for m in batch]
    single = scrubber.body(json.dumps(batch[0]).encode(), batch=False)
    assert single is not None and json.loads(single) == expected(batch[0], dropped)


def test_a_body_with_nothing_to_drop_is_kept_byte_for_byte_and_odd_shapes_take_the_plain_pass() -> None:
    scrubber = Scrubber(frozenset({"payment_card"}), {})
    body = b'{"batch": [{"type":"track","properties":{"a": 1}}], "sentAt": "x"}'
    assert scrubber.body(body, batch=True) is body
    odd = b'{"batch": ["not an object", {"properties": {"cc": "4111111111111111"}}]}'
    assert json.loads(scrubber.body(odd, batch=True) or b"") == {"batch": ["not an object", {"properties": {}}]}
    assert scrubber.body(b"{broken", batch=False) is None
