"""Shared pieces of the real-SDK tests: the calls they make, and how they check what the server stored.

Every test drives a real SDK at a real OpenCDP server on loopback, then checks the raw log against what
the SDK actually put on the wire: each messageId stored exactly once, each message stored as sent (the server's
own fields are columns beside it), and the properties/traits the test passed in unchanged.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Admin, events

JS_DIR = Path(__file__).parent / "js"
NODE_MODULES = JS_DIR / "node_modules"
SERVER_FIELDS = frozenset({"type", "messageId"})
"""What the server adds to a message that lacks them; everything else must be stored as the SDK sent it."""

TYPES = ("track", "identify", "page", "screen", "group", "alias")


def properties(i: int, *, js_safe: bool = True) -> dict[str, Any]:
    """Nested properties with the JSON values that tend to get mangled (unicode, escapes, floats, nulls)."""
    props: dict[str, Any] = {
        "index": i,
        "revenue": round(19.99 + i * 0.37, 2),
        "ratio": i / 7,
        "currency": "EUR",
        "text": 'Grüße 👋 日本語 "quoted" \\ back\nslash\ttab </script>',
        "tags": ["sdk", f"t{i % 7}", ""],
        "cart": {
            "coupon": None,
            "items": [{"sku": f"sku-{i}-{j}", "qty": j, "price": 9.99 + j, "gift": j % 2 == 0} for j in range(3)],
        },
        "deep": {"a": {"b": {"c": {"d": [i, {"e": "f"}, [None, True, False]]}}}},
        "empty": {"obj": {}, "list": []},
        "negative": -i,
        "exp": 1.5e-300,
    }
    if not js_safe:  # integers a JavaScript number cannot hold
        props["big"] = 2**53 + 1
        props["bigger"] = -(2**63)
    return props


def traits(i: int) -> dict[str, Any]:
    """Always the same keys, so SDKs that merge traits across calls (analytics.js) still send exactly these."""
    return {
        "email": f"user{i}@example.com",
        "name": f"Zoë {i}",
        "plan": ["free", "pro", "enterprise"][i % 3],
        "address": {"city": "Zürich", "zip": f"80{i:02d}", "geo": {"lat": 47.37 + i / 1000, "lon": 8.54}},
        "logins": i,
        "admin": i % 5 == 0,
        "nothing": None,
    }


def calls(n: int, *, js_safe: bool = True) -> list[dict[str, Any]]:
    """``n`` calls cycling through all six types, in the camelCase shape of the JavaScript SDKs' arguments."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        type_ = TYPES[i % len(TYPES)]
        user = f"user-{i}"
        if type_ == "track":
            c = {"userId": user, "event": f"Order Completed {i % 4}", "properties": properties(i, js_safe=js_safe)}
            c["context"] = {"campaign": {"name": "spring", "source": "sdk-test"}, "locale": "de-CH"}
        elif type_ == "identify":
            c = {"userId": user, "traits": traits(i)}
        elif type_ == "page":
            c = {"anonymousId": f"anon-{i}", "category": "Docs", "name": f"Page {i}"}
            c["properties"] = properties(i, js_safe=js_safe)
        elif type_ == "screen":
            c = {"userId": user, "name": f"Screen {i}", "properties": properties(i, js_safe=js_safe)}
        elif type_ == "group":
            c = {"userId": user, "groupId": f"group-{i % 3}", "traits": traits(i)}
        else:
            c = {"userId": user, "previousId": f"anon-{i}"}
        out.append({"type": type_, **c})
    return out


PY_ARGS = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "groupId": "group_id",
    "previousId": "previous_id",
    "event": "event",
    "properties": "properties",
    "traits": "traits",
    "name": "name",
    "category": "category",
    "context": "context",
}


def python_call(client: Any, call: dict[str, Any]) -> Any:
    """Make ``call`` on a segment/rudderstack Python client (both have the same signatures)."""
    kwargs = {PY_ARGS[k]: v for k, v in call.items() if k != "type"}
    return getattr(client, call["type"])(**kwargs)


def same_instant(a: str, b: str, tolerance: timedelta = timedelta(milliseconds=1)) -> bool:
    """Two ISO-8601 timestamps name the same instant (the server keeps milliseconds, SDKs may send micro)."""
    return abs(datetime.fromisoformat(a) - datetime.fromisoformat(b)) < tolerance


