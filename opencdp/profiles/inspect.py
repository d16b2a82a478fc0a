"""One profile's 360 view: golden traits (with their lineage), computed traits, identities and a page of its
timeline. Read-only queries over the profile tables (docs/profiles.md)."""

from __future__ import annotations

import json
from typing import Any

from opencdp.model.profiles import GOLDEN_NAMES
from opencdp.profiles.traits import Checked
from opencdp.store.engine import Engine

TIMELINE_PAGE = 20
MAX_TIMELINE_PAGE = 500


def _iso(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


def profile_view(
    engine: Engine, profile_id: str, checked: Checked, *, lineage: bool, limit: int = TIMELINE_PAGE,
    before: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The profile's traits, identities and timeline (latest received first; ``before``: the ``seq`` to page
    back from, ``timeline_next`` of the previous page)."""
    traits: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for trait, value, source_id, seq, observed_at, rule, message_id, key in engine.fetch_all(
        """SELECT t.trait, t.value, t.source_id, t.seq, t.observed_at, t.rule, r.message_id,
                  json_extract_string(r.message, '$.key')
        FROM profile_traits AS t LEFT JOIN raw_events AS r ON r.seq = t.seq
        WHERE t.profile_id = ? ORDER BY t.trait""",
        (profile_id,),
    ):
        into = traits if trait in GOLDEN_NAMES else custom
        if lineage:
            into[trait] = {
                "value": value, "source_id": source_id, "seq": seq, "observed_at": _iso(observed_at),
                "rule": rule, "record_key" if key else "message_id": key or message_id,
            }  # fmt: skip
        else:
            into[trait] = value
    names = [t.name for t in checked.traits]
    row = engine.fetch_one(f"SELECT computed_at, {', '.join(names)} FROM profile_computed WHERE profile_id = ?",
                           (profile_id,))  # fmt: skip
    computed = {n: _iso(v) for n, v in zip(names, row[1:], strict=True)} if row else {}
    identities = [
        {"type": t, "value": v}
        for t, v in engine.fetch_all(
            """SELECT n.id_type, n.id_value FROM identity_membership AS m
            JOIN identity_nodes AS n ON n.node_id = m.node_id WHERE m.profile_id = ? ORDER BY n.first_seq""",
            (profile_id,),
        )
    ]
    limit = max(1, min(limit, MAX_TIMELINE_PAGE))
    timeline = [
        {
            "seq": seq,
            "kind": kind,
            "name": name,
            "at": _iso(ts),
            "source_id": source,
            "amount": amount,
            "currency": currency,
            "properties": json.loads(props) if isinstance(props, str) else props,
        }
        for seq, kind, name, ts, source, amount, currency, props in engine.fetch_all(
            f"""SELECT a.seq, a.kind, a.name, a.ts, a.source_id, a.amount, a.currency, a.props
            FROM activity AS a JOIN identity_membership AS m ON m.node_id = a.node_id
            WHERE m.profile_id = ? {"AND a.seq < ?" if before is not None else ""}
            ORDER BY a.seq DESC LIMIT {int(limit)}""",
            (profile_id, before) if before is not None else (profile_id,),
        )
    ]
    return {
        "profile_id": profile_id,
        "traits": traits,
        "custom_traits": custom,
        "computed": computed,
        "computed_at": _iso(row[0]) if row else None,
        "identities": identities,
        "timeline": timeline,
        "timeline_next": timeline[-1]["seq"] if len(timeline) == limit else None,
    }
