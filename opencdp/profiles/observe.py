"""What a batch of governed messages and records tells about their people, as set-based SQL (pure functions).

Two derived tables, appended per batch and rebuildable from the raw log:

- ``trait_observations``: one row per (message, trait) that reported a value: identify traits (and their
  ``address``), ``context.traits`` of any call, the fields and attributes of CRM records, and the email, phone
  and name of orders and tickets. Keys are mapped to the golden traits by their synonyms
  (:data:`opencdp.model.profiles.GOLDEN_TRAITS`); any other key is a custom trait under its own name. Emails
  are trimmed and lower-cased, phones written as ``+`` and digits; placeholders and empty values report
  nothing. A value from an imported record counts as ``verified`` (the importer validated it).
- ``activity``: one row per message or record, typed for the computed traits and the timeline: its kind and
  name, when, which *grain* of commerce it is (orders, returns, tickets, events, pages), the order it belongs
  to, the amount and currency as sent, and its properties (or fields).

Both are keyed by the message's anchor identifier (``message_identities``), never by a profile id: a merge or a
split moves identifiers between profiles, and their observations and activity follow with no rewrite.
"""

from __future__ import annotations

from opencdp.govern.plans import lit
from opencdp.identity.extract import phone
from opencdp.model.identity import BLOCKED_VALUES
from opencdp.model.profiles import GOLDEN_TRAITS, NOT_TRAITS

NUMBER = r"^ *-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)? *$"


def number(text: str) -> str:
    """SQL: ``text`` as a DOUBLE when it is written as a number, else NULL (never a cast error)."""
    return f"CASE WHEN regexp_matches({text}, {lit(NUMBER)}) THEN CAST(trim({text}) AS DOUBLE) END"


def _key(k: str) -> str:
    return f"lower(regexp_replace({k}, '[^A-Za-z0-9]', '', 'g'))"


def _trait_name(k: str, prefix: str) -> str:
    """SQL: the trait a key reports (a golden trait by synonym, else the key itself after ``prefix``)."""
    whens = " ".join(f"WHEN {lit(s)} THEN {lit(t.name)}" for t in GOLDEN_TRAITS for s in t.synonyms)
    return f"CASE {_key(k)} {whens} ELSE {prefix}{k} END"


def _normalised(trait: str, value: str) -> str:
    emails = ", ".join(lit(t.name) for t in GOLDEN_TRAITS if t.normaliser == "email")
    phones = ", ".join(lit(t.name) for t in GOLDEN_TRAITS if t.normaliser == "phone")
    return (
        f"CASE WHEN {trait} IN ({emails}) THEN lower(trim({value})) "
        f"WHEN {trait} IN ({phones}) THEN {phone(value)} ELSE trim({value}) END"
    )


