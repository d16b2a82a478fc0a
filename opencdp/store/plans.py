"""Tracking plans in the engine: one per source, versioned (every save is a new version)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from opencdp.model.pii import PiiPolicy
from opencdp.model.plans import TrackingPlan
from opencdp.model.transforms import Transformations
from opencdp.store.engine import Engine


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


class TransformStore:
    """The transformation rules: one set for the workspace (each rule may name a source), versioned."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, rules: Transformations) -> int:
        with self.engine.transaction():
            row = self.engine.fetch_one("SELECT max(version) FROM transformations")
            version = int(row[0]) + 1 if row and row[0] is not None else 1
            self.engine.execute("DELETE FROM transformations")
            self.engine.execute(
                "INSERT INTO transformations (rules, version, updated_at) VALUES (?, ?, ?)",
                (rules.model_dump_json(by_alias=True), version, datetime.now(UTC)),
            )
        return version

    def get(self) -> tuple[Transformations, int]:
        row = self.engine.fetch_one("SELECT rules, version FROM transformations")
        return (Transformations.model_validate(json.loads(row[0])), int(row[1])) if row else (Transformations(), 0)


class PiiStore:
    """The PII policy (one document for the workspace, versioned) and the salt hashed values are keyed with."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, policy: PiiPolicy) -> int:
        with self.engine.transaction():
            row = self.engine.fetch_one("SELECT max(version) FROM pii_policy")
            version = int(row[0]) + 1 if row and row[0] is not None else 1
            self.engine.execute("DELETE FROM pii_policy")
            self.engine.execute(
                "INSERT INTO pii_policy (policy, version, updated_at) VALUES (?, ?, ?)",
                (policy.model_dump_json(), version, datetime.now(UTC)),
            )
        return version

    def get(self) -> tuple[PiiPolicy, int]:
        row = self.engine.fetch_one("SELECT policy, version FROM pii_policy")
        return (PiiPolicy.model_validate(json.loads(row[0])), int(row[1])) if row else (PiiPolicy(), 0)

    def salt(self) -> str:
        row = self.engine.fetch_one("SELECT value FROM _cdp_secrets WHERE name = 'pii_salt'")
        assert row is not None, "migrate() creates the salt"
        return str(row[0])
