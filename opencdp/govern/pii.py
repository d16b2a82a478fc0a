"""PII classification and policy compiled to set-based SQL (pure functions, no connection).

:func:`classified` turns a relation of raw-log rows (``seq``, ``source_id``, ``type``, ``message``) into one row
per scalar field of their containers, with its class (declared, by name or by value: the patterns of
:mod:`opencdp.model.pii`), the action the policy gives that class for that source, and the field's new JSON
value (NULL: removed). :func:`patches` folds the changed fields of each message into one JSON merge patch, which
``cdp_json_merge_patch`` applies. Helpers the store defines per engine: ``cdp_json_keys``, ``cdp_json_values``,
``cdp_json_text``, ``cdp_luhn``, ``cdp_iban_ok``, ``cdp_sha256``.
"""

from __future__ import annotations

from opencdp.govern.plans import lit
from opencdp.model.pii import (
    CARD_CHARS,
    CLASSES,
    EVENT_CONTAINERS,
    NAME_PATTERNS,
    RECORD_CONTAINERS,
    TRAIT_CONTAINERS,
    VALUE_RULES,
    Action,
    PiiClass,
    PiiPolicy,
    ValueRule,
)

_PREPARED = {
    "trim": "trim(text)",
    "lower": "lower(trim(text))",
    "upper_compact": "upper(replace(text, ' ', ''))",
    "digits": f"CASE WHEN regexp_matches(text, {lit(CARD_CHARS.pattern)}) "
    "THEN regexp_replace(text, '[ -]', '', 'g') END",
}
_CHECKS = {
    "luhn": "cdp_luhn({p})",
    "iban": "cdp_iban_ok({p})",
    "ssn": "split_part({p}, '-', 1) NOT IN ('000', '666') AND split_part({p}, '-', 2) <> '00' "
    "AND split_part({p}, '-', 3) <> '0000'",
}
_DIGITS = "regexp_replace(text, '[^0-9]', '', 'g')"
_COMPACT = "upper(replace(text, ' ', ''))"
MASKS = {
    "email": "CASE WHEN strpos(text, '@') > 1 THEN left(text, 1) || '***' || substr(text, strpos(text, '@')) "
    "ELSE '***' END",
    "payment_card": f"CASE WHEN length({_DIGITS}) >= 12 THEN repeat('*', length({_DIGITS}) - 4) || right({_DIGITS}, 4) "
    "ELSE '***' END",
    "phone": f"CASE WHEN length({_DIGITS}) >= 6 THEN '***' || right({_DIGITS}, 2) ELSE '***' END",
    "iban": f"CASE WHEN length({_COMPACT}) >= 12 THEN left({_COMPACT}, 4) || repeat('*', length({_COMPACT}) - 8) "
    f"|| right({_COMPACT}, 4) ELSE '***' END",
    "ip_address": "CASE WHEN regexp_matches(text, '^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$') "
    "THEN regexp_replace(text, '[0-9]+$', '0') ELSE '***' END",
    "national_id": "CASE WHEN length(text) >= 8 THEN '***' || right(text, 4) ELSE '***' END",
    "person_name": "CASE WHEN length(trim(text)) > 0 THEN left(trim(text), 1) || '***' ELSE '***' END",
    "birth_date": "CASE WHEN regexp_matches(text, '^[0-9]{4}-') THEN left(text, 4) || '-**-**' ELSE '***' END",
    "address": "'***'",
}
"""What ``mask`` leaves of a value, per class: enough to recognise it, never enough to use it."""
HASHED = {
    "email": "lower(trim(text))",
    "phone": "CASE WHEN left(trim(text), 1) = '+' THEN '+' ELSE '' END || " + _DIGITS,
    "payment_card": _DIGITS,
    "iban": _COMPACT,
}
"""The normalised form a class is hashed in (others: trimmed, lower case), so equal values hash equal."""


