"""The SQL each engine runs, pinned in golden files so that a change in it (ours or sqlglot's) shows in review.

Run ``pytest tests/store/test_golden_sql.py --update-golden`` to rewrite them after an intended change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from opencdp.activation import outbox, route
from opencdp.govern.plans import violations_query
from opencdp.model.audiences import AudienceDefinition
from opencdp.model.plans import TrackingPlan
from opencdp.model.profiles import SHIPPED_TRAITS, ProfileSettings
from opencdp.profiles import observe
from opencdp.profiles.golden import golden
from opencdp.profiles.traits import check, compiled
from opencdp.segments import compile as audiences
from opencdp.store import raw_log, schema
from opencdp.store.duckdb_engine import DuckDBEngine
from opencdp.store.engine import _transpile
from opencdp.store.postgres_engine import PostgresEngine

GOLDEN = Path(__file__).parent.parent / "golden" / "sql"

SAMPLE_PLAN = TrackingPlan.model_validate(
    {
        "events": {
            "Order Completed": {
                "type": "object",
                "required": ["revenue"],
                "properties": {
                    "revenue": {"type": "number", "minimum": 0},
                    "currency": {"type": "string", "enum": ["EUR", "USD"], "pattern": "^[A-Z]{3}$"},
                    "coupon": {"type": ["string", "null"], "maxLength": 20},
                },
                "additionalProperties": False,
            }
        },
        "identify": {"type": "object", "properties": {"email": {"type": "string"}}},
        "unplanned": "block",
    }
)
GOVERN = violations_query({"src_1": SAMPLE_PLAN}, "SELECT seq, source_id, type, event, message FROM raw_events")
assert GOVERN is not None

PROFILE_SETTINGS = ProfileSettings(rates={"EUR": 1.1}, survivorship={"plan": {"order": ["most_frequent"]}})
PROFILES = [
    *observe.observations("_pf_batch"),
    *observe.activity("_pf_batch"),
    golden(PROFILE_SETTINGS, "_pf_members", {}),
    compiled(
        check(list(SHIPPED_TRAITS)), PROFILE_SETTINGS, "_pf_live", "_pf_members", datetime(2026, 1, 1, tzinfo=UTC)
    ),
]

FIVE = AudienceDefinition.model_validate({"name": "five", "where": {"all": [
    {"trait": "ltv_net", "op": ">", "value": 100},
    {"trait": "city", "op": "in", "value": ["Berlin", "Paris"]},
    {"event": "Product Added", "at_least": 2, "within_days": 30,
     "where": [{"property": "category", "op": "=", "value": "tools"}]},
    {"not": {"event": "Order Completed", "within_days": 7}},
    {"over": "orders", "at_least": 3},
    {"identity": "user_id"},
]}})  # fmt: skip
AUDIENCE_WS = audiences.Workspace(computed=check(list(SHIPPED_TRAITS)).types(), stored=frozenset(),
                                  identifier_types=frozenset(), audiences={})  # fmt: skip
AT = datetime(2026, 1, 1, tzinfo=UTC)
SEGMENTS = [
    audiences.compiled(FIVE, AUDIENCE_WS, audiences.tables({"category": "prop_category"}, golden=True), AT).counts(),
    audiences.compiled(FIVE, AUDIENCE_WS, audiences.Sources(base="_sg_base", activity="_sg_activity",
                                                            nodes="_sg_nodes", traits="_sg_traits"), AT).members(),
    # the real-time path: every audience not defined by another, for a batch's candidates, in one query
    audiences.compiled_together(
        [FIVE, AudienceDefinition.model_validate({"name": "repeat", "where": {"event": "Order Completed",
                                                                             "at_least": 2, "at_most": 5}})],
        AUDIENCE_WS, audiences.Sources(base="_sg_base", activity="_pf_history", nodes="_pf_members",
                                       traits="_sg_traits"), AT),
]  # fmt: skip

ACTIVATION = [route.first_sync_sql(), route.changes_sql(), route.events_sql(), route.routed_sizes_sql(),
              outbox.claim_sql(2)]  # fmt: skip

STAGES = {
    "activation_route_and_claim": {"duckdb": ACTIVATION, "postgres": ACTIVATION},
    "profiles_shipped_traits": {"duckdb": PROFILES, "postgres": PROFILES},
    "govern_sample_plan": {"duckdb": [GOVERN], "postgres": [GOVERN]},
    "segments_five_conditions": {"duckdb": SEGMENTS, "postgres": SEGMENTS},
    "schema": {
        "duckdb": [*schema.TABLES, *schema.LOOKUP_INDEXES, *schema.VIEWS],
        "postgres": [*schema.TABLES, *schema.INDEXES, *schema.LOOKUP_INDEXES, *schema.VIEWS],
    },
    "raw_log_load": {
        "duckdb": [*raw_log.STAGE_DDL, raw_log.INSERT_ACCEPTED, raw_log.INSERT_REJECTED, raw_log.INSERT_LOAD_STATS],
        "postgres": [*raw_log.STAGE_DDL, raw_log.INSERT_ACCEPTED, raw_log.INSERT_REJECTED, raw_log.INSERT_LOAD_STATS],
    },
}


@pytest.mark.parametrize("engine_cls", [DuckDBEngine, PostgresEngine], ids=["duckdb", "postgres"])
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_rendered_sql_matches_golden(stage: str, engine_cls: type, update_golden: bool) -> None:
    dialect = engine_cls.capabilities.dialect
    rendered = ";\n\n".join(_transpile(sql.strip(), dialect) for sql in STAGES[stage][dialect]) + ";\n"
    path = GOLDEN / f"{stage}.{dialect}.sql"
    if update_golden:
        path.write_text(rendered)
    assert path.exists(), f"{path} is missing: run with --update-golden to create it"
    assert rendered == path.read_text(), f"{path} differs: rerun with --update-golden if the change is intended"
