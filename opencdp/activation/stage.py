"""Activation as the processor and the admin surface see it: route each cycle, deliver in the background, and
manage destinations (add, list, test, status, replay, confirm, drain)."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from opencdp.activation import outbox
from opencdp.activation.delivery import Deliverer
from opencdp.activation.destinations import DestinationStore, checked
from opencdp.activation.network import UnresolvableHost
from opencdp.activation.plugins import build
from opencdp.activation.plugins.base import Delivery, Outcome, classify
from opencdp.activation.route import Routed, route
from opencdp.errors import Rejected, Terminal, Transient
from opencdp.model.destinations import Destination
from opencdp.store.engine import Engine
from opencdp.store.sealing import Sealer

log = logging.getLogger("opencdp.activation")


class Activation:
    def __init__(self, engine: Engine, sealer: Sealer, *, retention: timedelta | None = None) -> None:
        self.engine = engine
        self.store = DestinationStore(engine, sealer)
        sealed = self.store.seal_plain()
        if sealed:
            log.info("activation: sealed the secrets of %d destinations stored before secrets were sealed", sealed)
        self.deliverer = Deliverer(engine, self.store, retention=retention)
        self._configs: tuple[dict[str, int], dict[str, Destination]] = ({}, {})

    def _destinations(self) -> dict[str, Destination]:
        versions = self.store.versions()
        if versions != self._configs[0]:
            self._configs = (versions, {n: d for n, (d, _) in self.store.all().items()})
        return self._configs[1]

    def route(self) -> Routed:
        """Route audience changes and events into the outboxes (the processor calls this each cycle, after
        profiles and segments), and wake the deliverer when there is something to send."""
        routed = route(self.engine, self._destinations)
        if routed.total:
            self.deliverer.wake()
        return routed

    # -- destinations -----------------------------------------------------------------------------------------
    def add(self, doc: object, *, replace: bool = False) -> dict[str, Any]:
        """Check and save a destination; an unreachable host or a private address is a clear error here."""
        destination = checked(doc)
        self._check_traits(destination)
        try:
            plugin = build(destination)
            try:
                plugin.check()
            finally:
                plugin.close()
        except (Transient, Terminal) as exc:  # unresolvable host, unusable directory, template that won't parse
            raise Rejected(exc.message, code=exc.code, status=422) from None
        version = self.store.put(destination, replace=replace)
        self.deliverer.refresh_soon()
        return {"name": destination.name, "kind": destination.kind, "version": version}

    def _check_traits(self, destination: Destination) -> None:
        if not destination.traits:
            return
        known = set(self.engine.fetch_arrow("SELECT * FROM profiles LIMIT 0").column_names)
        marks = ", ".join("?" * len(destination.traits))
        known |= {r[0] for r in self.engine.fetch_all(  # custom traits some profile has
            f"SELECT DISTINCT trait FROM profile_traits WHERE trait IN ({marks})", destination.traits)}  # fmt: skip
        unknown = [t for t in destination.traits if t not in known]
        if unknown:
            raise Rejected(f"unknown traits: {', '.join(unknown)} (neither a column of the profiles view nor a "
                           "custom trait of any profile)", code="unknown_trait", status=422)  # fmt: skip

    def listing(self) -> list[dict[str, Any]]:
        return [{**d.public(), "version": v} for d, v in self.store.all().values()]

    def test(self, name: str) -> dict[str, Any]:
        """Send one test delivery (``{"type": "test"}``) right now, outside the outbox; says how it went."""
        destination = self.store.get(name)
        plugin = build(destination)
        key = f"{name}:test:{uuid.uuid4().hex}"
        payload: dict[str, Any] = {
            "type": "test",
            "destination": name,
            "idempotency_key": key,
            "profile_id": None,
            "traits": {},
            "identities": [],
            "happened_at": datetime.now(UTC).isoformat(),
        }
        try:
            plugin.check()
            plugin.send(plugin.prepare([Delivery(0, key, payload)]))
            outcome = Outcome("delivered")
        except UnresolvableHost as exc:
            raise Rejected(exc.message, code=exc.code, status=422) from None
        except Exception as exc:
            outcome = classify(exc)
        finally:
            plugin.close()
        return {"destination": name, "outcome": outcome.status, "error": outcome.error}

    def status(self) -> list[dict[str, Any]]:
        configs = self.store.all()
        rows = outbox.status(self.engine, list(configs))
        for row in rows:
            config = configs[row["destination"]][0]
            row.update(kind=config.kind, enabled=config.enabled)
        return rows

    def deliveries(self, name: str, state: str | None, limit: int) -> list[dict[str, Any]]:
        self.store.get(name)
        return outbox.deliveries(self.engine, name, state, limit)

    def replay(self, name: str, *, dead: bool = True, since: datetime | None = None,
               until: datetime | None = None) -> dict[str, Any]:  # fmt: skip
        self.store.get(name)
        n = self.deliverer.call(lambda e: outbox.replay(e, name, dead=dead, since=since, until=until))
        self.deliverer.wake()
        return {"destination": name, "replayed": n}

    def confirm(self, name: str, *, discard: bool = False) -> dict[str, Any]:
        self.store.get(name)
        n = self.deliverer.call(lambda e: outbox.confirm(e, name, discard=discard))
        self.deliverer.wake()
        return {"destination": name, "discarded" if discard else "confirmed": n}

    def drain(self, wait_seconds: float = 0.0) -> dict[str, Any]:
        return self.deliverer.drain(wait_seconds)

    def enqueue(self, destination: str, key: str, profile_id: str | None, message: dict[str, Any]) -> int:
        """Queue a message (a journey's email, say) for ``destination``; ``key`` makes it idempotent: the same
        key queued twice is one delivery. Call it from the processor's thread, like :meth:`route`."""
        self.store.get(destination)
        now = datetime.now(UTC)
        with self.engine.transaction():
            row = self.engine.fetch_one("SELECT coalesce(max(delivery_id), 0) + 1 FROM outbox")
            delivery_id = int(row[0]) if row else 1
            added = self.engine.execute_changed(
                """INSERT INTO outbox (delivery_id, destination, idempotency_key, kind, audience, change, cause,
                       profile_id, gseq, payload, happened_at, state, attempts, next_at, created_at, delivered_at,
                       last_error, replays)
                   SELECT ?, ?, ?, 'message', NULL, NULL, NULL, ?, NULL, ?, ?, 'pending', 0, ?, ?, NULL, NULL, 0
                   WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE destination = ? AND idempotency_key = ?)""",
                (delivery_id, destination, key, profile_id, json.dumps(message), now, now, now, destination, key),
            )
        self.deliverer.wake()
        return delivery_id if added else 0

    def close(self) -> None:
        self.deliverer.stop()
