"""Identifiers out of governed messages and records, as set-based SQL (pure functions, no connection).

Two statements, each cheap to plan (they run once per micro-batch; as one statement, the optimizer copied the
normalisation into every path's branch and planning alone took longer than running it):
:func:`raw_values` turns a relation of governed rows (``seq``, ``source_id``, ``type``, ``user_id``,
``anonymous_id``, ``message``) into one row per (message, path) with the value read (:data:`RAW_COLUMNS`);
:func:`identifiers` turns those into one row per (message, identifier): ``seq``, ``id_type``, ``id_value``,
``priority`` and ``blocked``. Values are normalised (emails trimmed and lower-cased, phones as ``+`` and
digits); placeholders (:data:`opencdp.model.identity.BLOCKED_VALUES`) are marked ``blocked`` (the stage
counts them and leaves them out), and values a PII policy masked (``***``) and phones of one repeated digit
are left out: they identify nobody.
"""

from __future__ import annotations

from opencdp.govern.plans import lit
from opencdp.model.identity import BLOCKED_VALUES, IDENTIFIER_TYPES, IdentifierType


def per_type(column: str, attribute: str, *, only_limit_one: bool = False) -> str:
    """SQL giving each identifier type's ``attribute`` (priority, limit) for the type named in ``column``
    (NULL for types left out: with ``only_limit_one``, those allowed more than once per profile)."""
    types = [t for t in IDENTIFIER_TYPES if t.limit == 1 or not only_limit_one]
    return f"CASE {column} " + " ".join(f"WHEN {lit(t.name)} THEN {getattr(t, attribute)}" for t in types) + " END"


def _read(path: str) -> str:
    if path.startswith("column:"):
        return f"CAST({path.removeprefix('column:')} AS VARCHAR)"
    return f"json_extract_string(message, {lit(path)})"


def phone(v: str) -> str:
    """SQL for the phone number written in ``v`` as ``+`` and digits: a trunk ``(0)`` after the country code is
    dropped and a leading ``00`` is the international prefix (``+44 (0)20 7946 0958`` and ``0044 20 7946
    0958`` are ``+442079460958``); NULL for fewer than 7 digits or one digit repeated. A number in national
    form (``020 7946 0958``) stays national: without a region it cannot be placed."""
    digits = f"regexp_replace(replace({v}, '(0)', ''), '[^0-9]', '', 'g')"
    written = (
        f"CASE WHEN left(trim({v}), 1) = '+' THEN '+' || {digits} "
        f"WHEN left({digits}, 2) = '00' THEN '+' || substr({digits}, 3) ELSE {digits} END"
    )
    return f"CASE WHEN length({digits}) >= 7 AND replace({digits}, left({digits}, 1), '') <> '' THEN {written} END"


RAW_COLUMNS = (
    "seq BIGINT, source_id VARCHAR, id_type VARCHAR, priority INTEGER, normaliser VARCHAR, scoped BOOLEAN, v VARCHAR"
)
"""What :func:`raw_values` gives: per message and path, the identifier type's name, priority, normaliser,
whether its values are namespaced by the source (``scoped``), and the value read (``v``, NULL when absent)."""


def _reads(t: IdentifierType, rows: str) -> list[str]:
    reads = []
    for path in t.paths:
        where = "type = 'record'" if path.startswith("$.fields.") else "type <> 'record'"
        if path.startswith("column:"):
            where = "TRUE"
        reads.append(
            f"SELECT seq, source_id, {lit(t.name)} AS id_type, {t.priority} AS priority, "
            f"{lit(t.normaliser)} AS normaliser, {'TRUE' if t.records_only else 'FALSE'} AS scoped, "
            f"{_read(path)} AS v FROM {rows} WHERE {where}"
        )
    return reads


def raw_values(rows: str) -> str:
    """The value every path of every identifier type reads from the governed rows in table ``rows``."""
    return " UNION ALL ".join(r for t in IDENTIFIER_TYPES for r in _reads(t, rows))


def identifiers(raw: str) -> str:
    """One row per (message, identifier) of the raw values in table ``raw`` (:func:`raw_values`), with
    ``blocked`` (a placeholder: the stage counts it and leaves it out); see the module docstring."""
    blocked = ", ".join(lit(v) for v in sorted(BLOCKED_VALUES))
    normalised = f"CASE normaliser WHEN 'email' THEN lower(trim(v)) WHEN 'phone' THEN {phone('v')} ELSE trim(v) END"
    return f"""SELECT DISTINCT seq, id_type, CASE WHEN scoped THEN source_id || ':' || n ELSE n END AS id_value,
           priority, lower(n) IN ({blocked}) AS blocked
    FROM (SELECT seq, source_id, id_type, priority, scoped, {normalised} AS n FROM {raw}) AS x
    WHERE n IS NOT NULL AND strpos(n, '***') = 0 AND length(n) <= 512"""
