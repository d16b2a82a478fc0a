"""Webhook: a JSON POST per delivery (``batch_size`` 1, the default) or per batch (``{"batch": [...]}``).

Each request carries ``Idempotency-Key`` (the delivery's key; a batch's is the SHA-256 of its keys) and
``X-OpenCDP-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>." + body with the destination's
secret>``, so a receiver can check who sent it, reject stale replays of the request and deduplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from opencdp.activation import http
from opencdp.activation.network import pin
from opencdp.activation.plugins.base import Delivery
from opencdp.model.destinations import WebhookDestination

SIGNATURE_HEADER = "X-OpenCDP-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@dataclass(frozen=True)
class Request:
    body: bytes
    key: str


class Webhook:
    def __init__(self, config: WebhookDestination) -> None:
        self.config = config
        self.http = http.client(config.timeout_seconds)

    def prepare(self, batch: Sequence[Delivery]) -> Request:
        if len(batch) == 1:
            return Request(json.dumps(batch[0].payload, separators=(",", ":")).encode(), batch[0].key)
        body = json.dumps({"batch": [d.payload for d in batch]}, separators=(",", ":")).encode()
        return Request(body, hashlib.sha256("\n".join(d.key for d in batch).encode()).hexdigest())

    def send(self, prepared: object) -> None:
        assert isinstance(prepared, Request)
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            "User-Agent": "OpenCDP-Webhook/1",
            "Idempotency-Key": prepared.key,
            SIGNATURE_HEADER: signature(self.config.secret.get_secret_value(), int(time.time()), prepared.body),
        }
        http.post(self.http, self.config.url, allow_private=self.config.allow_private, content=prepared.body,
                  headers=headers, what=f"webhook {self.config.name}")  # fmt: skip

    def check(self) -> None:
        pin(self.config.url, allow_private=self.config.allow_private)

    def close(self) -> None:
        self.http.close()
