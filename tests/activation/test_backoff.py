"""Backoff with full jitter, Retry-After in both of its forms, and how HTTP answers are sorted."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from opencdp.activation.outbox import backoff
from opencdp.activation.plugins.base import DeliveryFailed, DeliveryRefused, classify, raise_for_status, retry_after
from opencdp.errors import EngineError, Rejected
from opencdp.model.destinations import parse_destination

CONFIG = parse_destination({"name": "h", "kind": "webhook", "url": "https://example.org/x", "secret": "x" * 16,
                            "backoff_base_seconds": 2, "backoff_cap_seconds": 60})  # fmt: skip


def test_full_jitter_stays_under_the_doubling_ceiling_and_the_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
        waits = [backoff(attempt, CONFIG, None, rng) for _ in range(300)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > 0.8 * ceiling and min(waits) < 0.2 * ceiling  # spread over the whole range
    assert all(backoff(1, CONFIG, 120.0, rng) == 120.0 for _ in range(50))  # Retry-After beats the jitter


def test_retry_after_seconds_and_http_dates() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert retry_after({"retry-after": "30"}) == 30.0
    assert retry_after({"retry-after": format_datetime(now + timedelta(seconds=90), usegmt=True)}, now) == 90.0
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "delivered"), (204, "delivered"), (301, "permanent"), (400, "permanent"), (401, "permanent"),
     (404, "permanent"), (408, "transient"), (409, "permanent"), (429, "transient"), (500, "transient"),
     (503, "transient")],
)  # fmt: skip
def test_http_answers_are_sorted(status: int, outcome: str) -> None:
    try:
        raise_for_status(status, {"retry-after": "5"}, "peer")
    except Exception as exc:
        got = classify(exc)
        assert got.status == outcome
        assert got.retry_after == (5.0 if outcome == "transient" else None)
    else:
        assert outcome == "delivered"


def test_the_error_taxonomy_decides() -> None:
    assert classify(DeliveryFailed("x")).status == "transient"
    assert classify(EngineError("x", sql="SELECT 1")).status == "transient"
    assert classify(DeliveryRefused("x")).status == "permanent"
    assert classify(Rejected("x")).status == "permanent"
    assert classify(ValueError("unexpected")).status == "transient"  # retried, then a dead letter: never lost
