"""Every kind of bad input has a defined answer, and nothing valid in the same request is lost."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencdp.model.sources import SourceLimits
from tests.api.test_collection import basic, track
from tests.conftest import make_settings
from tests.helpers import ThreadedServer, events


@pytest.fixture
def key(server: ThreadedServer) -> str:
    return server.admin.create_source("web").write_key


def post(server: ThreadedServer, path: str, key: str, **kwargs: Any) -> httpx.Response:
    headers = {**basic(key), **kwargs.pop("headers", {})}
    return httpx.post(server.url + path, headers=headers, **kwargs)


def rejected(server: ThreadedServer) -> list[dict[str, Any]]:
    return sorted(server.admin.rejected(), key=lambda r: r["seq"])


def test_malformed_json_is_400_and_kept_for_the_operator(server: ThreadedServer, key: str) -> None:
    r = post(server, "/v1/track", key, content=b'{"userId": "u", "event": ')
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_json"
    assert set(r.json()) == {"code", "message"}
    [kept] = rejected(server)
    assert kept["code"] == "invalid_json"
    assert kept["payload"] == '{"userId": "u", "event": '


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b""])
def test_a_body_that_is_not_an_object_is_400(server: ThreadedServer, key: str, body: bytes) -> None:
    r = post(server, "/v1/track", key, content=body)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_json"


def test_wrong_content_type_is_400(server: ThreadedServer, key: str) -> None:
    r = post(
        server, "/v1/track", key, content=b"userId=u", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "unsupported_content_type"


def test_unknown_content_encoding_is_400(server: ThreadedServer, key: str) -> None:
    r = post(server, "/v1/track", key, content=b"xx", headers={"Content-Encoding": "br"})
    assert r.status_code == 400
    assert r.json()["code"] == "unsupported_encoding"


def test_truncated_gzip_is_400(server: ThreadedServer, key: str) -> None:
    body = gzip.compress(json.dumps(track()).encode())[:-12]
    r = post(server, "/v1/track", key, content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_gzip"
    assert events(server.admin) == []


def test_gzip_bomb_stops_at_the_cap(server: ThreadedServer, key: str) -> None:
    # 50 MB of zeros compress to ~50 KB: far above the 500 KiB batch cap once inflated.
    bomb = gzip.compress(b'{"batch": [' + b" " * 50_000_000 + b"]}", compresslevel=9)
    assert len(bomb) < 500 * 1024
    r = post(server, "/v1/batch", key, content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400
    assert r.json()["code"] == "payload_too_large"


def test_oversized_single_call_and_batch(server: ThreadedServer, key: str) -> None:
    r = post(server, "/v1/track", key, json=track(properties={"blob": "x" * 40_000}))
    assert r.status_code == 400
    assert r.json()["code"] == "payload_too_large"
    big_batch = {"batch": [{"type": "track", **track(properties={"blob": "x" * 20_000})} for _ in range(30)]}
    r = post(server, "/v1/batch", key, json=big_batch)
    assert r.status_code == 400
    assert r.json()["code"] == "payload_too_large"
    assert events(server.admin) == []


def test_oversized_item_in_a_batch_keeps_its_siblings(server: ThreadedServer, key: str) -> None:
    good = [{"type": "track", **track()} for _ in range(2)]
    huge = {"type": "track", **track(properties={"blob": "x" * 40_000})}
    r = post(server, "/v1/batch", key, json={"batch": [good[0], huge, good[1]]})
    assert r.status_code == 200
    assert r.json()["errors"] == [
        {"index": 1, "code": "message_too_large", "message": r.json()["errors"][0]["message"]}
    ]
    assert [e["message_id"] for e in events(server.admin)] == [g["messageId"] for g in good]
    [kept] = rejected(server)
    assert kept["code"] == "message_too_large"
    assert json.loads(kept["payload"])["messageId"] == huge["messageId"]


def test_too_many_items(server: ThreadedServer) -> None:
    limits = SourceLimits(max_batch_items=3)
    small = server.admin.create_source("small", limits=limits).write_key
    items = [{"type": "track", **track()} for _ in range(5)]
    r = post(server, "/v1/batch", small, json={"batch": items})
    assert r.status_code == 200
    assert [e["index"] for e in r.json()["errors"]] == [3, 4]
    assert {e["code"] for e in r.json()["errors"]} == {"too_many_items"}
    assert [e["message_id"] for e in events(server.admin)] == [i["messageId"] for i in items[:3]]
    assert len(rejected(server)) == 2


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"event": "E"}, "no_user_anon_id"),
        ({"userId": "", "anonymousId": None, "event": "E"}, "no_user_anon_id"),
        ({"userId": "u"}, "missing_event"),
        ({"userId": "u", "event": ""}, "missing_event"),
        ({"userId": "u", "event": 5}, "invalid_event"),
        ({"userId": {"a": 1}, "event": "E"}, "invalid_user_id"),
        ({"userId": "u", "event": "E", "properties": [1]}, "invalid_properties"),
        ({"userId": "u", "event": "E", "context": "x"}, "invalid_context"),
        ({"userId": "u", "event": "E", "messageId": "m" * 101}, "message_id_too_long"),
        ({"userId": "u", "event": "E", "messageId": 7}, "invalid_message_id"),
    ],
)
def test_invalid_single_message_is_400_and_kept(
    server: ThreadedServer, key: str, message: dict[str, Any], code: str
) -> None:
    r = post(server, "/v1/track", key, json=message)
    assert r.status_code == 400
    assert r.json()["code"] == code
    assert events(server.admin) == []
    [kept] = rejected(server)
    assert kept["code"] == code
    assert json.loads(kept["payload"]) == message


def test_alias_and_group_requirements(server: ThreadedServer, key: str) -> None:
    assert post(server, "/v1/alias", key, json={"userId": "new"}).json()["code"] == "missing_previous_id"
    assert post(server, "/v1/alias", key, json={"previousId": "old"}).json()["code"] == "missing_user_id"
    assert post(server, "/v1/group", key, json={"userId": "u"}).json()["code"] == "missing_group_id"
    # alias needs no anonymousId
    assert post(server, "/v1/alias", key, json={"previousId": "old", "userId": "new"}).status_code == 200


def test_batch_with_invalid_items_keeps_valid_siblings(server: ThreadedServer, key: str) -> None:
    good = [{"type": "track", **track()} for _ in range(3)]
    batch = [
        good[0],
        {"type": "track", "userId": "u"},
        good[1],
        {"userId": "u", "event": "E"},
        7,
        {"type": "nonsense", "userId": "u"},
        good[2],
    ]
    r = post(server, "/v1/batch", key, json={"batch": batch})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    assert body["accepted"] == 3
    assert [(e["index"], e["code"]) for e in body["errors"]] == [
        (1, "missing_event"),
        (3, "missing_type"),
        (4, "invalid_item"),
        (5, "invalid_type"),
    ]
    assert [e["message_id"] for e in events(server.admin)] == [g["messageId"] for g in good]
    assert [r["code"] for r in rejected(server)] == ["missing_event", "missing_type", "invalid_item", "invalid_type"]


def test_batch_without_batch_array(server: ThreadedServer, key: str) -> None:
    assert post(server, "/v1/batch", key, json={"events": []}).json()["code"] == "missing_batch"
    assert post(server, "/v1/batch", key, json={"batch": {"a": 1}}).json()["code"] == "invalid_batch"


def test_deeply_nested_properties(server: ThreadedServer, key: str) -> None:
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"d": deep}
    r = post(server, "/v1/track", key, json=track(properties=deep))
    assert r.status_code == 400
    assert r.json()["code"] == "too_deep"
    # Many brackets but shallow is fine: the cheap bound must not reject it.
    wide = track(properties={f"k{i}": {"v": [i]} for i in range(200)})
    assert post(server, "/v1/track", key, json=wide).status_code == 200


def test_pathologically_deep_json_does_not_crash_the_server(server: ThreadedServer, key: str) -> None:
    body = b'{"userId":"u","event":"E","properties":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"
    r = post(server, "/v1/track", key, content=body)
    assert r.status_code == 400
    assert r.json()["code"] in ("too_deep", "payload_too_large")
    assert httpx.get(server.url + "/health").status_code == 200


def test_invalid_utf8(server: ThreadedServer, key: str) -> None:
    body = b'{"userId":"u","event":"E","properties":{"name":"\xff\xfe"}}'
    r = post(server, "/v1/track", key, content=body)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_utf8"
    [kept] = rejected(server)
    assert kept["code"] == "invalid_utf8"  # kept with the bad bytes replaced, for the operator to see


def test_unparseable_timestamp_is_kept_and_flagged(server: ThreadedServer, key: str) -> None:
    r = post(server, "/v1/track", key, json=track(timestamp="yesterday-ish"))
    assert r.status_code == 200
    [row] = events(server.admin)
    m = row["message"]
    assert m["_opencdp"] == {"flags": ["invalid_timestamp"], "invalid": {"timestamp": "yesterday-ish"}}
    assert m["timestamp"] == "yesterday-ish"  # the message is kept as sent
    assert row["timestamp"] == row["original_timestamp"] == row["received_at"]


@pytest.mark.parametrize(
    "fields",
    [
        {"sentAt": "garbage"},
        {"sentAt": 1700000000},
        {"timestamp": 1700000000, "sentAt": ["x"]},
        {"originalTimestamp": "not a time", "timestamp": "2024-01-01T00:00:00.000Z"},
        {"timestamp": "2024-02-30T00:00:00Z"},
    ],
)
def test_unreadable_time_fields_never_block_the_log(server: ThreadedServer, key: str, fields: dict[str, Any]) -> None:
    """An unreadable sentAt/timestamp of any JSON type is kept aside; the message and those after it load."""
    first = track(**fields)
    assert post(server, "/v1/track", key, json=first).status_code == 200
    batch = {"batch": [{"type": "track", **track(**fields)}], "sentAt": "also garbage"}
    assert post(server, "/v1/batch", key, json=batch).status_code == 200
    after = track()
    assert post(server, "/v1/track", key, json=after).status_code == 200
    rows = events(server.admin)
    assert [r["message_id"] for r in rows] == [first["messageId"], batch["batch"][0]["messageId"], after["messageId"]]
    kept = rows[0]["message"]["_opencdp"]["invalid"]
    assert all(kept[k] == v for k, v in fields.items() if k in kept)
    assert server.admin.query("SELECT count(*) AS n FROM events WHERE timestamp IS NULL")[0]["n"] == 0


def test_rate_limit_is_429_with_retry_after(server: ThreadedServer) -> None:
    slow = server.admin.create_source("slow", limits=SourceLimits(rate_per_second=1, burst=2)).write_key
    codes = [post(server, "/v1/track", slow, json=track()).status_code for _ in range(4)]
    assert codes[:2] == [200, 200]
    assert 429 in codes[2:]
    r = post(server, "/v1/track", slow, json=track())
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["code"] == "rate_limited"


def test_wrong_method_and_unknown_path(server: ThreadedServer, key: str) -> None:
    assert httpx.get(server.url + "/v1/track").status_code == 405
    assert httpx.post(server.url + "/v2/track", json=track(writeKey=key)).status_code in (401, 404)


def test_payload_is_never_evaluated(server: ThreadedServer, key: str) -> None:
    hostile = track(
        properties={"tpl": "{{ 7*7 }}", "fmt": "%(x)s {0.__class__}", "sql": "'); DROP TABLE raw_events;--"}
    )
    hostile["event"] = "x'); DROP TABLE sources; --"
    assert post(server, "/v1/track", key, json=hostile).status_code == 200
    [row] = events(server.admin)
    assert row["message"]["properties"] == hostile["properties"]
    assert row["event"] == hostile["event"]
    assert server.admin.query("SELECT count(*) AS n FROM sources")[0]["n"] == 1


def test_message_ids_are_kept_verbatim_up_to_100_chars(server: ThreadedServer, key: str) -> None:
    mid = "ü" + "m" * 98 + str(uuid.uuid4())[:1]
    assert len(mid) == 100
    assert post(server, "/v1/track", key, json=track(messageId=mid)).status_code == 200
    assert events(server.admin)[0]["message_id"] == mid


def test_a_loader_far_behind_gets_503_not_a_full_disk(tmp_path: Path) -> None:
    """While more than ``max_unloaded_bytes`` wait for the engine, collection answers 503 + Retry-After."""
    settings = make_settings(tmp_path, "duckdb", max_unloaded_bytes=1, load_interval_seconds=3600)
    with ThreadedServer(settings) as srv:
        key = srv.admin.create_source("web").write_key
        first, second = track(), track()
        assert post(srv, "/v1/track", key, json=first).status_code == 200
        r = post(srv, "/v1/track", key, json=second)
        assert r.status_code == 503
        assert r.json()["code"] == "backlog_full"
        assert int(r.headers["retry-after"]) >= 1
        assert [e["message_id"] for e in events(srv.admin)] == [first["messageId"]]  # a query loads the backlog
        assert post(srv, "/v1/track", key, json=second).status_code == 200  # the retry is accepted now
        assert [e["message_id"] for e in events(srv.admin)] == [first["messageId"], second["messageId"]]