def observations(batch: str) -> str:
    """``INSERT`` the trait observations of ``batch`` (a relation with ``seq``, ``node_id``, ``source_id``,
    ``type``, ``event``, ``ts``, ``message``) into ``trait_observations``."""
    objects = f"""
        SELECT seq, node_id, source_id, ts, FALSE AS verified, json_extract(message, '$.traits') AS obj,
               '' AS pre, FALSE AS contact_only
        FROM {batch} WHERE type = 'identify'
        UNION ALL
        SELECT seq, node_id, source_id, ts, FALSE, json_extract(message, '$.traits.address'), 'address.', FALSE
        FROM {batch} WHERE type = 'identify'
        UNION ALL
        SELECT seq, node_id, source_id, ts, FALSE, json_extract(message, '$.context.traits'), '', FALSE
        FROM {batch} WHERE type <> 'record'
        UNION ALL
        SELECT seq, node_id, source_id, ts, TRUE, json_extract(message, '$.fields'), '', event <> 'customers'
        FROM {batch} WHERE type = 'record'
        UNION ALL
        SELECT seq, node_id, source_id, ts, TRUE, json_extract(message, '$.attributes'), '', FALSE
        FROM {batch} WHERE type = 'record' AND event = 'customers'"""
    skipped = ", ".join(lit(k) for k in sorted(NOT_TRAITS))
    blocked = ", ".join(lit(v) for v in sorted(BLOCKED_VALUES))
    return f"""INSERT INTO trait_observations (seq, node_id, source_id, trait, value, verified, observed_at)
    SELECT seq, node_id, source_id, trait, value, verified, ts FROM (
        SELECT seq, node_id, source_id, ts, verified, trait, {_normalised("trait", "raw")} AS value FROM (
            SELECT seq, node_id, source_id, ts, verified, k, contact_only,
                   CASE WHEN pre = '' THEN {_trait_name("k", "")} ELSE {_trait_name("k", "'address.' || ")} END
                       AS trait,
                   CASE cdp_json_type(cdp_json_get(obj, k)) WHEN 'string' THEN cdp_json_text(cdp_json_get(obj, k))
                        WHEN 'null' THEN NULL WHEN 'object' THEN NULL
                        ELSE CAST(cdp_json_get(obj, k) AS VARCHAR) END AS raw
            FROM (SELECT seq, node_id, source_id, ts, verified, obj, pre, contact_only,
                         unnest(cdp_json_keys(obj)) AS k
                  FROM ({objects}) AS o WHERE obj IS NOT NULL AND node_id IS NOT NULL) AS keyed
            WHERE {_key("k")} NOT IN ({skipped}) AND length(k) <= 128
              AND (NOT contact_only OR k IN ('email', 'phone', 'name'))) AS named) AS v
    WHERE value IS NOT NULL AND value <> '' AND lower(value) NOT IN ({blocked})"""


def _field(name: str) -> str:
    return f"json_extract_string(message, '$.fields.{name}')"


def _prop(name: str) -> str:
    return f"json_extract_string(message, '$.properties.{name}')"


def activity(batch: str) -> str:
    """One activity row per message or record of ``batch`` (see the module docstring), its ``node_id`` the
    message's anchor; the stage then moves returns to the profile of the order they return."""
    grain = """CASE WHEN type = 'record' AND event IN ('orders', 'returns', 'tickets') THEN event
                    WHEN type = 'track' AND event = 'Order Completed' THEN 'orders'
                    WHEN type = 'track' AND event = 'Order Refunded' THEN 'returns'
                    WHEN type = 'track' THEN 'events'
                    WHEN type IN ('page', 'screen') THEN 'pages' END"""
    amount = f"""CASE WHEN type = 'record' THEN {_field("amount")}
                      ELSE coalesce({_prop("total")}, {_prop("revenue")}, {_prop("value")}) END"""
    return f"""SELECT seq, node_id, node_id AS anchor, source_id,
           CASE WHEN type = 'record' THEN event ELSE type END AS kind,
           CASE WHEN type IN ('page', 'screen') THEN json_extract_string(message, '$.name') ELSE event END AS name,
           grain, ts,
           CASE WHEN grain = 'orders' AND order_id IS NOT NULL THEN 'order:' || order_id
                WHEN grain IN ('returns', 'tickets') AND type = 'record'
                THEN grain || ':' || source_id || ':' || json_extract_string(message, '$.key') END AS item_key,
           order_id, {number("amount_text")} AS amount, upper(trim(currency_text)) AS currency,
           CASE WHEN type = 'record' THEN json_extract(message, '$.fields')
                ELSE json_extract(message, '$.properties') END AS props
    FROM (SELECT *, {grain} AS grain,
                 CASE WHEN type = 'record' THEN {_field("order_id")} ELSE {_prop("order_id")} END AS order_id,
                 {amount} AS amount_text,
                 CASE WHEN type = 'record' THEN {_field("currency")} ELSE {_prop("currency")} END AS currency_text
          FROM {batch}) AS typed"""
