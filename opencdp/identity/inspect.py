"""What operators ask of the identity graph: why a profile is what it is (explain), and how the graph is
doing (health). Read-only queries over the identity tables (docs/identity.md)."""

from __future__ import annotations

from opencdp.identity.extract import per_type
from opencdp.identity.matching import Model, load_model
from opencdp.identity.score import compile_model
from opencdp.model.identity import IDENTIFIER_TYPES, canonical_ref, identifier_key
from opencdp.model.matching import FEATURES
from opencdp.store.engine import Engine

_BY_REF = identifier_key("?")
"""An identifier's lookup key from a ``type:value`` parameter."""

GIANT_PROFILE = 1_000
"""A profile with more identifiers than this is reported as a forming giant component by ``health``."""


def resolve_profile(engine: Engine, ref: str) -> str | None:
    """The current profile of ``ref``: a profile id (or one a merge absorbed), or an identifier ``type:value``."""
    ref = canonical_ref(ref)
    row = engine.fetch_one(
        f"""SELECT coalesce(
            (SELECT profile_id FROM profiles_index WHERE profile_id = ?),
            (SELECT profile_id FROM profile_aliases WHERE alias = ?),
            (SELECT m.profile_id FROM identity_nodes AS n JOIN identity_membership AS m ON m.node_id = n.node_id
             WHERE n.id_key = {_BY_REF}))""",
        (ref, ref, ref),
    )
    return None if row is None or row[0] is None else str(row[0])


def node_of(engine: Engine, ref: str) -> tuple[int, str] | None:
    """The identifier node and its profile for ``type:value``, or for ``record:KEY`` (a record's natural key or
    a message's messageId: its anchor identifier)."""
    if ref.startswith("record:"):
        row = engine.fetch_one(
            """SELECT mi.node_id, m.profile_id FROM record_profiles AS rp
            JOIN message_identities AS mi ON mi.seq = rp.seq JOIN identity_membership AS m ON m.node_id = mi.node_id
            WHERE rp.record_key = ? ORDER BY rp.seq DESC LIMIT 1""",
            (ref.removeprefix("record:"),),
        )
    else:
        row = engine.fetch_one(
            f"""SELECT n.node_id, m.profile_id FROM identity_nodes AS n
            JOIN identity_membership AS m ON m.node_id = n.node_id WHERE n.id_key = {_BY_REF}""",
            (ref,),
        )
    return None if row is None else (int(row[0]), str(row[1]))


def strongest_other(engine: Engine, profile_id: str, node_id: int) -> int | None:
    """The profile's strongest identifier other than ``node_id`` (what a split keeps apart from it)."""
    row = engine.fetch_one(
        f"""SELECT n.node_id FROM identity_nodes AS n JOIN identity_membership AS m ON m.node_id = n.node_id
        WHERE m.profile_id = ? AND n.node_id <> ?
        ORDER BY {per_type("n.id_type", "priority")}, n.first_seq, n.node_id LIMIT 1""",
        (profile_id, node_id),
    )
    return None if row is None else int(row[0])


