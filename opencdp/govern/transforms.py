"""Transformations compiled to set-based SQL (pure functions, no connection).

:func:`transformed` wraps a relation of raw-log rows (``seq``, ``source_id``, ``type``, ``event``,
``message``) into the same rows with the rules applied in order: one CTE per rule, so the SQL grows with the
number of rules, not exponentially. JSON is edited with two helpers the store defines for each engine:
``cdp_json_put(j, parent, key, value)`` and ``cdp_json_drop(j, parent, key)`` (``parent`` '' is the top level).
"""

from __future__ import annotations

from opencdp.govern.plans import lit, path
from opencdp.model.transforms import (
    CastProperty,
    DropProperty,
    MapValues,
    RenameEvent,
    RenameProperty,
    RouteEvent,
    Rule,
    Transformations,
)

_NUMBER = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def _text(value: str) -> str:
    return f"to_json(CAST({lit(value)} AS VARCHAR))"


def _scope(rule: Rule, *conditions: str) -> str:
    parts = [f"source_id = {lit(rule.source)}"] if rule.source else []
    event = getattr(rule, "event", None)
    if event is not None and not isinstance(rule, RenameEvent):
        parts.append(f"event = {lit(event)}")
    return " AND ".join([*parts, *conditions]) or "TRUE"


def rule_columns(rule: Rule) -> tuple[str, str, str]:
    """SQL for (type, event, message) after ``rule``, in terms of the columns before it."""
    if isinstance(rule, RenameEvent):
        when = _scope(rule, "type = 'track'", f"event = {lit(rule.old)}")
        return (
            "type",
            f"CASE WHEN {when} THEN {lit(rule.new)} ELSE event END",
            f"CASE WHEN {when} THEN cdp_json_put(message, '', 'event', {_text(rule.new)}) ELSE message END",
        )
    if isinstance(rule, RouteEvent):
        when = _scope(rule)  # the rule's event is part of its scope
        return (
            f"CASE WHEN {when} THEN {lit(rule.to_type)} ELSE type END",
            "event",
            f"CASE WHEN {when} THEN cdp_json_put(message, '', 'type', {_text(rule.to_type)}) ELSE message END",
        )
    if isinstance(rule, RenameProperty):
        value = f"json_extract(message, {path('properties', rule.old)})"
        when = _scope(rule, f"{value} IS NOT NULL", f"cdp_json_type({value}) <> 'null'")
        put = f"cdp_json_put(message, 'properties', {lit(rule.new)}, {value})"
        return (
            "type",
            "event",
            f"CASE WHEN {when} THEN cdp_json_drop({put}, 'properties', {lit(rule.old)}) ELSE message END",
        )
    name = rule.property
    value = f"json_extract(message, {path('properties', name)})"
    text = f"json_extract_string(message, {path('properties', name)})"
    if isinstance(rule, DropProperty):
        when = _scope(rule, f"{value} IS NOT NULL")
        return (
            "type",
            "event",
            f"CASE WHEN {when} THEN cdp_json_drop(message, 'properties', {lit(name)}) ELSE message END",
        )
    if isinstance(rule, MapValues):
        if not rule.values:
            return "type", "event", "message"
        keys = ", ".join(lit(k) for k in rule.values)
        mapped = "CASE " + " ".join(f"WHEN {text} = {lit(k)} THEN {lit(v)}" for k, v in rule.values.items()) + " END"
        when = _scope(rule, f"cdp_json_type({value}) = 'string'", f"{text} IN ({keys})")
        new = f"to_json(CAST({mapped} AS VARCHAR))"
    elif isinstance(rule, CastProperty):
        if rule.to == "number":
            when = _scope(rule, f"cdp_json_type({value}) = 'string'", f"regexp_matches({text}, {lit(_NUMBER)})")
            new = f"to_json(CAST(CASE WHEN regexp_matches({text}, {lit(_NUMBER)}) THEN {text} END AS DOUBLE))"
        elif rule.to == "boolean":
            when = _scope(rule, f"cdp_json_type({value}) = 'string'", f"lower({text}) IN ('true', 'false')")
            new = f"to_json(lower({text}) = 'true')"
        else:
            when = _scope(rule, f"cdp_json_type({value}) IN ('number', 'integer', 'boolean')")
            new = f"to_json(CAST({text} AS VARCHAR))"
    else:  # pragma: no cover - the union is exhaustive
        raise TypeError(rule)
    return (
        "type",
        "event",
        f"CASE WHEN {when} THEN cdp_json_put(message, 'properties', {lit(name)}, {new}) ELSE message END",
    )


def transformed(rules: Transformations, rows: str) -> str:
    """``rows`` with the rules applied in order (the rows themselves when there are none).

    Each step is materialized: it refers to ``message`` several times, and an engine that inlined the steps
    into one expression (PostgreSQL does, for a CTE used once) would grow it exponentially with the rules.
    """
    if not rules.rules:
        return rows
    steps = [f"_t0 AS ({rows})"]
    for i, rule in enumerate(rules.rules, 1):
        type_, event, message = rule_columns(rule)
        steps.append(
            f"_t{i} AS MATERIALIZED (SELECT seq, source_id, {type_} AS type, {event} AS event, {message} AS message "
            f"FROM _t{i - 1})"
        )
    return f"WITH {', '.join(steps)} SELECT seq, source_id, type, event, message FROM _t{len(rules.rules)}"