def _value_test(rule: ValueRule) -> str:
    prepared = _PREPARED[rule.prepare]
    test = f"regexp_matches({prepared}, {lit(rule.pattern)})"
    if rule.check:
        test = f"CASE WHEN {test} THEN {_CHECKS[rule.check].format(p=prepared)} ELSE FALSE END"
    quick = [f"length(text) >= {rule.min_length}"] + ([f"strpos(text, {lit(rule.needs)}) > 0"] if rule.needs else [])
    return f"WHEN {' AND '.join(quick)} AND coalesce({test}, FALSE) THEN {lit(rule.cls)}"


MIN_VALUE_LENGTH = min(rule.min_length for rule in VALUE_RULES)


def _name_sql(policy: PiiPolicy) -> tuple[str, str]:
    """SQL for (class, detected_by) a field's declaration or name gives it (``container``, ``nkey``); NULL
    detected_by: judge the value."""
    declared = policy.declared()
    traits = ", ".join(lit(c) for c in sorted(TRAIT_CONTAINERS))
    by_name = " ".join(f"WHEN regexp_matches(nkey, {lit(NAME_PATTERNS[c])}) THEN {lit(c)}" for c in CLASSES)
    by_name = f"CASE WHEN nkey = 'name' AND container IN ({traits}) THEN 'person_name' {by_name} END"
    if not declared:
        return by_name, f"CASE WHEN {by_name} IS NOT NULL THEN 'name' END"
    keys = ", ".join(lit(k) for k in sorted(declared))
    chosen = " ".join(f"WHEN {lit(k)} THEN {'NULL' if c == 'none' else lit(c)}" for k, c in sorted(declared.items()))
    cls = f"CASE WHEN nkey IN ({keys}) THEN (CASE nkey {chosen} END) ELSE {by_name} END"
    by = f"CASE WHEN nkey IN ({keys}) THEN 'declared' WHEN {by_name} IS NOT NULL THEN 'name' END"
    return cls, by


def _actions_sql(policy: PiiPolicy) -> str:
    def by_class(actions: dict[PiiClass, Action]) -> str:
        changed = {c: a for c, a in actions.items() if a != "keep"}
        if not changed:
            return "'keep'"
        whens = " ".join(f"WHEN {lit(c)} THEN {lit(a)}" for c, a in sorted(changed.items()))
        return f"CASE class {whens} ELSE 'keep' END"

    default = by_class(policy.actions(""))
    overrides = [(s, by_class(policy.actions(s))) for s in sorted(policy.sources)]
    overrides = [(s, sql) for s, sql in overrides if sql != default]
    if not overrides:
        return default
    return "CASE source_id " + " ".join(f"WHEN {lit(s)} THEN {sql}" for s, sql in overrides) + f" ELSE {default} END"


def _new_value(salt: str) -> str:
    masks = " ".join(f"WHEN {lit(c)} THEN {sql}" for c, sql in MASKS.items())
    hashed = " ".join(f"WHEN {lit(c)} THEN {sql}" for c, sql in HASHED.items())
    digest = f"'sha256:' || cdp_sha256({lit(salt)} || (CASE class {hashed} ELSE lower(trim(text)) END))"
    return f"""CASE action
        WHEN 'mask' THEN CAST(to_json(CAST(CASE class {masks} END AS VARCHAR)) AS VARCHAR)
        WHEN 'hash' THEN CAST(to_json(CAST({digest} AS VARCHAR)) AS VARCHAR) END"""


