"""Profile documents: the 360 view of many profiles at once (golden traits with their lineage, custom and
computed traits, identities, the latest timeline), read with four set-based queries and assembled per profile.

The admin API and the CLI read one profile this way; the real-time profile API keeps every live profile's
document in memory (api/profile_api.py) and refreshes those each micro-batch touched (docs/profiles.md).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pyarrow as pa

from opencdp.model.profiles import GOLDEN_NAMES
from opencdp.profiles.traits import Checked
from opencdp.store.engine import Engine

TIMELINE_PAGE = 20
MAX_TIMELINE_PAGE = 500
IDS = "_pv_ids"


def _iso(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _row(seq: int, kind: str, name: str | None, ts: object, source: str, amount: float | None,
         currency: str | None, props: object) -> dict[str, Any]:  # fmt: skip
    """One timeline row; its properties stay JSON text (``msgspec.Raw``), parsed only by a client that wants
    them, since building a read model of every profile spent most of its time parsing them."""
    raw = msgspec.Raw(props.encode()) if isinstance(props, str) else props
    return {"seq": seq, "kind": kind, "name": name, "at": _iso(ts), "source_id": source, "amount": amount,
            "currency": currency, "properties": raw}  # fmt: skip


def parsed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Timeline rows with their properties as Python values (for encoders that do not know ``msgspec.Raw``)."""
    return [
        {**r, "properties": json.loads(bytes(r["properties"]))} if isinstance(r["properties"], msgspec.Raw) else r
        for r in rows
    ]


def documents(engine: Engine, profile_ids: list[str] | None, checked: Checked, *,
              timeline: int = TIMELINE_PAGE) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The documents of ``profile_ids`` that are live (every live profile for None), each with both the plain
    and the lineage form of its golden traits (``traits`` / ``lineage``) and its latest ``timeline`` rows
    (none for 0). Runs on the caller's connection (temporary tables hold the ids)."""
    e = engine
    _fill(e, IDS, profile_ids)
    live = f"(SELECT DISTINCT i.profile_id FROM {IDS} AS i JOIN profiles_index AS p ON p.profile_id = i.profile_id)"
    names = [t.name for t in checked.traits]
    docs: dict[str, dict[str, Any]] = {}
    for row in e.fetch_all(
        f"SELECT l.profile_id, c.computed_at, {', '.join('c.' + n for n in names)} FROM {live} AS l "
        "LEFT JOIN profile_computed AS c ON c.profile_id = l.profile_id"
    ):
        docs[row[0]] = {
            "profile_id": row[0], "traits": {}, "custom_traits": {}, "lineage": {},
            "computed": {n: _iso(v) for n, v in zip(names, row[2:], strict=True)} if row[1] is not None else {},
            "computed_at": _iso(row[1]), "identities": [], "timeline": [],
        }  # fmt: skip
    for pid, trait, value, source_id, seq, observed_at, rule, origin, from_record in e.fetch_all(
        f"""SELECT t.profile_id, t.trait, t.value, t.source_id, t.seq, t.observed_at, t.rule, t.origin, t.from_record
        FROM profile_traits AS t JOIN {IDS} AS i ON i.profile_id = t.profile_id ORDER BY t.profile_id, t.trait"""
    ):
        doc = docs.get(pid)
        if doc is None:
            continue
        doc["traits" if trait in GOLDEN_NAMES else "custom_traits"][trait] = value
        doc["lineage"][trait] = {
            "value": value, "source_id": source_id, "seq": seq, "observed_at": _iso(observed_at), "rule": rule,
            "record_key" if from_record else "message_id": origin,
        }  # fmt: skip
    for pid, id_type, id_value in e.fetch_all(
        f"""SELECT m.profile_id, n.id_type, n.id_value FROM identity_membership AS m
        JOIN {IDS} AS i ON i.profile_id = m.profile_id JOIN identity_nodes AS n ON n.node_id = m.node_id
        ORDER BY m.profile_id, n.first_seq, n.node_id"""
    ):
        if pid in docs:
            docs[pid]["identities"].append({"type": id_type, "value": id_value})
    if timeline:
        for pid, rows in timelines(e, profile_ids, timeline).items():
            if pid in docs:
                docs[pid]["timeline"] = rows
    return docs


