"""PostgreSQL table: audience members and their chosen traits, kept in step with upserts (entries) and deletes
(exits), one transaction per batch. Upserts make a batch sent twice (after a crash) harmless.

The connection itself is opened by ``opencdp.store.pg_target`` (only ``store`` may use a database driver), to
the address the SSRF guard checked (libpq's ``hostaddr``; the host name still names the server for TLS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from opencdp.activation.network import resolve
from opencdp.activation.plugins.base import Delivery
from opencdp.model.destinations import PostgresDestination
from opencdp.store.pg_target import PostgresTarget, target_host


@dataclass(frozen=True)
class Sync:
    traits: tuple[str, ...]
    upserts: list[tuple[object, ...]]
    deletes: list[tuple[str, str]]


class PostgresTable:
    def __init__(self, config: PostgresDestination) -> None:
        self.config = config

    def prepare(self, batch: Sequence[Delivery]) -> Sync:
        audience_changes = [d.payload for d in batch if d.payload.get("type") == "audience"]
        traits = self.config.traits or tuple(sorted({t for p in audience_changes for t in p.get("traits", {})}))
        upserts: list[tuple[object, ...]] = []
        deletes: list[tuple[str, str]] = []
        for p in audience_changes:
            if p["change"] == "entered":
                values = p.get("traits", {})
                upserts.append((p["audience"], p["profile_id"],
                                *(None if values.get(t) is None else str(values[t]) for t in traits)))  # fmt: skip
            else:
                deletes.append((p["audience"], p["profile_id"]))
        return Sync(tuple(traits), upserts, deletes)

    def _target(self) -> PostgresTarget:
        dsn = self.config.dsn.get_secret_value()
        host, port = target_host(dsn)
        address = resolve(host, port, allow_private=self.config.allow_private)
        return PostgresTarget(dsn, str(address), timeout=self.config.timeout_seconds)

    def send(self, prepared: object) -> None:
        assert isinstance(prepared, Sync)
        self._target().sync(self.config.table, prepared.traits, prepared.upserts, prepared.deletes,
                            datetime.now(UTC))  # fmt: skip

    def check(self) -> None:
        self._target()

    def close(self) -> None:
        pass
