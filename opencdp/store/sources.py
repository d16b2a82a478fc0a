"""Source registry: create, list, disable/enable and rotate write keys."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from opencdp.errors import Rejected
from opencdp.model.sources import Source, SourceKind, SourceLimits
from opencdp.store.engine import Engine

_COLUMNS = "source_id, name, kind, write_key, enabled, limits, created_at, updated_at"


def new_write_key() -> str:
    return "wk_" + secrets.token_urlsafe(24)


def _row_to_source(row: tuple[Any, ...]) -> Source:
    limits = row[5] if isinstance(row[5], str) else SourceLimits.model_validate(row[5]).model_dump_json()
    return Source(
        source_id=row[0],
        name=row[1],
        kind=row[2],
        write_key=row[3],
        enabled=bool(row[4]),
        limits=SourceLimits.model_validate_json(limits),
        created_at=row[6],
        updated_at=row[7],
    )


class SourceRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, kind: SourceKind = "http", limits: SourceLimits | None = None) -> Source:
        name = name.strip()
        if not name or len(name) > 100:
            raise Rejected("a source name must be 1-100 characters", code="invalid_source_name")
        if self.engine.fetch_one("SELECT 1 FROM sources WHERE name = ?", (name,)):
            raise Rejected(f"a source named {name!r} already exists", code="source_exists", status=409)
        now = datetime.now(UTC)
        source = Source(
            source_id="src_" + secrets.token_hex(8),
            name=name,
            kind=kind,
            write_key=new_write_key(),
            enabled=True,
            limits=limits or SourceLimits.for_kind(kind),
            created_at=now,
            updated_at=now,
        )
        self.engine.execute(
            f"INSERT INTO sources ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                source.source_id,
                source.name,
                source.kind,
                source.write_key,
                True,
                source.limits.model_dump_json(),
                now,
                now,
            ),
        )
        return source

    def list(self) -> list[Source]:
        rows = self.engine.fetch_all(f"SELECT {_COLUMNS} FROM sources ORDER BY created_at, name")
        return [_row_to_source(r) for r in rows]

    def get(self, ref: str) -> Source:
        """A source by id or name."""
        row = self.engine.fetch_one(f"SELECT {_COLUMNS} FROM sources WHERE source_id = ? OR name = ?", (ref, ref))
        if row is None:
            raise Rejected(f"no source {ref!r}", code="source_not_found", status=404)
        return _row_to_source(row)

    def set_enabled(self, ref: str, enabled: bool) -> Source:
        source = self.get(ref)
        self.engine.execute(
            "UPDATE sources SET enabled = ?, updated_at = ? WHERE source_id = ?",
            (enabled, datetime.now(UTC), source.source_id),
        )
        return self.get(source.source_id)

    def rotate_key(self, ref: str) -> Source:
        """Give the source a new write key; the old one stops working at once."""
        source = self.get(ref)
        self.engine.execute(
            "UPDATE sources SET write_key = ?, updated_at = ? WHERE source_id = ?",
            (new_write_key(), datetime.now(UTC), source.source_id),
        )
        return self.get(source.source_id)

    def set_limits(self, ref: str, limits: SourceLimits) -> Source:
        source = self.get(ref)
        self.engine.execute(
            "UPDATE sources SET limits = ?, updated_at = ? WHERE source_id = ?",
            (limits.model_dump_json(), datetime.now(UTC), source.source_id),
        )
        return self.get(source.source_id)