def _fill(engine: Engine, table: str, profile_ids: list[str] | None) -> None:
    engine.scratch({table: "profile_id VARCHAR"})
    if profile_ids is None:
        engine.execute(f"INSERT INTO {table} SELECT profile_id FROM profiles_index")
    elif profile_ids:
        engine.append(table, pa.table({"profile_id": pa.array(profile_ids, pa.string())}))


def timelines(engine: Engine, profile_ids: list[str] | None, limit: int) -> dict[str, list[dict[str, Any]]]:
    """The latest ``limit`` timeline rows of each profile (every live one for None), latest first."""
    _fill(engine, "_pv_timeline", profile_ids)
    out: dict[str, list[dict[str, Any]]] = {}
    for pid, *cells in engine.fetch_all(
        f"""SELECT profile_id, seq, kind, name, ts, source_id, amount, currency, props FROM (
            SELECT m.profile_id, a.seq, a.kind, a.name, a.ts, a.source_id, a.amount, a.currency, a.props,
                   row_number() OVER (PARTITION BY m.profile_id ORDER BY a.seq DESC) AS rank
            FROM activity AS a JOIN identity_membership AS m ON m.node_id = a.node_id
            JOIN _pv_timeline AS i ON i.profile_id = m.profile_id) AS r
        WHERE rank <= {int(limit)} ORDER BY profile_id, seq DESC"""
    ):
        out.setdefault(pid, []).append(_row(*cells))
    return out


def new_rows(engine: Engine, table: str) -> dict[str, list[dict[str, Any]]]:
    """The rows of ``table`` (activity rows not yet in a cached timeline) by their profile now, latest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for pid, *cells in engine.fetch_all(
        f"""SELECT m.profile_id, a.seq, a.kind, a.name, a.ts, a.source_id, a.amount, a.currency, a.props
        FROM {table} AS a JOIN identity_membership AS m ON m.node_id = a.node_id ORDER BY m.profile_id, a.seq DESC"""
    ):
        out.setdefault(pid, []).append(_row(*cells))
    return out


def timeline_page(engine: Engine, profile_id: str, limit: int, before: int) -> list[dict[str, Any]]:
    """Timeline rows of a profile received before ``before`` (a ``seq``), latest first."""
    return [
        _row(*row)
        for row in engine.fetch_all(
            f"""SELECT a.seq, a.kind, a.name, a.ts, a.source_id, a.amount, a.currency, a.props
            FROM activity AS a JOIN identity_membership AS m ON m.node_id = a.node_id
            WHERE m.profile_id = ? AND a.seq < ? ORDER BY a.seq DESC LIMIT {int(limit)}""",
            (profile_id, before),
        )
    ]


def shaped(doc: dict[str, Any], *, lineage: bool, limit: int) -> dict[str, Any]:
    """A document as the APIs answer it: golden traits plain or with lineage, ``limit`` timeline rows and the
    ``seq`` to page on from (``timeline_next``) when there may be more."""
    golden = {k: doc["lineage"][k] for k in doc["traits"]} if lineage else doc["traits"]
    custom = {k: doc["lineage"][k] for k in doc["custom_traits"]} if lineage else doc["custom_traits"]
    rows = doc["timeline"][:limit]
    return {
        "profile_id": doc["profile_id"], "traits": golden, "custom_traits": custom, "computed": doc["computed"],
        "computed_at": doc["computed_at"], "identities": doc["identities"], "timeline": rows,
        "timeline_next": rows[-1]["seq"] if len(rows) == limit and rows else None,
    }  # fmt: skip


def profile_view(engine: Engine, profile_id: str, checked: Checked, *, lineage: bool, limit: int = TIMELINE_PAGE,
                 before: int | None = None) -> dict[str, Any]:  # fmt: skip
    """One profile's 360 view (``before``: the ``seq`` to page the timeline back from, ``timeline_next`` of the
    previous page)."""
    limit = max(1, min(limit, MAX_TIMELINE_PAGE))
    doc = documents(engine, [profile_id], checked, timeline=limit)[profile_id]
    if before is not None:
        doc["timeline"] = timeline_page(engine, profile_id, limit, before)
    view = shaped(doc, lineage=lineage, limit=limit)
    view["timeline"] = parsed(view["timeline"])
    return view
