"""Simulated traffic for the demo: shoppers browsing a web shop and an app, and a server-side backend."""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from opencdp.model.sources import Source, SourceKind

DEMO_SOURCES: list[tuple[str, SourceKind]] = [
    ("demo-web", "web"),
    ("demo-app", "mobile"),
    ("demo-server", "server"),
    ("demo-crm", "server"),
]

PRODUCTS = [
    {
        "product_id": "p-drill",
        "name": "Cordless Drill 18V",
        "category": "Power Tools",
        "brand": "Voltra",
        "price": 129.0,
    },
    {"product_id": "p-saw", "name": "Circular Saw", "category": "Power Tools", "brand": "Voltra", "price": 149.0},
    {"product_id": "p-gloves", "name": "Work Gloves", "category": "Safety", "brand": "Grip", "price": 12.5},
    {"product_id": "p-ladder", "name": "Step Ladder", "category": "Hardware", "brand": "Climb", "price": 79.0},
]
FIRST = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Frances"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Thompson", "Allen"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def visit(rng: random.Random) -> list[dict[str, Any]]:
    """One shopper's session: pages, products, maybe a cart and an order, then identify."""
    anon = str(uuid.UUID(int=rng.getrandbits(128)))
    i = rng.randrange(len(FIRST))
    user = f"user-{rng.randrange(1000):04d}"
    ctx = {"library": {"name": "opencdp-demo", "version": "0.1.0"}, "userAgent": "Mozilla/5.0 (demo)"}
    out: list[dict[str, Any]] = [
        {
            "type": "page",
            "anonymousId": anon,
            "name": "Home",
            "properties": {"path": "/", "title": "Tool Shop"},
            "context": ctx,
        }
    ]
    product = rng.choice(PRODUCTS)
    out.append({"type": "track", "anonymousId": anon, "event": "Product Viewed", "properties": product, "context": ctx})
    if rng.random() < 0.5:
        out.append(
            {
                "type": "track",
                "anonymousId": anon,
                "event": "Product Added",
                "properties": {**product, "quantity": 1},
                "context": ctx,
            }
        )
        if rng.random() < 0.3:  # an old app version's misnamed event: blocked, then renamed by a transformation
            out.append(
                {
                    "type": "track",
                    "anonymousId": anon,
                    "event": "Product Add",
                    "properties": {**product, "quantity": 1},
                    "context": ctx,
                }
            )
        if rng.random() < 0.3:  # an event nobody put in the tracking plan (the demo's plan blocks it)
            out.append(
                {
                    "type": "track",
                    "anonymousId": anon,
                    "event": "Coupon Applied",
                    "properties": {"coupon": "SPRING10"},
                    "context": ctx,
                }
            )
        out.append(
            {
                "type": "identify",
                "anonymousId": anon,
                "userId": user,
                "traits": {
                    "email": f"{FIRST[i].lower()}.{LAST[i].lower()}@example.com",
                    "first_name": FIRST[i],
                    "last_name": LAST[i],
                },
                "context": ctx,
            }
        )
        if rng.random() < 0.6:
            out.append(
                {
                    "type": "track",
                    "userId": user,
                    "anonymousId": anon,
                    "event": "Order Completed",
                    "properties": {
                        "order_id": f"o-{rng.getrandbits(32):08x}",
                        "total": product["price"],
                        "currency": "EUR",
                        "products": [product],
                    },
                    "context": ctx,
                }
            )
    return out


def drive_traffic(
    base_url: str, sources: list[Source], stop: threading.Event, *, events: int = 0, rate: float = 20.0
) -> int:
    """Send simulated messages until ``events`` were sent (0: until ``stop``). Returns how many were sent."""
    rng = random.Random(7)  # noqa: S311 - simulated data, not security
    by_kind = {s.kind: s for s in sources}
    sent = 0
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for _ in range(200):  # wait for the server to come up
            if stop.is_set():
                return sent
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        while not stop.is_set() and (events == 0 or sent < events):
            batch = visit(rng)
            source = by_kind["mobile"] if rng.random() < 0.3 else by_kind["web"]
            if source.kind == "mobile":
                for m in batch:
                    if m["type"] == "page":
                        m["type"], m["name"] = "screen", "Home Screen"
            for m in batch:
                m["timestamp"] = _now()
                m["messageId"] = str(uuid.UUID(int=rng.getrandbits(128)))
            batch = batch[: events - sent] if events else batch
            try:
                client.post("/v1/batch", json={"batch": batch, "sentAt": _now()}, auth=(source.write_key, ""))
                if rng.random() < 0.2 and "server" in by_kind:
                    client.post(
                        "/v1/track",
                        auth=(by_kind["server"].write_key, ""),
                        json={
                            "userId": f"user-{rng.randrange(1000):04d}",
                            "event": "Invoice Paid",
                            "properties": {"amount": round(rng.uniform(10, 500), 2), "currency": "EUR"},
                            "timestamp": _now(),
                        },
                    )
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            sent += len(batch)
            stop.wait(len(batch) / rate)
    return sent
