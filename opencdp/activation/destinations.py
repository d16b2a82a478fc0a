"""Destination documents in the engine (``destinations``), and the streams each one reads
(``destination_offsets``: ``audience:<name>`` and ``event:<name>`` rows, each with how far it has read)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr, ValidationError

from opencdp.errors import Rejected
from opencdp.model.destinations import Destination, dump_destination, parse_destination
from opencdp.store.engine import Engine
from opencdp.store.sealing import Sealer, is_sealed


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def checked(doc: object) -> Destination:
    """A destination document, or :class:`Rejected` saying what is wrong with it."""
    try:
        return parse_destination(doc)
    except ValidationError as exc:
        raise Rejected(first_error(exc), code="invalid_destination", status=422) from None


def streams(destination: Destination) -> list[str]:
    return [f"audience:{a}" for a in destination.audiences] + [f"event:{e}" for e in destination.events]


class DestinationStore:
    def __init__(self, engine: Engine, sealer: Sealer) -> None:
        self.engine = engine
        self.sealer = sealer

    def put(self, destination: Destination, *, replace: bool = False) -> int:
        """Save a destination (a new version); its subscriptions start reading: an audience from its current
        members (the first sync), an event name from the next event governed."""
        e = self.engine
        now = datetime.now(UTC)
        with e.transaction():
            row = e.fetch_one("SELECT version, created_at FROM destinations WHERE name = ?", (destination.name,))
            if row is not None and not replace:
                raise Rejected(f"a destination named {destination.name!r} exists (replace it to change it)",
                               code="destination_exists", status=409)  # fmt: skip
            version = int(row[0]) + 1 if row else 1
            e.execute("DELETE FROM destinations WHERE name = ?", (destination.name,))
            e.execute(
                "INSERT INTO destinations (name, kind, config, version, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (destination.name, destination.kind, dump_destination(destination, self.sealer.seal), version,
                 row[1] if row else now, now),
            )  # fmt: skip
            wanted = streams(destination)
            have = {r[0] for r in e.fetch_all("SELECT stream FROM destination_offsets WHERE destination = ?",
                                              (destination.name,))}  # fmt: skip
            for stream in have - set(wanted):
                e.execute("DELETE FROM destination_offsets WHERE destination = ? AND stream = ?",
                          (destination.name, stream))  # fmt: skip
            gseq = e.fetch_one("SELECT coalesce(max(gseq), 0) FROM governance")
            for stream in wanted:
                if stream not in have:
                    upto = gseq[0] if gseq and stream.startswith("event:") else None  # events: from now on
                    e.execute("INSERT INTO destination_offsets (destination, stream, upto) VALUES (?, ?, ?)",
                              (destination.name, stream, upto))  # fmt: skip
        return version

    def get(self, name: str) -> Destination:
        row = self.engine.fetch_one("SELECT config FROM destinations WHERE name = ?", (name,))
        if row is None:
            raise Rejected(f"no destination is named {name!r}", code="unknown_destination", status=404)
        return self._parsed(row[0])

    def all(self) -> dict[str, tuple[Destination, int]]:
        rows = self.engine.fetch_all("SELECT name, config, version FROM destinations ORDER BY name")
        return {r[0]: (self._parsed(r[1]), int(r[2])) for r in rows}

    def _parsed(self, config: str) -> Destination:
        return self._opened(json.loads(config))

    def _opened(self, stored: dict[str, Any]) -> Destination:
        return parse_destination(self.sealer.open_all(stored))

    def seal_plain(self) -> int:
        """Seal the secrets of destinations saved before secrets were sealed (and check that the key opens the
        others); returns how many it sealed."""
        sealed = 0
        with self.engine.transaction():
            for name, config in self.engine.fetch_all("SELECT name, config FROM destinations"):
                stored = json.loads(config)
                destination = self._opened(stored)
                secrets = [k for k, v in destination if isinstance(v, SecretStr)]
                if any(not is_sealed(stored.get(k)) for k in secrets):
                    self.engine.execute("UPDATE destinations SET config = ? WHERE name = ?",
                                        (dump_destination(destination, self.sealer.seal), name))  # fmt: skip
                    sealed += 1
        return sealed

    def versions(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self.engine.fetch_all("SELECT name, version FROM destinations")}
