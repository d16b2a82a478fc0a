"""The one shape every destination plug-in has, and how an attempt's outcome is classified.

A plug-in ``prepare``s a batch of deliveries (builds the request, file, rows or emails: a payload it cannot
express is a :class:`~opencdp.errors.Terminal` error) and ``send``s it. ``send`` returns only once the peer has
acknowledged everything; it raises from the error taxonomy otherwise: :class:`~opencdp.errors.Transient`
(timeouts, connection errors, 5xx, 408, 429 with its Retry-After) is retried with backoff,
:class:`~opencdp.errors.Rejected` and :class:`~opencdp.errors.Terminal` (other 4xx, a refused recipient, a bad
configuration) go to the dead letters. :func:`classify` turns either into an :class:`Outcome`.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from opencdp.errors import OpenCDPError, Terminal, Transient


@dataclass(frozen=True)
class Delivery:
    """One row of a destination's outbox, with its payload: a general JSON document (an audience change, an
    event, or a journey's message), each carrying the idempotency key a receiver can deduplicate on."""

    delivery_id: int
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    status: Literal["delivered", "transient", "permanent"]
    error: str | None = None
    retry_after: float | None = None
    """Seconds the peer asked us to wait (Retry-After), if it did."""


class Plugin(Protocol):
    """A destination kind. One instance per destination; ``prepare`` and ``send`` run on that destination's
    own worker threads (several at once, up to its ``concurrency``), never on the engine's."""

    def prepare(self, batch: Sequence[Delivery]) -> object:
        """What ``send`` will send for ``batch`` (no I/O)."""
        ...

    def send(self, prepared: object) -> None:
        """Send, returning once the peer acknowledged it; raises Transient, Rejected or Terminal."""
        ...

    def check(self) -> None:
        """Raise a clear error when the destination cannot work as configured (``destinations add|test``)."""
        ...

    def close(self) -> None: ...


class DeliveryFailed(Transient):
    """The peer could not take the delivery now: retried with backoff."""

    code = "delivery_failed"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=int(retry_after or 0))
        self.wait = retry_after


class DeliveryRefused(Terminal):
    """The peer refused the delivery for good: a dead letter."""

    code = "delivery_refused"


class Unauthorised(DeliveryRefused):
    """The peer did not take the credentials (401): a dead letter, unless the plug-in can renew them."""

    code = "unauthorised"


def classify(exc: BaseException) -> Outcome:
    """Delivered is the absence of an exception; this sorts the exceptions."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, DeliveryFailed):
        return Outcome("transient", message, exc.wait)
    if isinstance(exc, Transient):
        return Outcome("transient", message)
    if isinstance(exc, OpenCDPError):
        return Outcome("permanent", message)
    # A failure we did not anticipate (a bug, an odd peer): retried, and dead-lettered after max_attempts, so
    # no change is lost and none is retried forever.
    return Outcome("transient", f"{type(exc).__name__}: {message}")


def retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def raise_for_status(status: int, headers: Mapping[str, str], what: str) -> None:
    """Sort an HTTP answer: 2xx returns; 408, 429 and 5xx are transient (429/503 with their Retry-After);
    redirects (never followed: they could point anywhere) and other 4xx are permanent."""
    if 200 <= status < 300:
        return
    if status in (408, 429) or status >= 500:
        raise DeliveryFailed(f"{what} answered {status}", retry_after=retry_after(headers))
    if 300 <= status < 400:
        raise DeliveryRefused(f"{what} answered {status} (redirects are not followed)")
    if status == 401:
        raise Unauthorised(f"{what} answered 401 (credentials not accepted)")
    raise DeliveryRefused(f"{what} answered {status}")