def wait_for_events(admin: Admin, source_id: str, expected: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The source's stored events, once at least ``expected`` are there (or the deadline passed)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = events(admin, f"source_id = '{source_id}'")
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def assert_stored_exactly_once(rows: list[dict[str, Any]], message_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Every id stored once, nothing else stored; returns the stored rows (columns and ``message``) by messageId."""
    assert len(set(message_ids)) == len(message_ids), "the SDK produced duplicate messageIds"
    counts = Counter(r["message_id"] for r in rows)
    missing = [m for m in message_ids if m not in counts]
    assert not missing, f"{len(missing)} of {len(message_ids)} messages not stored, e.g. {missing[:3]}"
    twice = {m: c for m, c in counts.items() if c != 1}
    assert not twice, f"stored more than once: {twice}"
    assert set(counts) == set(message_ids), f"unexpected messages stored: {set(counts) - set(message_ids)}"
    return {r["message_id"]: r for r in rows}


def assert_stored_as_sent(
    row: dict[str, Any], sent: dict[str, Any], *, envelope_sent_at: str | None, ip: str | None = None
) -> None:
    """``row["message"]`` is the wire item ``sent`` (and ``context.ip`` when given); the time columns follow it."""
    stored = row["message"]
    data = {k: v for k, v in sent.items() if k != "writeKey"}
    for key, value in data.items():
        if key == "context" and ip is not None:
            assert stored["context"] == {**value, "ip": ip}, sent["messageId"]
        else:
            assert stored.get(key) == value, f"{sent['messageId']}: {key} stored as {stored.get(key)!r}"
    extra = set(stored) - set(data) - SERVER_FIELDS - ({"context"} if ip else set())
    assert not extra, f"{sent['messageId']}: the server added {extra}"
    if ip is not None and "context" not in sent:
        assert stored["context"] == {"ip": ip}
    device_time = sent.get("originalTimestamp") or sent["timestamp"]
    assert same_instant(row["original_timestamp"], device_time), (row["original_timestamp"], device_time)
    sent_at = sent.get("sentAt") or envelope_sent_at
    assert sent_at is not None
    assert same_instant(row["sent_at"], sent_at), (row["sent_at"], sent_at)
    # Same machine, same clock: the skew correction may move the time by the request's transit only.
    assert abs(datetime.fromisoformat(row["timestamp"]) - datetime.fromisoformat(device_time)) < timedelta(seconds=5)


def assert_payload_intact(
    stored: dict[str, Any], call: dict[str, Any], sdk_properties: dict[str, Any] | None = None
) -> None:
    """The properties/traits/ids the test passed to the SDK are what the server stored.

    ``sdk_properties`` are the properties the SDK itself adds (analytics-node copies a page's category in).
    """
    for key in ("properties", "traits", "event", "userId", "anonymousId", "groupId", "previousId", "name"):
        if key in call:
            expected = {**call[key], **(sdk_properties or {})} if key == "properties" else call[key]
            assert stored.get(key) == expected, f"{stored['messageId']}: {key} changed"


@dataclass
class WireCall:
    """One HTTP request an SDK made, as it went on the wire, and the answer it got."""

    url: str
    headers: dict[str, str]
    gzipped: bool
    body: dict[str, Any]
    status: int


class RequestsSpy:
    """Wraps a ``requests`` session's ``post`` to record what the SDK really sent (the prepared request)."""

    def __init__(self, session: Any) -> None:
        self._post = session.post
        self.calls: list[WireCall] = []

    def __call__(self, url: str, **kwargs: Any) -> Any:
        response = self._post(url, **kwargs)
        prepared = response.request
        raw = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        gzipped = prepared.headers.get("Content-Encoding") == "gzip"
        body = json.loads(gzip.decompress(raw) if gzipped else raw)
        self.calls.append(WireCall(url, dict(prepared.headers), gzipped, body, response.status_code))
        return response

    def items(self) -> list[tuple[dict[str, Any], str]]:
        """Every batch item sent, with its envelope's sentAt."""
        return [(item, c.body["sentAt"]) for c in self.calls for item in c.body["batch"]]


def require_node_modules() -> None:
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: the analytics-node/analytics.js tests need Node.js 20", pytrace=False)
    for package in ("@segment/analytics-node", "@segment/analytics-next"):
        if not (NODE_MODULES / package / "package.json").is_file():
            pytest.fail(
                f"{package} is not installed in {NODE_MODULES}: run `npm ci` in {JS_DIR} (scripts/test does)",
                pytrace=False,
            )
