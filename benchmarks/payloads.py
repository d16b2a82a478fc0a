"""Realistic Segment ``track`` payloads (~1 KB each), as templates with a ``__MID__`` placeholder per event.

The wrk script (``benchmarks/wrk/collect.lua``) replaces every placeholder with a unique messageId per request,
so no two events in a run (warm-up included) share a messageId.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLACEHOLDER = "__MID__"
SENT_AT = "2024-05-01T12:00:01.500Z"
USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


def track_event(*, with_type: bool = True, with_sent_at: bool = True) -> dict[str, Any]:
    """One analytics.js-style ``Product Added`` track call with a browser context and a product."""
    event: dict[str, Any] = {}
    if with_type:
        event["type"] = "track"
    event |= {
        "event": "Product Added",
        "userId": "user_0001234567",
        "anonymousId": "6f1c2a3e-9b7d-4e8f-a1b2-c3d4e5f60718",
        "messageId": PLACEHOLDER,
        "timestamp": "2024-05-01T12:00:00.123Z",
        "context": {
            "library": {"name": "analytics.js", "version": "next-1.70.0"},
            "page": {
                "path": "/products/bench-shirt",
                "referrer": "https://www.google.com/",
                "search": "?utm_source=google&utm_medium=cpc",
                "title": "Bench Shirt - OpenCDP Shop",
                "url": "https://shop.example.com/products/bench-shirt?utm_source=google&utm_medium=cpc",
            },
            "userAgent": USER_AGENT,
            "locale": "en-US",
            "ip": "203.0.113.7",
            "campaign": {"source": "google", "medium": "cpc", "name": "spring_sale"},
        },
        "properties": {
            "product_id": "507f1f77bcf86cd799439011",
            "sku": "BS-042-M-BLU",
            "category": "Apparel",
            "name": "Bench Shirt",
            "brand": "OpenCDP",
            "variant": "blue / M",
            "price": 29.99,
            "quantity": 1,
            "currency": "USD",
            "coupon": "SPRING10",
            "position": 3,
            "url": "https://shop.example.com/products/bench-shirt",
            "image_url": "https://cdn.example.com/images/bench-shirt-blue.jpg",
        },
        "integrations": {},
    }
    if with_sent_at:
        event["sentAt"] = SENT_AT
    return event


def single_body() -> bytes:
    """The body of one ``/v1/track`` call."""
    return json.dumps(track_event(with_type=False), separators=(",", ":")).encode()


def batch_body(size: int) -> bytes:
    """The body of one ``/v1/batch`` call holding ``size`` track events (``sentAt`` on the envelope)."""
    batch = [track_event(with_sent_at=False) for _ in range(size)]
    return json.dumps({"batch": batch, "sentAt": SENT_AT}, separators=(",", ":")).encode()


def example_event_bytes() -> int:
    """Size of one event with a 36-character messageId (what the wrk script sends)."""
    return len(single_body().replace(PLACEHOLDER.encode(), b"x" * 36))


def write_templates(directory: Path, batch_size: int) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"single": directory / "single.json", "batch": directory / "batch.json"}
    paths["single"].write_bytes(single_body())
    paths["batch"].write_bytes(batch_body(batch_size))
    return paths
