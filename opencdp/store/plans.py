"""Documents in the engine, each versioned (every save is a new version): tracking plans (one per source), the
transformation rules, the PII policy, profile settings, trait definitions and the match model (one each for the
workspace), and audiences and journeys (one per name)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from opencdp.model.audiences import AudienceDefinition
from opencdp.model.journeys import JourneyDefinition
from opencdp.model.pii import PiiPolicy
from opencdp.model.plans import TrackingPlan
from opencdp.model.profiles import ProfileSettings, TraitDefinitions
from opencdp.model.transforms import Transformations
from opencdp.store.engine import Engine

N = TypeVar("N", bound=BaseModel)


class PlanStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, source_id: str, plan: TrackingPlan) -> int:
        """Save a source's plan; returns its new version (1 for the first)."""
        doc = plan.model_dump_json()
        with self.engine.transaction():
            row = self.engine.fetch_one("SELECT version FROM tracking_plans WHERE source_id = ?", (source_id,))
            version = int(row[0]) + 1 if row else 1
            self.engine.execute("DELETE FROM tracking_plans WHERE source_id = ?", (source_id,))
            self.engine.execute(
                "INSERT INTO tracking_plans (source_id, plan, version, updated_at) VALUES (?, ?, ?, ?)",
                (source_id, doc, version, datetime.now(UTC)),
            )
        return version

    def get(self, source_id: str) -> tuple[TrackingPlan, int] | None:
        row = self.engine.fetch_one("SELECT plan, version FROM tracking_plans WHERE source_id = ?", (source_id,))
        return (TrackingPlan.model_validate(json.loads(row[0])), int(row[1])) if row else None

    def all(self) -> dict[str, tuple[TrackingPlan, int]]:
        rows = self.engine.fetch_all("SELECT source_id, plan, version FROM tracking_plans")
        return {r[0]: (TrackingPlan.model_validate(json.loads(r[1])), int(r[2])) for r in rows}


class _WorkspaceDocument:
    """One JSON document for the workspace in ``table`` (its ``column``, ``version``, ``updated_at``): every save
    replaces it as the next version."""

    table = ""
    column = ""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _put(self, document: str) -> int:
        with self.engine.transaction():
            row = self.engine.fetch_one(f"SELECT max(version) FROM {self.table}")
            version = int(row[0]) + 1 if row and row[0] is not None else 1
            self.engine.execute(f"DELETE FROM {self.table}")
            self.engine.execute(
                f"INSERT INTO {self.table} ({self.column}, version, updated_at) VALUES (?, ?, ?)",
                (document, version, datetime.now(UTC)),
            )
        return version

    def _get(self) -> tuple[object, int] | None:
        row = self.engine.fetch_one(f"SELECT {self.column}, version FROM {self.table}")
        return (json.loads(row[0]), int(row[1])) if row else None


class TransformStore(_WorkspaceDocument):
    """The transformation rules: one set for the workspace (each rule may name a source), versioned."""

    table, column = "transformations", "rules"

    def put(self, rules: Transformations) -> int:
        return self._put(rules.model_dump_json(by_alias=True))

    def get(self) -> tuple[Transformations, int]:
        found = self._get()
        return (Transformations.model_validate(found[0]), found[1]) if found else (Transformations(), 0)


class PiiStore(_WorkspaceDocument):
    """The PII policy (one document for the workspace, versioned) and the salt hashed values are keyed with."""

    table, column = "pii_policy", "policy"

    def put(self, policy: PiiPolicy) -> int:
        return self._put(policy.model_dump_json())

    def get(self) -> tuple[PiiPolicy, int]:
        found = self._get()
        return (PiiPolicy.model_validate(found[0]), found[1]) if found else (PiiPolicy(), 0)

    def salt(self) -> str:
        row = self.engine.fetch_one("SELECT value FROM _cdp_secrets WHERE name = 'pii_salt'")
        assert row is not None, "migrate() creates the salt"
        return str(row[0])


