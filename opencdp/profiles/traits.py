"""Computed traits compiled to one set-based statement (pure functions, no connection).

:func:`check` validates a set of definitions as a whole (names unique, expressions safe, references known and
of the right type, no cycles) and orders them; :func:`compiled` turns them into one ``SELECT`` that computes
every trait for the profiles in a relation, over their activity:

1. the activity rows of those profiles, each order or refund counted once (its latest version) and amounts
   converted to the workspace currency (``amount_ws``: NULL when the currency has no rate);
2. one ``GROUP BY`` with an aggregate per trait (``FILTER`` holds the trait's grain, events, conditions and
   window); a sum or average over an amount that could not be converted is NULL (it cannot be computed),
   never a sum of two currencies;
3. ``most_frequent`` traits, each from its own ranking (ties go to the latest);
4. expression traits, layer by layer in dependency order, with division by zero giving NULL on both engines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlglot
from sqlglot import exp

from opencdp.errors import Rejected
from opencdp.govern.plans import lit
from opencdp.model.profiles import ProfileSettings, TraitDefinition, TraitType
from opencdp.profiles.observe import number

SQL_TYPES: dict[TraitType, str] = {
    "integer": "BIGINT",
    "number": "DOUBLE",
    "text": "VARCHAR",
    "timestamp": "TIMESTAMPTZ",
}
_FUNCTIONS = {"coalesce": exp.Coalesce, "round": exp.Round, "abs": exp.Abs, "greatest": exp.Greatest,
              "least": exp.Least}  # fmt: skip
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg, exp.Paren, exp.Literal, exp.Column, exp.Identifier)


@dataclass(frozen=True)
class Checked:
    """Definitions in the order they can be computed, with each expression's parsed tree."""

    traits: tuple[TraitDefinition, ...]
    trees: dict[str, exp.Expr]

    def types(self) -> dict[str, TraitType]:
        return {t.name: t.type for t in self.traits}


def _bad(name: str, why: str) -> Rejected:
    return Rejected(f"trait {name!r}: {why}", code="bad_trait")


