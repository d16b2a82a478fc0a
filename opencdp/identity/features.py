"""Match records out of governed messages and records, as set-based SQL (pure functions, no connection).

:func:`match_records` turns governed rows (``seq``, ``source_id``, ``type``, ``message``) joined to their anchor
identifier (``node_id``) into one row per match key: an imported record is keyed by its source and natural key
(a later version replaces an earlier one), an identify call by its anchor identifier (the latest traits win).
Values are trimmed and lower-cased; empty values, values a PII policy masked and placeholders are NULL. Only
rows that carry a name or a national id become match records (:data:`opencdp.model.matching.IDENTIFYING`).
"""

from __future__ import annotations

from opencdp.govern.plans import lit
from opencdp.identity.extract import phone
from opencdp.model.identity import BLOCKED_VALUES
from opencdp.model.matching import FEATURES, IDENTIFYING, Feature


def _read(path: str) -> str:
    if path.startswith("first-word:"):
        v = f"trim(json_extract_string(message, {lit(path.removeprefix('first-word:'))}))"
        return f"nullif(split_part({v}, ' ', 1), '')"
    if path.startswith("last-word:"):
        v = f"trim(json_extract_string(message, {lit(path.removeprefix('last-word:'))}))"
        return f"CASE WHEN strpos({v}, ' ') > 0 THEN reverse(split_part(reverse({v}), ' ', 1)) END"
    return f"json_extract_string(message, {lit(path)})"


def _value(f: Feature) -> str:
    records = [_read(p) for p in f.paths if "$.fields." in p]
    messages = [_read(p) for p in f.paths if "$.fields." not in p]
    parts = []
    if records:
        parts.append(f"CASE WHEN type = 'record' THEN coalesce({', '.join(records)}) END")
    if messages:
        parts.append(f"CASE WHEN type <> 'record' THEN coalesce({', '.join(messages)}) END")
    return f"coalesce({', '.join(parts)})" if len(parts) > 1 else parts[0]


def _clean(column: str) -> str:
    blocked = ", ".join(lit(v) for v in sorted(BLOCKED_VALUES))
    v = phone(column) if column == "phone" else f"lower(trim({column}))"  # phones as identifiers are
    return f"CASE WHEN {v} IN ({blocked}) OR strpos({v}, '***') > 0 OR length({v}) > 256 THEN NULL ELSE {v} END"


def _may_identify(text: str) -> str:
    """A cheap test on the message's text that it may carry an identifying feature: every name path ends in
    ``name``/``Name`` (``first_name``, ``lastName``, ``name``), and national ids are ``national_id``. Most
    messages (an identify call with an email only) skip the feature extraction altogether."""
    return f"strpos({text}, 'ame\"') > 0 OR strpos({text}, 'national_id\"') > 0"


def candidates(rows: str) -> str:
    """The rows of relation ``rows`` (``seq``, ``source_id``, ``type``, ``message``, ``node_id``) that may
    be match records: records and identify calls (or messages with ``context.traits``) whose text names a
    name or a national id. A cheap statement, so that a batch without any skips :func:`match_records`."""
    return f"""SELECT seq, source_id, type, message, node_id FROM ({rows}) AS g
        WHERE (type IN ('record', 'identify') OR json_extract(message, '$.context.traits') IS NOT NULL)
          AND ({_may_identify("CAST(message AS VARCHAR)")})"""


def match_records(rows: str) -> str:
    """``match_key``, ``node_id``, ``seq`` and one column per feature, for relation ``rows`` (as
    :func:`candidates` gives them); the latest row per match key."""
    names = [f.name for f in FEATURES]
    raw = ", ".join(f"{_value(f)} AS {f.name}" for f in FEATURES)
    clean = ", ".join(f"{_clean(n)} AS {n}" for n in names)
    identifying = " OR ".join(f"{n} IS NOT NULL" for n in IDENTIFYING)
    return f"""SELECT match_key, node_id, seq, {", ".join(names)} FROM (
        SELECT *, row_number() OVER (PARTITION BY match_key ORDER BY seq DESC) AS _rank FROM (
            SELECT match_key, node_id, seq, {clean} FROM (
                SELECT CASE WHEN type = 'record'
                            THEN source_id || ':' || json_extract_string(message, '$.key')
                            ELSE 'node:' || CAST(node_id AS VARCHAR) END AS match_key,
                       node_id, seq, {raw}
                FROM ({rows}) AS g
            ) AS r
        ) AS c WHERE {identifying}
    ) AS x WHERE _rank = 1"""


def match_sample(limit: int) -> str:
    """At most ``limit`` match records (``match_id`` and the features), a fixed pseudo-random choice when
    there are more: what a model is trained on."""
    names = ", ".join(f.name for f in FEATURES)
    return (
        f"SELECT match_id, {names} FROM identity_match_records "
        f"ORDER BY md5(CAST(match_id AS VARCHAR)) LIMIT {int(limit)}"
    )