class MatchModelStore(_WorkspaceDocument):
    """The trained match model (Splink's settings document) with its thresholds and what it was trained on:
    one document for the workspace, versioned (identity/train.py writes it, identity/score.py compiles it)."""

    table, column = "identity_match_model", "model"

    def put(self, document: dict[str, Any]) -> int:
        return self._put(json.dumps(document))

    def get(self) -> tuple[dict[str, Any], int] | None:
        found = self._get()
        return (dict(found[0]), found[1]) if found and isinstance(found[0], dict) else None


class ProfileSettingsStore(_WorkspaceDocument):
    """The profile settings (workspace currency, rates, survivorship rules): one document, versioned."""

    table, column = "profile_settings", "settings"

    def put(self, settings: ProfileSettings) -> int:
        return self._put(settings.model_dump_json())

    def get(self) -> tuple[ProfileSettings, int]:
        found = self._get()
        return (ProfileSettings.model_validate(found[0]), found[1]) if found else (ProfileSettings(), 0)


class TraitStore(_WorkspaceDocument):
    """The workspace's own computed trait definitions (the shipped ones are not stored): one document, versioned."""

    table, column = "trait_definitions", "traits"

    def put(self, definitions: TraitDefinitions) -> int:
        return self._put(definitions.model_dump_json(exclude_defaults=True))

    def get(self) -> tuple[TraitDefinitions, int]:
        found = self._get()
        return (TraitDefinitions.model_validate(found[0]), found[1]) if found else (TraitDefinitions(), 0)


class _NamedDocuments(Generic[N]):
    """Documents saved by name in ``table`` (``name``, ``definition``, ``version``, ``created_at``, ``updated_at``),
    each versioned on its own."""

    table = ""
    model: type[N]

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, document: N) -> int:
        """Save (or replace) a document; returns its new version (1 for a new one)."""
        now = datetime.now(UTC)
        doc = document.model_dump_json(by_alias=True, exclude_defaults=True)
        name = str(getattr(document, "name"))  # noqa: B009 - every named document has one
        with self.engine.transaction():
            row = self.engine.fetch_one(f"SELECT version, created_at FROM {self.table} WHERE name = ?", (name,))
            version, created = (int(row[0]) + 1, row[1]) if row else (1, now)
            self.engine.execute(f"DELETE FROM {self.table} WHERE name = ?", (name,))
            self.engine.execute(
                f"INSERT INTO {self.table} (name, definition, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (name, doc, version, created, now),
            )
        return version

    def all(self) -> dict[str, tuple[N, int]]:
        rows = self.engine.fetch_all(f"SELECT name, definition, version FROM {self.table}")
        return {str(r[0]): (self.model.model_validate_json(r[1]), int(r[2])) for r in rows}

    def stamp(self) -> tuple[int, object]:
        """Changes whenever a document is saved or deleted (to know when cached documents are stale)."""
        row = self.engine.fetch_one(f"SELECT count(*), max(updated_at) FROM {self.table}")
        assert row is not None
        return int(row[0]), row[1]

    def delete(self, name: str) -> bool:
        with self.engine.transaction():
            found = self.engine.fetch_one(f"SELECT 1 FROM {self.table} WHERE name = ?", (name,)) is not None
            self.engine.execute(f"DELETE FROM {self.table} WHERE name = ?", (name,))
        return found


class AudienceStore(_NamedDocuments[AudienceDefinition]):
    """Saved audience definitions, one row each (with when each was last evaluated in full)."""

    table, model = "audiences", AudienceDefinition

    def evaluations(self) -> tuple[tuple[int, object], dict[str, tuple[datetime | None, datetime | None]]]:
        """Each audience's last full evaluation and last save by name, and the :meth:`stamp` they make, in one
        read (the segments stage needs both every micro-batch)."""
        rows = self.engine.fetch_all(f"SELECT name, evaluated_at, updated_at FROM {self.table}")
        return (len(rows), max((r[2] for r in rows), default=None)), {str(r[0]): (r[1], r[2]) for r in rows}


class JourneyStore(_NamedDocuments[JourneyDefinition]):
    """Saved journeys, one row each."""

    table, model = "journeys", JourneyDefinition