def _parse(t: TraitDefinition) -> exp.Expr:
    assert t.expression is not None
    if len(t.expression) > 2_000:
        raise _bad(t.name, "the expression is longer than 2000 characters")
    try:
        tree = sqlglot.parse_one(t.expression, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise _bad(t.name, f"the expression cannot be read: {str(exc).splitlines()[0]}") from None
    for node in tree.walk():
        if isinstance(node, _ARITHMETIC):
            if isinstance(node, exp.Literal) and node.is_string:
                raise _bad(t.name, "an expression computes with numbers and traits; text literals are not allowed")
            if isinstance(node, exp.Column) and node.table:
                raise _bad(t.name, f"{node.sql()!r} is not a trait name")
            continue
        if isinstance(node, exp.Anonymous) and node.name.lower() == "days_since":
            if len(node.expressions) != 1 or not isinstance(node.expressions[0], exp.Column):
                raise _bad(t.name, "days_since takes one timestamp trait")
            continue
        if isinstance(node, exp.Round):
            places = node.args.get("decimals")
            if places is not None and not (isinstance(places, exp.Literal) and places.this.isdigit()
                                           and int(places.this) <= 12):  # fmt: skip
                raise _bad(t.name, "round takes a whole number of decimal places from 0 to 12")
            continue
        if type(node) in _FUNCTIONS.values():
            continue
        raise _bad(t.name, f"{node.sql()!r} is not allowed in an expression (numbers, traits, + - * /, "
                           "coalesce, round, abs, greatest, least, days_since)")  # fmt: skip
    return tree


def _references(tree: exp.Expr) -> set[str]:
    return {c.name for c in tree.find_all(exp.Column)}


def check(definitions: list[TraitDefinition]) -> Checked:
    """Validate definitions as a whole and order them so that each expression follows what it uses."""
    by_name: dict[str, TraitDefinition] = {}
    for t in definitions:
        if t.name in by_name:
            raise _bad(t.name, "defined twice")
        by_name[t.name] = t
    trees = {t.name: _parse(t) for t in definitions if t.expression is not None}
    for name, tree in trees.items():
        for node in tree.find_all(exp.Column):
            ref = by_name.get(node.name)
            if ref is None:
                raise _bad(name, f"uses {node.name!r}, which is not a trait")
            in_days = isinstance(node.parent, exp.Anonymous)
            if in_days and ref.type != "timestamp":
                raise _bad(name, f"days_since needs a timestamp trait; {node.name!r} is {ref.type}")
            if not in_days and ref.type not in ("integer", "number"):
                raise _bad(name, f"{node.name!r} is {ref.type}, not a number (type mismatch)")
    ordered: list[TraitDefinition] = [t for t in definitions if t.expression is None]
    done = {t.name for t in ordered}
    pending = [t for t in definitions if t.expression is not None]
    while pending:
        ready = [t for t in pending if _references(trees[t.name]) <= done]
        if not ready:
            cycle = ", ".join(sorted(t.name for t in pending))
            raise Rejected(f"traits {cycle} depend on each other in a circle", code="bad_trait")
        ordered += ready
        done |= {t.name for t in ready}
        pending = [t for t in pending if t.name not in done]
    return Checked(tuple(ordered), trees)


def _at(now: datetime) -> str:
    return f"CAST({lit(now.isoformat())} AS TIMESTAMPTZ)"


def property_text(path: str) -> str:
    """SQL: the text of property ``path`` (dots for nested ones) of an activity row, NULL when it has none."""
    return f"json_extract_string(props, {lit('$.' + path)})"


def _literal(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return lit("true" if value else "false")
    if isinstance(value, float | int):
        return repr(float(value))
    return lit(value)


def property_condition(c_property: str, op: str, value: object, column: str | None = None) -> str:
    """SQL: the property ``c_property`` of an activity row compared as a condition says; ``column``: a column
    that holds the property's text (``activity``'s kept property paths) instead of reading it from ``props``."""
    text = column or property_text(c_property)
    if op == "exists":
        return f"{text} IS NOT NULL"
    if op == "contains":
        return f"strpos({text}, {lit(str(value))}) > 0"
    if op == "in":
        assert isinstance(value, list)
        numbers = [v for v in value if isinstance(v, float | int) and not isinstance(v, bool)]
        texts = [v for v in value if not (isinstance(v, float | int) and not isinstance(v, bool))]
        parts = []
        if texts:
            parts.append(f"{text} IN ({', '.join(_literal(v) for v in texts)})")
        if numbers:
            parts.append(f"{number(text)} IN ({', '.join(_literal(v) for v in numbers)})")
        return "(" + " OR ".join(parts) + ")"
    sql_op = "<>" if op == "!=" else op
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{number(text)} {sql_op} {_literal(value)}"
    assert isinstance(value, str | bool)
    return f"{text} {sql_op} {_literal(value)}"


def _filter(t: TraitDefinition, now: datetime) -> str:
    parts = [f"grain = {lit(t.over or '')}"]
    if t.event:
        parts.append(f"name IN ({', '.join(lit(e) for e in t.event)})")
    parts += [property_condition(c.property, c.op, c.value) for c in t.where]
    if t.window_days is not None:
        parts.append(f"ts >= {_at(now)} - INTERVAL {int(t.window_days)} DAY")
    return " AND ".join(parts)


def _value(t: TraitDefinition, numeric: bool) -> str:
    if t.of == "amount":
        return "amount_ws"
    if t.of == "timestamp":
        return "ts"
    if t.of == "event":
        return "name"
    assert t.of is not None
    return number(property_text(t.of)) if numeric else property_text(t.of)


def _aggregate(t: TraitDefinition, now: datetime) -> str:
    where = _filter(t, now)
    agg = t.aggregate
    if agg == "count":
        return f"count(*) FILTER (WHERE {where})"
    numeric = agg in ("sum", "avg") or t.type == "number" or (agg in ("min", "max") and t.of == "amount")
    v = _value(t, numeric)
    if agg == "distinct_count":
        return f"count(DISTINCT {v}) FILTER (WHERE {where})"
    if agg in ("first", "last"):
        direction = "" if agg == "first" else " DESC"
        return f"(array_agg({v} ORDER BY ts{direction}, seq{direction}) FILTER (WHERE {where} AND {v} IS NOT NULL))[1]"
    sql = {"sum": "sum", "avg": "avg", "min": "min", "max": "max"}[str(agg)]
    value = f"{sql}({v}) FILTER (WHERE {where})"
    if agg == "sum":
        value = f"coalesce({value}, 0)"
    if t.of == "amount":  # an amount in a currency without a rate: the trait cannot be computed
        return f"CASE WHEN count(*) FILTER (WHERE {where} AND amount IS NOT NULL AND amount_ws IS NULL) > 0 " \
               f"THEN NULL ELSE {value} END"  # fmt: skip
    return value


def _expression(tree: exp.Expr, now: datetime) -> str:
    def operands(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Anonymous) and node.name.lower() == "days_since":
            column = node.expressions[0].name
            return sqlglot.parse_one(f"CAST(date_diff('day', {column}, {_at(now)}) AS DOUBLE)", read="duckdb")
        if isinstance(node, exp.Column):
            return sqlglot.parse_one(f"CAST({node.name} AS DOUBLE)", read="duckdb")
        if isinstance(node, exp.Div):
            divisor = exp.Nullif(this=node.expression, expression=exp.Literal.number(0))
            return exp.Div(this=node.this, expression=divisor)
        return node

    def rounding(node: exp.Expr) -> exp.Expr:  # on DECIMAL, so that both engines round halves away from zero
        if not isinstance(node, exp.Round):
            return node
        places = node.args.get("decimals")
        value = node.this.sql(dialect="duckdb")
        return sqlglot.parse_one(
            f"CASE WHEN abs({value}) < 1e20 THEN CAST(round(CAST({value} AS DECIMAL(38, 12)), "
            f"{int(places.this) if places is not None else 0}) AS DOUBLE) ELSE {value} END",
            read="duckdb",
        )

    return tree.copy().transform(operands).transform(rounding).sql(dialect="duckdb")


def _rate(settings: ProfileSettings) -> str:
    rates = {settings.currency: 1.0, **settings.rates}
    whens = " ".join(f"WHEN {lit(code)} THEN {float(rate)!r}" for code, rate in sorted(rates.items()))
    return f"CASE coalesce(currency, {lit(settings.currency)}) {whens} END"


def compiled(checked: Checked, settings: ProfileSettings, profiles: str, members: str, now: datetime,
             activity: str = "activity") -> str:  # fmt: skip
    """One ``SELECT profile_id, <each trait>`` for the profiles in ``profiles`` (a relation with
    ``profile_id``), whose identifiers are in ``members`` (``node_id``, ``profile_id``), over ``activity`` (the
    table, or a copy holding at least those identifiers' rows)."""
    rows = f"""SELECT m.profile_id, a.seq, a.grain, a.name, a.ts, a.amount, a.props,
                      a.amount * {_rate(settings)} AS amount_ws,
                      row_number() OVER (PARTITION BY m.profile_id, coalesce(a.item_key, CAST(a.seq AS VARCHAR))
                                         ORDER BY a.seq DESC) AS version
               FROM {activity} AS a JOIN {members} AS m ON m.node_id = a.node_id
               WHERE a.grain IS NOT NULL"""
    aggregates = [t for t in checked.traits if t.expression is None and t.aggregate != "most_frequent"]
    frequent = [t for t in checked.traits if t.aggregate == "most_frequent"]
    cols = ", ".join(f"{_aggregate(t, now)} AS {t.name}" for t in aggregates) or "NULL AS _none"
    base = f"""SELECT p.profile_id, {", ".join(_zero(t) for t in aggregates) or "NULL AS _none"}
               FROM {profiles} AS p
               LEFT JOIN (SELECT profile_id, {cols} FROM _pf_rows WHERE version = 1 GROUP BY profile_id) AS g
                      ON g.profile_id = p.profile_id"""
    for t in frequent:
        v = _value(t, False)
        base = f"""SELECT b.*, f.{t.name} FROM ({base}) AS b LEFT JOIN (
                SELECT profile_id, {t.name} FROM (
                    SELECT profile_id, v AS {t.name},
                           row_number() OVER (PARTITION BY profile_id ORDER BY n DESC, last_ts DESC, v) AS rank
                    FROM (SELECT profile_id, {v} AS v, count(*) AS n, max(ts) AS last_ts FROM _pf_rows
                          WHERE version = 1 AND {_filter(t, now)} AND {v} IS NOT NULL
                          GROUP BY profile_id, {v}) AS c) AS r
                WHERE rank = 1) AS f ON f.profile_id = b.profile_id"""
    for t in checked.traits:
        if t.expression is not None:
            base = f"SELECT *, {_expression(checked.trees[t.name], now)} AS {t.name} FROM ({base}) AS x_{t.name}"
    names = ", ".join(t.name for t in checked.traits)
    return f"WITH _pf_rows AS MATERIALIZED ({rows}) SELECT profile_id, {names} FROM ({base}) AS traits"


def affecting(checked: Checked) -> str:
    """SQL: a condition on an activity row (``grain``, ``name``) that holds when the row can change some computed
    trait, so that a profile whose new rows all fail it keeps the traits it has (expressions only combine
    aggregates; a new version of an order or return has the grain of the one it replaces)."""
    grains: dict[str, set[str] | None] = {}
    for t in checked.traits:
        if t.over is None:
            continue
        names = grains.get(t.over, set())
        grains[t.over] = None if names is None or not t.event else names | set(t.event)
    parts = []
    for grain, names in sorted(grains.items()):
        listed = "" if names is None else f" AND name IN ({', '.join(lit(n) for n in sorted(names))})"
        parts.append(f"(grain = {lit(grain)}{listed})")
    return " OR ".join(parts) or "FALSE"


def _zero(t: TraitDefinition) -> str:
    """A profile without any activity still has its counts (0) and sums (0, unless they cannot be computed)."""
    if t.aggregate in ("count", "distinct_count"):
        return f"coalesce(g.{t.name}, 0) AS {t.name}"
    if t.aggregate == "sum":
        return f"CASE WHEN g.profile_id IS NULL THEN 0 ELSE g.{t.name} END AS {t.name}"
    return f"g.{t.name}"
