"""Message normalisation, timestamps and request bodies, as pure functions."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencdp.collect import messages as messages_module
from opencdp.collect import timestamps
from opencdp.collect.body import BodyReader
from opencdp.collect.messages import RequestInfo, collect_batch, collect_single, normalise, parse_body, read_body
from opencdp.errors import Rejected
from opencdp.store import journal

NOW = datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC)


def req(ip: str | None = None) -> RequestInfo:
    return RequestInfo("src", NOW, timestamps.format_utc(NOW), 32 * 1024, 2500, 32, ip=ip)


def doc_of(line: bytes) -> bytes:
    """The stored JSON of a journal line (its last field)."""
    assert line.endswith(b"\n")
    return line[:-1].rsplit(b"\t", 1)[1]


def columns_of(line: bytes) -> dict[str, Any]:
    """A journal line as {column: text or None}, with ``doc`` parsed."""
    values = line[:-1].split(b"\t", len(journal.COLUMNS) - 1)
    out: dict[str, Any] = {name: v.decode() or None for (name, _), v in zip(journal.COLUMNS, values, strict=True)}
    out["doc"] = json.loads(values[-1])
    return out


def single(message: dict[str, Any] | bytes, type_: str = "track", ip: str | None = None) -> bytes:
    """The journal line of a single call, through the same entry points as the API."""
    raw = message if isinstance(message, bytes) else json.dumps(message).encode()
    outcome = collect_single(read_body(raw, batch=False), type_, req(ip))
    if outcome.errors:
        raise Rejected(outcome.errors[0].message, code=outcome.errors[0].code)
    return outcome.lines[0]


def norm(message: dict[str, Any] | bytes, type_: str = "track", ip: str | None = None) -> dict[str, Any]:
    return json.loads(doc_of(single(message, type_, ip)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00.123Z", datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)),
        ("2024-05-01T12:00:00.123456+00:00", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("2015-2-02T00:30:08.276Z", datetime(2015, 2, 2, 0, 30, 8, 276000, tzinfo=UTC)),
        ("2015-2-2 0:30:08.276+0100", datetime(2015, 2, 1, 23, 30, 8, 276000, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_lenient_timestamp_parsing(text: str, expected: datetime) -> None:
    assert timestamps.parse(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01T00:00:00Z", "1" * 100, 12345])
def test_unreadable_timestamps(text: object) -> None:
    assert timestamps.parse(text) is None


def test_output_is_rfc3339_utc_milliseconds() -> None:
    assert timestamps.format_utc(datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=UTC) + timedelta(hours=0)) == (
        "2024-05-01T14:00:00.123Z"
    )


@given(skew=st.integers(min_value=-86_400_000, max_value=86_400_000), delay=st.integers(min_value=0, max_value=60_000))
def test_clock_skew_correction_recovers_the_true_time(skew: int, delay: int) -> None:
    """A device clock off by ``skew`` ms: the corrected timestamp is the true event time (up to transit)."""
    true_event = NOW - timedelta(milliseconds=delay)
    device_event = true_event + timedelta(milliseconds=skew)
    device_sent = NOW + timedelta(milliseconds=skew)  # sent "now", on the same wrong clock
    assert timestamps.corrected(NOW, device_event, device_sent) == true_event


def test_server_fields_are_columns_and_the_message_is_kept_as_sent() -> None:
    raw = b'{"userId":"u","event":"E","timestamp":"2026-11-25T11:00:00.000Z","writeKey":"wk_secret"}'
    c = columns_of(single(raw))
    assert c["received_at"] == "2026-11-25T12:00:00.123Z"
    assert c["original_timestamp"] == "2026-11-25T11:00:00.000Z"
    assert c["timestamp"] is None  # derived when loaded: no sentAt, so the device time itself
    assert c["sent_at"] is None
    assert (c["type"], c["event"], c["user_id"]) == ("track", "E", "u")
    m = c["doc"]
    assert m["type"] == "track" and m["timestamp"] == "2026-11-25T11:00:00.000Z"
    assert "writeKey" not in m and "receivedAt" not in m
    assert len(m["messageId"]) == 36 == len(c["message_id"]) and m["messageId"] == c["message_id"]


def test_usual_messages_are_stored_byte_for_byte() -> None:
    raw = b'{"type":"track","userId":"u","event":"E","messageId":"m1","properties":{"price":1.10}, "x" : [1]}'
    assert doc_of(single(raw)) == raw
    without_ids = b'{"userId":"u","event":"E","properties":{}}'
    stored = doc_of(single(without_ids))
    assert stored.startswith(b'{"type":"track","messageId":"') and stored.endswith(without_ids[1:])


def test_numeric_user_ids_are_accepted_and_kept_as_sent() -> None:
    m = norm({"userId": 42, "event": "E"})
    assert m["userId"] == 42


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (None, {"ip": "10.1.2.3"}),
        ({}, {"ip": "10.1.2.3"}),
        ({"a": 1}, {"ip": "10.1.2.3", "a": 1}),
        ({"ip": "1.1.1.1"}, {"ip": "1.1.1.1"}),
        ({"page": {"title": 'my "ip" page'}}, {"ip": "10.1.2.3", "page": {"title": 'my "ip" page'}}),
        ({"nested": {"ip": "9.9.9.9"}}, {"ip": "10.1.2.3", "nested": {"ip": "9.9.9.9"}}),
    ],
)
def test_context_ip_is_filled_only_when_absent(context: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    message: dict[str, Any] = {"userId": "u", "event": "E"}
    if context is not None:
        message["context"] = context
    assert norm(message, ip="10.1.2.3")["context"] == expected


def test_server_sources_get_no_ip() -> None:
    assert "context" not in norm({"userId": "u", "event": "E"}, ip=None)


def test_pretty_printed_payloads_are_compacted_into_one_line() -> None:
    body = b'{\n\t"userId": "u",\n  "event": "E",\r\n  "properties": {\n    "a": [1,\n 2]\n  }\n}'
    line = doc_of(single(body))
    assert b"\n" not in line and b"\t" not in line and b"\r" not in line
    assert json.loads(line)["properties"] == {"a": [1, 2]}


def test_batch_envelope_context_merges_with_item_winning() -> None:
    body = {
        "batch": [{"type": "track", "userId": "u", "event": "E", "context": {"library": {"name": "item"}, "x": 1}}],
        "context": {"library": {"name": "env", "version": "1"}, "locale": "de"},
        "integrations": {"All": False},
        "sentAt": NOW.isoformat(),
    }
    outcome = collect_batch(read_body(json.dumps(body).encode(), batch=True), req())
    c = columns_of(outcome.lines[0])
    assert c["doc"]["context"] == {"library": {"name": "item", "version": "1"}, "locale": "de", "x": 1}
    assert c["doc"]["integrations"] == {"All": False}
    assert c["sent_at"] == timestamps.format_utc(NOW)


def test_batch_sent_at_applies_to_its_items() -> None:
    body = {"batch": [{"type": "track", "userId": "u", "event": "E"}], "sentAt": "2026-11-25T12:00:00.000Z"}
    c = columns_of(collect_batch(read_body(json.dumps(body).encode(), batch=True), req()).lines[0])
    assert c["sent_at"] == "2026-11-25T12:00:00.000Z"
    assert "sentAt" not in c["doc"]


def test_unknown_fields_and_raw_values_pass_through_byte_for_byte() -> None:
    body = b'{"userId":"u","event":"E","properties":{"price":1.10,"big":12345678901234567890,"s":"\\u00e9"},"x":[true]}'
    line = doc_of(single(body))
    doc = json.loads(line)
    assert b'"price":1.10' in line and b"12345678901234567890" in line and b'"\\u00e9"' in line
    assert doc["x"] == [True]


def test_item_errors_name_their_code() -> None:
    with pytest.raises(Rejected) as info:
        normalise(parse_body(b'{"userId":"u"}'), "track", req())
    assert info.value.code == "missing_event"


# -- bodies --------------------------------------------------------------------------------------------------------


@given(payload=st.binary(min_size=0, max_size=5000), cuts=st.lists(st.integers(1, 5000), max_size=8))
def test_gzip_body_decodes_the_same_however_it_is_chunked(payload: bytes, cuts: list[int]) -> None:
    compressed = gzip.compress(payload)
    reader = BodyReader(10_000, "gzip")
    start = 0
    for cut in [*sorted(cuts), len(compressed)]:
        reader.feed(compressed[start:cut])
        start = max(start, cut)
    assert reader.finish() == payload


def test_body_caps() -> None:
    plain = BodyReader(10, "")
    with pytest.raises(Rejected) as info:
        plain.feed(b"x" * 11)
    assert info.value.code == "payload_too_large"
    inflating = BodyReader(1000, "gzip")
    with pytest.raises(Rejected):
        inflating.feed(gzip.compress(b"0" * 100_000))
    deflate = BodyReader(1000, "deflate")
    deflate.feed(zlib.compress(b"hello"))
    assert deflate.finish() == b"hello"
    with pytest.raises(Rejected) as info:
        BodyReader(10, "br")
    assert info.value.code == "unsupported_encoding"


def test_corrupt_gzip() -> None:
    reader = BodyReader(1000, "gzip")
    with pytest.raises(Rejected) as info:
        reader.feed(b"\x1f\x8b\x08\x00garbage-garbage")
        reader.finish()
    assert info.value.code == "invalid_gzip"


def test_raw_values_are_not_reencoded() -> None:
    raw = msgspec.json.decode(b'{"a": {"b" : 1}}', type=dict[str, msgspec.Raw])
    assert bytes(raw["a"]) == b'{"b" : 1}'


def test_journal_line_header_fields() -> None:
    line = normalise(parse_body(b'{"userId":42,"anonymousId":"a1","event":"E","messageId":"m1"}'), "track", req())
    fields = line[:-1].split(b"\t")
    assert len(fields) == 12
    assert fields[:7] == [b"A", b"src", b"m1", b"track", b"E", b"42", b"a1"]
    assert fields[9] == b""  # no sentAt
    assert fields[10] == b"2026-11-25T12:00:00.123Z"


@pytest.mark.parametrize("user_id", ["with\ttab", "with\nnewline", "with\rcr", "with\x01soh"])
def test_client_fields_that_would_break_the_line_are_left_to_the_json(user_id: str) -> None:
    line = normalise(parse_body(json.dumps({"userId": user_id, "event": "E"}).encode()), "track", req())
    fields = line[:-1].split(b"\t")
    assert len(fields) == 12 and fields[0] == b"X"
    assert fields[2:7] == [b""] * 5
    assert json.loads(fields[11])["userId"] == user_id


def test_nul_characters_in_ids_are_refused() -> None:
    with pytest.raises(Rejected) as info:
        normalise(parse_body(b'{"userId":"a\\u0000b","event":"E"}'), "track", req())
    assert info.value.code == "invalid_user_id"


# -- the fast path and the general path agree -----------------------------------------------------------------

_ids = st.one_of(st.none(), st.just(""), st.text(max_size=8), st.integers(-(10**6), 10**6), st.just("a\tb"))
_times = st.one_of(
    st.none(),
    st.just(""),
    st.just("2024-05-01T12:00:00.123Z"),
    st.just("2024-02-30T12:00:00.000Z"),  # the canonical shape, but no such day
    st.just("2024-05-01T14:00:00+02:00"),
    st.just("0001-01-01T00:00:00.000Z"),
    st.just("garbage"),
    st.datetimes(timezones=st.just(UTC)).map(timestamps.format_utc),
)
_objects = st.one_of(st.none(), st.dictionaries(st.text(max_size=4), st.integers(), max_size=3), st.just("str"))


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    fields = {
        "type": st.one_of(st.none(), st.sampled_from(["track", "identify", "page", "alias", "bogus"])),
        "event": st.one_of(st.none(), st.just(""), st.text(max_size=6)),
        "userId": _ids,
        "anonymousId": _ids,
        "messageId": st.one_of(st.text(min_size=1, max_size=10), st.just("x" * 101)),
        "timestamp": _times,
        "originalTimestamp": _times,
        "sentAt": _times,
        "properties": _objects,
        "context": _objects,
        "writeKey": st.just("wk"),
    }
    out: dict[str, Any] = {}
    for key, strategy in fields.items():
        if draw(st.booleans()):
            out[key] = draw(strategy)
    return out


def _lines(raw: bytes, route: str | None) -> Any:
    """Columns of the lines of a single call (or a batch of one, with the batch's own sentAt, for route None)."""
    if route is None:
        envelope = b'{"sentAt":"2024-05-01T12:00:01.000Z","batch":[' + raw + b"]}"
        return [columns_of(line) for line in collect_batch(read_body(envelope, batch=True), req()).lines]
    outcome = collect_single(read_body(raw, batch=False), route, req())
    return outcome.errors[0].code if outcome.errors else columns_of(outcome.lines[0])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages(), indent=st.sampled_from([None, 2]), route=st.sampled_from(["track", "identify", None]))
def test_fast_path_and_general_path_store_the_same(
    message: dict[str, Any], indent: int | None, route: str | None
) -> None:
    """Whatever the message, the line made with the fast path equals the line made without it."""
    raw = json.dumps(message, indent=indent).encode()
    fast = _lines(raw, route)
    with mock.patch.object(messages_module, "_fast_line", return_value=None):
        slow = _lines(raw, route)
    if "messageId" not in message:  # generated: differs between two runs
        for c in [*(fast if isinstance(fast, list) else [fast]), *(slow if isinstance(slow, list) else [slow])]:
            if isinstance(c, dict):
                c["doc"].pop("messageId", None)
                c["message_id"] = None
    assert fast == slow


def test_the_fast_path_is_taken_for_usual_messages() -> None:
    raw = json.dumps({"userId": "u", "event": "E", "messageId": "m", "timestamp": "2024-05-01T12:00:00.000Z"})
    with mock.patch.object(messages_module, "normalise", side_effect=AssertionError("slow path")):
        assert columns_of(single(raw.encode()))["user_id"] == "u"