def explain(engine: Engine, profile_id: str) -> dict[str, object]:
    """Why these identifiers are one person: each edge with the message that made it, the refused edges, the
    profiles merged into this one, and its events."""
    ids = engine.fetch_all(
        """SELECT n.id_type, n.id_value, n.first_seen, n.last_seen, n.messages FROM identity_nodes AS n
        JOIN identity_membership AS m ON m.node_id = n.node_id WHERE m.profile_id = ?
        ORDER BY n.first_seq, n.node_id""",
        (profile_id,),
    )
    edges = engine.fetch_all(
        """SELECT x.id_type || ':' || x.id_value, y.id_type || ':' || y.id_value, e.kind, r.message_id, r.source_id,
                  r.type, e.created_at, e.probability, e.a, e.b
        FROM identity_edges AS e
        JOIN identity_membership AS mx ON mx.node_id = e.a JOIN identity_membership AS my ON my.node_id = e.b
        JOIN identity_nodes AS x ON x.node_id = e.a JOIN identity_nodes AS y ON y.node_id = e.b
        LEFT JOIN raw_events AS r ON r.seq = e.seq
        WHERE mx.profile_id = ? AND my.profile_id = ? ORDER BY e.seq""",
        (profile_id, profile_id),
    )
    refused = engine.fetch_all(
        """SELECT CASE WHEN mx.profile_id = ? THEN x.id_type || ':' || x.id_value
                       ELSE y.id_type || ':' || y.id_value END,
                  CASE WHEN mx.profile_id = ? THEN y.id_type || ':' || y.id_value
                       ELSE x.id_type || ':' || x.id_value END,
                  c.reason, c.found_at, CASE WHEN mx.profile_id = ? THEN my.profile_id ELSE mx.profile_id END
        FROM identity_conflicts AS c
        JOIN identity_membership AS mx ON mx.node_id = c.a JOIN identity_membership AS my ON my.node_id = c.b
        JOIN identity_nodes AS x ON x.node_id = c.a JOIN identity_nodes AS y ON y.node_id = c.b
        WHERE mx.profile_id = ? OR my.profile_id = ? ORDER BY c.found_at""",
        (profile_id, profile_id, profile_id, profile_id, profile_id),
    )
    aliases = engine.fetch_all("SELECT alias, merged_at FROM profile_aliases WHERE profile_id = ? ORDER BY merged_at",
                               (profile_id,))  # fmt: skip
    events = engine.fetch_all(
        "SELECT kind, other_profile_id, happened_at FROM identity_events WHERE profile_id = ? OR other_profile_id = ? "
        "ORDER BY happened_at",
        (profile_id, profile_id),
    )
    return {
        "profile_id": profile_id,
        "identifiers": [
            {"type": t, "value": v, "first_seen": f, "last_seen": la, "messages": n} for t, v, f, la, n in ids
        ],
        "edges": [_edge(row, engine) for row in edges],
        "refused": [
            {"identifier": a, "kept_apart_from": b, "reason": r, "at": at, "other_profile_id": other}
            for a, b, r, at, other in refused
        ],
        "absorbed": [{"profile_id": a, "merged_at": at} for a, at in aliases],
        "events": [{"kind": k, "other_profile_id": o, "at": at} for k, o, at in events],
    }


def health(engine: Engine) -> dict[str, object]:
    """Profile sizes, the largest profiles, merge and split counts, refused edges, shared identifiers, the
    placeholder values sent most, and a giant-profile alert."""
    sizes = engine.fetch_all(
        """SELECT CASE WHEN n = 1 THEN '1' WHEN n <= 5 THEN '2-5' WHEN n <= 20 THEN '6-20' WHEN n <= 100 THEN '21-100'
                       ELSE 'over 100' END AS bucket, count(*) AS profiles
        FROM (SELECT profile_id, count(*) AS n FROM identity_membership GROUP BY profile_id) AS s
        GROUP BY bucket ORDER BY min(n)"""
    )
    largest = engine.fetch_all(
        """SELECT m.profile_id, count(*) AS n,
                  count(*) FILTER (WHERE i.id_type = 'user_id'), count(*) FILTER (WHERE i.id_type = 'email'),
                  count(*) FILTER (WHERE i.id_type = 'anonymous_id')
        FROM identity_membership AS m JOIN identity_nodes AS i ON i.node_id = m.node_id
        GROUP BY m.profile_id ORDER BY n DESC, m.profile_id LIMIT 5"""
    )
    blocked = engine.fetch_all(
        "SELECT id_type, id_value, hits FROM identity_blocked ORDER BY hits DESC, id_type, id_value LIMIT 10"
    )
    counts = engine.fetch_one(
        """SELECT (SELECT count(*) FROM profiles_index), (SELECT count(*) FROM identity_nodes),
                  (SELECT count(*) FROM identity_events WHERE kind = 'merged'),
                  (SELECT count(*) FROM identity_events WHERE kind = 'split'),
                  (SELECT count(*) FROM identity_conflicts),
                  (SELECT count(*) FROM identity_nodes WHERE shared IS NOT NULL),
                  (SELECT count(*) FROM identity_match_records),
                  (SELECT count(*) FROM identity_edges WHERE kind = 'probabilistic'),
                  (SELECT count(*) FROM identity_matches WHERE status = 'review' AND decision IS NULL),
                  (SELECT count(*) FROM identity_matches WHERE decision IS NOT NULL)"""
    )
    assert counts is not None
    model = load_model(engine)
    top = [
        {"profile_id": p, "identifiers": int(n), "user_ids": int(u), "emails": int(e), "anonymous_ids": int(a)}
        for p, n, u, e, a in largest
    ]
    alerts = [f"giant profile forming: {t['profile_id']} has {t['identifiers']:,} identifiers" for t in top
              if t["identifiers"] > GIANT_PROFILE]  # fmt: skip
    return {
        "profiles": int(counts[0]),
        "identifiers": int(counts[1]),
        "merges": int(counts[2]),
        "splits": int(counts[3]),
        "refused_edges": int(counts[4]),
        "shared_identifiers": int(counts[5]),
        "matching": {
            "model_version": model.version if model else None,
            "match_records": int(counts[6]),
            "probabilistic_edges": int(counts[7]),
            "waiting_for_review": int(counts[8]),
            "decided_in_review": int(counts[9]),
        },
        "size_distribution": {b: int(n) for b, n in sizes},
        "blocked_values_hit": [{"type": t, "value": v, "hits": int(h)} for t, v, h in blocked],
        "largest": top,
        "alerts": alerts,
    }