def classified(policy: PiiPolicy, salt: str, rows: str) -> str:
    """One row per scalar field of ``rows``' containers that has a class: ``seq``, ``source_id``,
    ``container``, ``field``, ``class``, ``detected_by``, ``action`` and ``new_value`` (JSON text; NULL for drop
    or keep).

    Names are classified once per distinct (container, field), values once per distinct text, and a value
    pattern runs only on text long enough for it and holding the character it needs: most fields of most
    messages cost a lookup, not a dozen regular expressions.
    """
    parts = [
        f"SELECT seq, source_id, {lit(c)} AS container, json_extract(message, {lit('$.' + c)}) AS obj "
        f"FROM _pii_rows WHERE type {'=' if c in RECORD_CONTAINERS else '<>'} 'record'"
        for c in (*EVENT_CONTAINERS, *RECORD_CONTAINERS)
    ]
    name_class, name_by = _name_sql(policy)
    by_value = " ".join(_value_test(r) for r in VALUE_RULES)
    return f"""WITH _pii_rows AS MATERIALIZED ({rows}),
    _pii_objs AS MATERIALIZED ({" UNION ALL ".join(parts)}),
    _pii_keys AS MATERIALIZED (
        SELECT seq, source_id, container, unnest(cdp_json_keys(obj)) AS field, unnest(cdp_json_values(obj)) AS v
        FROM _pii_objs WHERE obj IS NOT NULL),
    _pii_names AS MATERIALIZED (
        SELECT container, field, {name_class} AS name_class, {name_by} AS name_by
        FROM (SELECT container, field, regexp_replace(lower(field), '[^a-z0-9]', '', 'g') AS nkey
              FROM (SELECT DISTINCT container, field FROM _pii_keys) AS d) AS n),
    _pii_values AS MATERIALIZED (
        SELECT k.seq, k.source_id, k.container, k.field, n.name_class, n.name_by, k.v
        FROM _pii_keys AS k JOIN _pii_names AS n ON n.container = k.container AND n.field = k.field),
    _pii_scalars AS MATERIALIZED (
        SELECT seq, source_id, container, field, name_class, name_by,
               first = '"' OR (strpos(raw, '.') = 0 AND strpos(lower(raw), 'e') = 0) AS judged,
               CASE WHEN first = '"' THEN cdp_json_text(v) ELSE raw END AS text
        FROM (SELECT *, left(raw, 1) AS first
              FROM (SELECT *, CAST(v AS VARCHAR) AS raw FROM _pii_values WHERE v IS NOT NULL) AS r) AS f
        WHERE first NOT IN ('{{', '[', 'n')),
    _pii_texts AS MATERIALIZED (
        SELECT text, CASE {by_value} END AS value_class
        FROM (SELECT DISTINCT text FROM _pii_scalars
              WHERE name_by IS NULL AND judged AND length(text) >= {MIN_VALUE_LENGTH}) AS d),
    _pii_classes AS MATERIALIZED (
        SELECT s.seq, s.source_id, s.container, s.field, s.text, coalesce(s.name_class, t.value_class) AS class,
               coalesce(s.name_by, 'value') AS detected_by
        FROM _pii_scalars AS s LEFT JOIN _pii_texts AS t
            ON s.name_by IS NULL AND s.judged AND t.text = s.text),
    _pii_actions AS MATERIALIZED (
        SELECT seq, source_id, container, field, text, class, detected_by, {_actions_sql(policy)} AS action
        FROM _pii_classes WHERE class IS NOT NULL)
    SELECT seq, source_id, container, field, class, detected_by, action, {_new_value(salt)} AS new_value
    FROM _pii_actions"""


def patches(fields: str) -> str:
    """One JSON merge patch (as text) per message with a changed field, from rows of :func:`classified`."""
    return f"""SELECT seq, '{{' || string_agg('"' || top || '":{{' || inner_kvs || '}}', ',') || '}}' AS patch
    FROM (
        SELECT seq, top, string_agg(CASE WHEN sub = '' THEN kvs ELSE '"' || sub || '":{{' || kvs || '}}' END, ',')
            AS inner_kvs
        FROM (
            SELECT seq, split_part(container, '.', 1) AS top, split_part(container, '.', 2) AS sub,
                   string_agg(CAST(to_json(field) AS VARCHAR) || ':' || coalesce(new_value, 'null'), ',') AS kvs
            FROM ({fields}) AS f WHERE action <> 'keep'
            GROUP BY seq, split_part(container, '.', 1), split_part(container, '.', 2)
        ) AS by_sub
        GROUP BY seq, top
    ) AS by_top
    GROUP BY seq"""
