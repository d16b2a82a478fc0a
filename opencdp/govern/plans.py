"""Tracking plans compiled to set-based SQL (pure functions, no connection).

Each function returns SQL in DuckDB's dialect over a relation named ``batch`` (columns ``seq``, ``source_id``,
``type``, ``event``, ``message``): the rows to check. The engine transpiles it. The two helpers whose SQL
differs by engine, ``cdp_json_type`` (a JSON value's JSON Schema type) and ``cdp_json_extra_keys`` (the keys
of an object outside a list, comma-separated), are SQL functions the store defines for each engine.
"""

from __future__ import annotations

from typing import Any

from opencdp.model.plans import TrackingPlan

VIOLATION_COLUMNS = "seq, source_id, event, property, rule, detail"
UNPLANNED = "unplanned_event"


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def path(root: str, key: str) -> str:
    return lit(f'$.{root}."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"')


def _number(value: float) -> str:
    return repr(float(value))


def _property_checks(source_id: str, scope: str, where: str, root: str, schema: dict[str, Any]) -> list[str]:
    """Violations of one object schema (event properties or traits) by the batch rows matching ``where``."""
    event = "event" if scope == "track" else "NULL"
    head = f"SELECT seq, source_id, {event} AS event"
    rows = f"FROM batch WHERE source_id = {lit(source_id)} AND {where}"
    out = []
    for name in schema.get("required", []):
        out.append(
            f"{head}, {lit(name)} AS property, 'required_missing' AS rule, NULL AS detail {rows} "
            f"AND json_extract(message, {path(root, name)}) IS NULL"
        )
    for name, sub in (schema.get("properties") or {}).items():
        value = f"json_extract(message, {path(root, name)})"
        kind = f"cdp_json_type({value})"
        present = f"{value} IS NOT NULL"
        types = sub.get("type")
        if types is not None:
            allowed = [types] if isinstance(types, str) else list(types)
            if "number" in allowed and "integer" not in allowed:
                allowed.append("integer")  # JSON Schema: every integer is a number
            listed = ", ".join(lit(t) for t in allowed)
            out.append(
                f"{head}, {lit(name)} AS property, 'type_mismatch' AS rule, {kind} AS detail {rows} "
                f"AND {present} AND {kind} NOT IN ({listed})"
            )
        text = f"json_extract_string(message, {path(root, name)})"
        if "enum" in sub:
            strings = [v for v in sub["enum"] if isinstance(v, str)]
            listed = ", ".join(lit(v) for v in strings) or "NULL"
            out.append(
                f"{head}, {lit(name)} AS property, 'enum_mismatch' AS rule, {text} AS detail {rows} "
                f"AND {present} AND {kind} = 'string' AND {text} NOT IN ({listed})"
            )
        if "pattern" in sub:
            out.append(
                f"{head}, {lit(name)} AS property, 'pattern_mismatch' AS rule, {text} AS detail {rows} "
                f"AND {present} AND {kind} = 'string' AND NOT regexp_matches({text}, {lit(sub['pattern'])})"
            )
        for keyword, op in (("minLength", "<"), ("maxLength", ">")):
            if keyword in sub:
                out.append(
                    f"{head}, {lit(name)} AS property, {lit(keyword)} AS rule, {text} AS detail {rows} "
                    f"AND {present} AND {kind} = 'string' AND length({text}) {op} {int(sub[keyword])}"
                )
        for keyword, op in (("minimum", "<"), ("maximum", ">")):
            if keyword in sub:
                number = f"CAST(CASE WHEN {kind} IN ('number', 'integer') THEN {text} END AS DOUBLE)"
                out.append(
                    f"{head}, {lit(name)} AS property, {lit(keyword)} AS rule, {text} AS detail {rows} "
                    f"AND {present} AND {number} {op} {_number(sub[keyword])}"
                )
    if schema.get("additionalProperties") is False:
        planned = "[" + ", ".join(lit(k) for k in (schema.get("properties") or {})) + "]::VARCHAR[]"
        extra = f"cdp_json_extra_keys(json_extract(message, {lit('$.' + root)}), {planned})"
        out.append(
            f"{head}, NULL AS property, 'additional_property' AS rule, {extra} AS detail {rows} AND {extra} IS NOT NULL"
        )
    return out


def violation_selects(source_id: str, plan: TrackingPlan) -> list[str]:
    """One SELECT of ``VIOLATION_COLUMNS`` per rule of the plan, over ``batch``."""
    out = []
    planned = ", ".join(lit(name) for name in plan.events)
    unplanned = f"event NOT IN ({planned})" if planned else "TRUE"
    out.append(
        f"SELECT seq, source_id, event, NULL AS property, {lit(UNPLANNED)} AS rule, NULL AS detail "
        f"FROM batch WHERE source_id = {lit(source_id)} AND type = 'track' AND {unplanned}"
    )
    for name, schema in plan.events.items():
        out += _property_checks(source_id, "track", f"type = 'track' AND event = {lit(name)}", "properties", schema)
    if plan.identify is not None:
        out += _property_checks(source_id, "identify", "type = 'identify'", "traits", plan.identify)
    return out