_PRIORITY = {t.name: t.priority for t in IDENTIFIER_TYPES}


def _edge(row: tuple[object, ...], engine: Engine) -> dict[str, object]:
    """An edge, from its stronger identifier to the weaker (as the message's anchor joined them); a
    probabilistic one with its probability and the comparison levels of its strongest pair."""
    a, b, kind, message_id, source_id, message_type, at, probability, node_a, node_b = row
    if _PRIORITY.get(str(b).split(":", 1)[0], 99) < _PRIORITY.get(str(a).split(":", 1)[0], 99):
        a, b = b, a
    edge: dict[str, object] = {"from": a, "to": b, "kind": kind}
    if kind == "deterministic":
        edge["rule"] = "seen together in one message"
    else:
        edge["rule"] = "accepted in review" if kind == "reviewed" else "match probability above the merge threshold"
        edge["probability"] = probability
        edge["evidence"] = strongest_pair(engine, int(str(node_a)), int(str(node_b)))
    edge.update({"message_id": message_id, "source_id": source_id, "message_type": message_type, "at": at})
    return edge


_PAIR_COLUMNS = "id_l, id_r, match_probability, match_weight, status, decision, " + ", ".join(
    f"g_{f.name}" for f in FEATURES
)


def _levels(model: Model | None, gammas: tuple[object, ...]) -> list[dict[str, object]]:
    """Each comparison's level for one pair: its label and weight (log2 of m/u) under the current model."""
    if model is None:
        return []
    _, compared = compile_model(model.splink)
    by_feature = {c.feature: c for c in compared}
    out: list[dict[str, object]] = []
    for f, g in zip(FEATURES, gammas, strict=True):
        c = by_feature.get(f.name)
        if c is None or g is None:
            continue
        level = next((lv for lv in c.levels if lv.gamma == int(str(g))), None)
        if level is not None and level.gamma >= 0:
            out.append({"feature": f.name, "level": level.label, "weight": round(level.weight, 3)})
    return out


def _pair(row: tuple[object, ...], model: Model | None) -> dict[str, object]:
    return {
        "pair": f"{row[0]}-{row[1]}",
        "probability": row[2],
        "match_weight": row[3],
        "status": row[4],
        "decision": row[5],
        "levels": _levels(model, row[6:]),
    }


def strongest_pair(engine: Engine, a: int, b: int) -> dict[str, object] | None:
    """The best-scored pair of match records between two identifiers, with its comparison levels."""
    row = engine.fetch_one(
        f"""SELECT {_PAIR_COLUMNS} FROM identity_matches
        WHERE (node_l = ? AND node_r = ?) OR (node_l = ? AND node_r = ?)
        ORDER BY match_probability DESC LIMIT 1""",
        (a, b, b, a),
    )
    return None if row is None else _pair(row, load_model(engine))


def review_queue(engine: Engine, limit: int) -> list[dict[str, object]]:
    """Pairs between the thresholds that no operator has decided on, most probable first, with what each
    record says and the profiles they are in."""
    model = load_model(engine)
    rows = engine.fetch_all(
        f"""SELECT {_PAIR_COLUMNS} FROM identity_matches WHERE status = 'review' AND decision IS NULL
        ORDER BY match_probability DESC, id_l, id_r LIMIT {int(limit)}"""
    )
    if not rows:
        return []
    ids = sorted({int(r[i]) for r in rows for i in (0, 1)})
    names = ", ".join(f.name for f in FEATURES)
    records = {
        int(s[0]): {"match_key": s[1], "profile_id": s[2],
                    **{f.name: v for f, v in zip(FEATURES, s[3:], strict=True) if v is not None}}
        for s in engine.fetch_all(
            f"""SELECT r.match_id, r.match_key, m.profile_id, {names} FROM identity_match_records AS r
            LEFT JOIN identity_membership AS m ON m.node_id = r.node_id
            WHERE r.match_id IN ({", ".join("?" for _ in ids)})""",
            ids,
        )
    }  # fmt: skip
    return [_pair(row, model) | {"records": [records[int(row[0])], records[int(row[1])]]} for row in rows]
