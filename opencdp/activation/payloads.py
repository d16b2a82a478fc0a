"""The JSON document each delivery carries, assembled for a claimed set of outbox rows with three set-based
reads (traits, identities, event messages), never one query per row.

Every payload has ``type`` (``audience``, ``event`` or ``message``), ``destination``, ``idempotency_key``,
``profile_id``, ``traits`` (the profile's traits as they are at delivery time, or the destination's chosen
ones) and ``identities``; an audience change adds ``audience``, ``change`` (entered, exited), ``cause`` and
``happened_at``; an event adds ``event`` and the governed ``message``; a journey's message adds its own
``message`` document.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from opencdp.model.profiles import GOLDEN_NAMES, IDENTIFIER_TYPES, PROFILE_KEY
from opencdp.store.engine import Engine

NOT_COMPUTED = frozenset({"computed_at", IDENTIFIER_TYPES, PROFILE_KEY, *GOLDEN_NAMES})
"""Columns of ``profile_computed`` that are not computed traits (golden traits come from ``profile_traits``)."""

ROW = ("delivery_id", "destination", "idempotency_key", "kind", "audience", "change", "cause", "profile_id", "gseq",
       "payload", "happened_at", "attempts", "replays")  # fmt: skip


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _in(n: int) -> str:
    return ", ".join("?" * n)


def profile_traits(engine: Engine, profile_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Golden, custom and computed traits of a few profiles, read from their tables by id (not through the
    ``profiles`` view, whose RFM scores rank every profile against all others on each read)."""
    if not profile_ids:
        return {}
    marks, ids = _in(len(profile_ids)), tuple(profile_ids)
    found: dict[str, dict[str, Any]] = {}
    for profile_id, trait, value in engine.fetch_all(
        f"SELECT profile_id, trait, max(value) FROM profile_traits WHERE profile_id IN ({marks}) "
        "GROUP BY profile_id, trait ORDER BY profile_id, trait",
        ids,
    ):
        found.setdefault(profile_id, {})[trait] = value
    computed = engine.fetch_arrow(f"SELECT * FROM profile_computed WHERE profile_id IN ({marks})", ids)
    for row in computed.to_pylist():
        traits = found.setdefault(row.pop("profile_id"), {})
        traits.update({k: jsonable(v) for k, v in row.items() if k not in NOT_COMPUTED})
    return found


def identities(engine: Engine, profile_ids: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    if not profile_ids:
        return {}
    found: dict[str, list[dict[str, str]]] = {}
    for profile_id, id_type, id_value in engine.fetch_all(
        f"""SELECT m.profile_id, n.id_type, n.id_value FROM identity_membership AS m
            JOIN identity_nodes AS n ON n.node_id = m.node_id
            WHERE m.profile_id IN ({_in(len(profile_ids))}) ORDER BY m.profile_id, n.id_type, n.id_value""",
        tuple(profile_ids),
    ):
        found.setdefault(profile_id, []).append({"type": id_type, "value": id_value})
    return found


def event_messages(engine: Engine, gseqs: Sequence[int]) -> dict[int, tuple[str, Any]]:
    if not gseqs:
        return {}
    rows = engine.fetch_all(f"SELECT gseq, event, message FROM governed WHERE gseq IN ({_in(len(gseqs))})",
                            tuple(gseqs))  # fmt: skip
    return {int(g): (name, json.loads(message)) for g, name, message in rows}


def assemble(engine: Engine, rows: Sequence[dict[str, Any]], chosen: dict[str, tuple[str, ...] | None]
             ) -> dict[int, dict[str, Any]]:  # fmt: skip
    """Each claimed row's payload (``chosen``: the traits each destination sends, None for all)."""
    profile_ids = sorted({r["profile_id"] for r in rows if r["profile_id"]})
    traits = profile_traits(engine, profile_ids)
    ids = identities(engine, profile_ids)
    events = event_messages(engine, sorted({int(r["gseq"]) for r in rows if r["gseq"] is not None}))
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        pid = r["profile_id"]
        wanted = chosen.get(r["destination"])
        all_traits = traits.get(pid, {}) if pid else {}
        doc: dict[str, Any] = {
            "type": r["kind"],
            "destination": r["destination"],
            "idempotency_key": r["idempotency_key"],
            "profile_id": pid,
            "traits": all_traits if wanted is None else {t: all_traits.get(t) for t in wanted},
            "identities": ids.get(pid, []) if pid else [],
            "happened_at": jsonable(r["happened_at"]),
        }
        if r["replays"]:
            doc["replay"] = int(r["replays"])
        if r["kind"] == "audience":
            doc.update(audience=r["audience"], change=r["change"], cause=r["cause"])
        elif r["kind"] == "event":
            name, message = events.get(int(r["gseq"]), (None, None))
            doc.update(event=name, message=message)
        else:
            doc["message"] = json.loads(r["payload"]) if r["payload"] else {}
        out[int(r["delivery_id"])] = doc
    return out