def violations_query(plans: dict[str, TrackingPlan], batch: str) -> str | None:
    """All plans' violations over the rows ``batch`` selects from ``raw_events`` (None: no plan, no checks)."""
    selects = [s for source_id, plan in sorted(plans.items()) for s in violation_selects(source_id, plan)]
    if not selects:
        return None
    return f"WITH batch AS ({batch}) " + " UNION ALL ".join(selects)


def status_case(plans: dict[str, TrackingPlan], violations: str) -> str:
    """SQL for a row's status (``blocked``, ``flagged`` or ``passed``) from its violations in ``violations``.

    ``violations`` is a relation with ``seq`` and ``rule``; the row is ``b`` (with ``seq`` and ``source_id``).
    """
    if not plans:
        return "'passed'"

    def mode_of(kind: str) -> str:
        cases = " ".join(
            f"WHEN {lit(s)} THEN {lit(plan.unplanned if kind == 'unplanned' else plan.violations)}"
            for s, plan in sorted(plans.items())
        )
        return f"CASE b.source_id {cases} ELSE 'allow' END"

    unplanned = f"EXISTS (SELECT 1 FROM {violations} AS v WHERE v.seq = b.seq AND v.rule = {lit(UNPLANNED)})"
    broken = f"EXISTS (SELECT 1 FROM {violations} AS v WHERE v.seq = b.seq AND v.rule <> {lit(UNPLANNED)})"
    u, v = mode_of("unplanned"), mode_of("violations")
    return (
        f"CASE WHEN ({unplanned} AND {u} = 'block') OR ({broken} AND {v} = 'block') THEN 'blocked' "
        f"WHEN ({unplanned} AND {u} = 'flag') OR ({broken} AND {v} = 'flag') THEN 'flagged' ELSE 'passed' END"
    )


INFER_TRACK = """
WITH msgs AS (
    SELECT event, json_extract(message, '$.properties') AS p FROM raw_events
    WHERE source_id = ? AND type = 'track' AND received_at >= ? AND event IS NOT NULL
),
totals AS (SELECT event, count(*) AS n FROM msgs GROUP BY event),
pairs AS (SELECT event, unnest(cdp_json_keys(p)) AS k, p FROM msgs)
SELECT t.event, pairs.k, cdp_json_type(cdp_json_get(pairs.p, pairs.k)) AS kind, count(*) AS seen, t.n
FROM totals AS t LEFT JOIN pairs ON pairs.event = t.event
GROUP BY t.event, pairs.k, cdp_json_type(cdp_json_get(pairs.p, pairs.k)), t.n
"""

INFER_IDENTIFY = """
WITH msgs AS (
    SELECT json_extract(message, '$.traits') AS p FROM raw_events
    WHERE source_id = ? AND type = 'identify' AND received_at >= ?
),
totals AS (SELECT count(*) AS n FROM msgs),
pairs AS (SELECT unnest(cdp_json_keys(p)) AS k, p FROM msgs)
SELECT 'identify', pairs.k, cdp_json_type(cdp_json_get(pairs.p, pairs.k)) AS kind, count(*) AS seen, t.n
FROM totals AS t LEFT JOIN pairs ON TRUE
GROUP BY pairs.k, cdp_json_type(cdp_json_get(pairs.p, pairs.k)), t.n
"""


def schema_from_observations(rows: list[tuple[str | None, str | None, int, int]]) -> dict[str, Any]:
    """An object schema from observed (key, JSON type, times seen with that type, messages) rows.

    A key seen in every message is required; its types are every type seen (integer folds into number when
    both were seen; null stays a type of its own). Nothing else is guessed: enums and patterns are for the
    operator to add.
    """
    types: dict[str, set[str]] = {}
    seen: dict[str, int] = {}
    total = 0
    for key, kind, count, n in rows:
        total = n
        if key is None or kind is None:
            continue
        types.setdefault(key, set()).add(kind)
        seen[key] = seen.get(key, 0) + count
    properties: dict[str, Any] = {}
    for key in sorted(types):
        kinds = types[key]
        if {"integer", "number"} <= kinds:
            kinds = kinds - {"integer"}
        ordered = sorted(kinds)
        properties[key] = {"type": ordered[0] if len(ordered) == 1 else ordered}
    required = sorted(k for k, n in seen.items() if total and n >= total)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema
