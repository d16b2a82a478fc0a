"""The demo's last act: an audience synced to a webhook and to CSV files, and an abandoned-cart journey.

A small HTTP receiver on loopback stands in for a marketing tool (the webhook destination may use it because it
sets ``allow_private``, which loopback needs). The audience of repeat buyers with an email is synced to it and
to a directory of CSV files; then two shoppers put products in their carts, one of them orders, and after the
journey's wait the receiver gets the other's cart, product by product. Every step says on the console what
happened and the command that shows it.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from opencdp.activation.plugins.webhook import SIGNATURE_HEADER, signature

AUDIENCE = {
    "name": "repeat_buyers",
    "description": "two orders or more, reachable by email",
    "where": {"all": [{"over": "orders", "at_least": 2}, {"identity": "email"}]},
}
CART_WAIT_SECONDS = 15
SHOPPERS = (("cart-ann", "Ann", "ann.cart@example.com", False), ("cart-ben", "Ben", "ben.cart@example.com", True))
CART = (("D-18", "Cordless drill", 129.0), ("B-10", "Drill bit set", 24.5))


class Receiver:
    """A webhook receiver on loopback that checks each request's signature and keeps the JSON it got."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.signed = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sent = self.headers.get(SIGNATURE_HEADER) or ""
                stamp = sent.partition(",")[0].removeprefix("t=")
                if stamp.isdigit() and hmac.compare_digest(sent, signature(outer.secret, int(stamp), body)):
                    outer.signed += 1
                outer.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet
                del args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r.get("type") == kind]


def _wait(done: Any, stop: threading.Event, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.3)
    return bool(done())


def activation_story(admin: httpx.Client, base_url: str, data_dir: Path, console: Console,
                     stop: threading.Event) -> None:  # fmt: skip
    receiver = Receiver(secrets.token_hex(16))
    files = data_dir / "demo-exports" / "audiences"
    saved = admin.post("/admin/v1/audiences", json=AUDIENCE)
    saved.raise_for_status()
    members = saved.json()["entered"]
    console.print(
        f"[green]audience[/green] repeat_buyers (two orders or more, reachable by email): {members} members, "
        "kept current as events arrive (opencdp audiences count|members)"
    )
    common = {"audiences": ["repeat_buyers"], "allow_private": True, "backoff_base_seconds": 0.2}
    admin.post("/admin/v1/destinations", json={
        "name": "demo-hook", "kind": "webhook", "url": receiver.url, "secret": receiver.secret,
        "traits": ["email", "first_name", "order_count", "ltv_net"], **common}).raise_for_status()  # fmt: skip
    admin.post("/admin/v1/destinations", json={
        "name": "demo-files", "kind": "files", "directory": str(files), "format": "csv", **common,
    }).raise_for_status()  # fmt: skip
    synced = _wait(lambda: len(receiver.of("audience")) >= members and any(files.glob("*.csv")), stop, 60)
    if synced:
        written = sorted(files.glob("*.csv"))
        console.print(
            f"[green]synced[/green] repeat_buyers to a webhook ({len(receiver.of('audience'))} entries, "
            f"{receiver.signed} of {len(receiver.received)} requests signed and verified) and to "
            f"{written[0]} (opencdp destinations status)"
        )
    shop = admin.post("/admin/v1/sources", json={"name": "demo-shop", "kind": "web"})
    shop.raise_for_status()
    admin.post("/admin/v1/journeys", json={
        "name": "abandoned_cart", "description": "a cart left without an order",
        "trigger": {"event": "Product Added"}, "exit_on": ["Order Completed"], "cap": {"entries": 1, "days": 1},
        "steps": [{"wait": {"seconds": CART_WAIT_SECONDS}},
                  {"send": {"destination": "demo-hook", "template": "abandoned_cart"}}],
    }).raise_for_status()  # fmt: skip
    console.print(
        f"[green]journey[/green] abandoned_cart: a Product Added not followed by an order within "
        f"{CART_WAIT_SECONDS} s sends the cart to the webhook (opencdp journeys list)"
    )
    with httpx.Client(base_url=base_url, auth=(shop.json()["write_key"], ""), timeout=30) as client:
        for user, first, email, orders in SHOPPERS:
            batch: list[dict[str, Any]] = [
                {"type": "identify", "userId": user, "traits": {"email": email, "first_name": first}}
            ]
            for sku, name, price in CART:
                product = {"sku": sku, "name": name, "price": price}
                batch.append({"type": "track", "userId": user, "event": "Product Added", "properties": product})
            if orders:
                total = sum(p for _, _, p in CART)
                order = {"order_id": f"o-{user}", "total": total}
                batch.append({"type": "track", "userId": user, "event": "Order Completed", "properties": order})
            client.post("/v1/batch", json={"batch": batch}).raise_for_status()

    def cart_of(email: str) -> dict[str, Any] | None:
        return next((m for m in receiver.of("message") if m.get("traits", {}).get("email") == email), None)

    ann = SHOPPERS[0]
    if not _wait(lambda: cart_of(ann[2]) is not None, stop, CART_WAIT_SECONDS + 60):
        return
    message = cart_of(ann[2])
    assert message is not None
    items = ", ".join(e["properties"]["name"] for e in message["message"]["events"])
    ben = SHOPPERS[1]
    console.print(
        f"[green]abandoned cart[/green]: {CART_WAIT_SECONDS} s after {ann[1]} left without ordering, the webhook got "
        f"the cart ({items}); {ben[1]} ordered in time: {'nothing sent' if cart_of(ben[2]) is None else 'SENT'} "
        "(opencdp journeys entries abandoned_cart)"
    )
