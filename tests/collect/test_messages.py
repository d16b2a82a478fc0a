"""Message normalisation, timestamps and request bodies, as pure functions."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from opencdp.collect import timestamps
from opencdp.collect.body import BodyReader
from opencdp.collect.messages import RequestInfo, collect_batch, normalise, parse_body
from opencdp.errors import Rejected

NOW = datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC)


def req(ip: str | None = None) -> RequestInfo:
    return RequestInfo("src", NOW, timestamps.format_utc(NOW), 32 * 1024, 2500, 32, ip=ip)


def doc_of(line: bytes) -> bytes:
    """The stored JSON of a journal line (its last field)."""
    assert line.endswith(b"\n")
    return line[:-1].rsplit(b"\t", 1)[1]


def norm(message: dict[str, Any], type_: str = "track", ip: str | None = None) -> dict[str, Any]:
    return json.loads(doc_of(normalise(parse_body(json.dumps(message).encode()), type_, req(ip))))


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


def test_server_fields() -> None:
    m = norm({"userId": "u", "event": "E", "timestamp": "2026-11-25T11:00:00.000Z", "writeKey": "wk_secret"})
    assert m["receivedAt"] == "2026-11-25T12:00:00.123Z"
    assert m["originalTimestamp"] == m["timestamp"] == "2026-11-25T11:00:00.000Z"  # no sentAt: no correction
    assert m["type"] == "track"
    assert "writeKey" not in m
    assert len(m["messageId"]) == 36


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
    line = doc_of(normalise(parse_body(body), "track", req()))
    assert b"\n" not in line and b"\t" not in line and b"\r" not in line
    assert json.loads(line)["properties"] == {"a": [1, 2]}


def test_batch_envelope_context_merges_with_item_winning() -> None:
    body = {
        "batch": [{"type": "track", "userId": "u", "event": "E", "context": {"library": {"name": "item"}, "x": 1}}],
        "context": {"library": {"name": "env", "version": "1"}, "locale": "de"},
        "integrations": {"All": False},
        "sentAt": NOW.isoformat(),
    }
    outcome = collect_batch(parse_body(json.dumps(body).encode()), req())
    doc = json.loads(doc_of(outcome.lines[0]))
    assert doc["context"] == {"library": {"name": "item", "version": "1"}, "locale": "de", "x": 1}
    assert doc["integrations"] == {"All": False}
    assert doc["sentAt"] == timestamps.format_utc(NOW)


def test_unknown_fields_and_raw_values_pass_through_byte_for_byte() -> None:
    body = b'{"userId":"u","event":"E","properties":{"price":1.10,"big":12345678901234567890,"s":"\\u00e9"},"x":[true]}'
    line = doc_of(normalise(parse_body(body), "track", req()))
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
