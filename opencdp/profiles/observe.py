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


def _normalised(trait: str, value: str) -> str:
    emails = ", ".join(lit(t.name) for t in GOLDEN_TRAITS if t.normaliser == "email")
    phones = ", ".join(lit(t.name) for t in GOLDEN_TRAITS if t.normaliser == "phone")
    return (
        f"CASE WHEN {trait} IN ({emails}) THEN lower(trim({value})) "
        f"WHEN {trait} IN ({phones}) THEN {phone(value)} ELSE trim({value}) END"
    )


def _synonyms() -> str:
    """A relation of (key as compared, golden trait): the trait each synonym reports."""
    rows = ", ".join(f"({lit(syn)}, {lit(t.name)})" for t in GOLDEN_TRAITS for syn in t.synonyms)
    return f"(VALUES {rows}) AS syn (key, trait)"


def observations(batch: str) -> tuple[str, str]:
    """Two statements: the (message, key, value) rows of ``batch`` (a relation with ``seq``, ``node_id``,
    ``source_id``, ``origin`` (the messageId, or a record's key), ``type``, ``event``, ``ts``, ``message``)
    into the temporary ``_pf_keyed``, then those that report something into ``trait_observations``, named and
    normalised."""
    objects = f"""
        SELECT seq, node_id, source_id, origin, ts, FALSE AS verified, json_extract(message, '$.traits') AS obj,
               '' AS pre, FALSE AS contact_only
        FROM {batch} WHERE type = 'identify'
        UNION ALL
        SELECT seq, node_id, source_id, origin, ts, FALSE, json_extract(message, '$.traits.address'), 'address.', FALSE
        FROM {batch} WHERE type = 'identify'
        UNION ALL
        SELECT seq, node_id, source_id, origin, ts, FALSE, json_extract(message, '$.context.traits'), '', FALSE
        FROM {batch} WHERE type <> 'record'
        UNION ALL
        SELECT seq, node_id, source_id, origin, ts, TRUE, json_extract(message, '$.fields'), '', event <> 'customers'
        FROM {batch} WHERE type = 'record'
        UNION ALL
        SELECT seq, node_id, source_id, origin, ts, TRUE, json_extract(message, '$.attributes'), '', FALSE
        FROM {batch} WHERE type = 'record' AND event = 'customers'"""
    skipped = ", ".join(lit(k) for k in sorted(NOT_TRAITS))
    blocked = ", ".join(lit(v) for v in sorted(BLOCKED_VALUES))
    keyed = f"""INSERT INTO _pf_keyed (seq, node_id, source_id, origin, ts, verified, pre, k, raw)
    SELECT seq, node_id, source_id, origin, ts, verified, pre, k,
           CASE cdp_json_type(v) WHEN 'string' THEN cdp_json_text(v) WHEN 'null' THEN NULL WHEN 'object' THEN NULL
                ELSE CAST(v AS VARCHAR) END
    FROM (SELECT *, cdp_json_get(obj, k) AS v FROM (
              SELECT seq, node_id, source_id, origin, ts, verified, obj, pre, contact_only,
                     unnest(cdp_json_keys(obj)) AS k
              FROM ({objects}) AS o WHERE obj IS NOT NULL AND node_id IS NOT NULL) AS u
          WHERE {_key("k")} NOT IN ({skipped}) AND length(k) <= 128
            AND (NOT contact_only OR k IN ('email', 'phone', 'name'))) AS x"""
    named = f"""INSERT INTO trait_observations (seq, node_id, source_id, origin, trait, value, verified, observed_at)
    SELECT seq, node_id, source_id, origin, trait, value, verified, ts FROM (
        SELECT seq, node_id, source_id, origin, ts, verified, trait, {_normalised("trait", "raw")} AS value FROM (
            SELECT k.seq, k.node_id, k.source_id, k.origin, k.ts, k.verified, k.raw,
                   coalesce(syn.trait, k.pre || k.k) AS trait
            FROM _pf_keyed AS k LEFT JOIN {_synonyms()} ON syn.key = {_key("k.k")}) AS t) AS v
    WHERE value IS NOT NULL AND value <> '' AND lower(value) NOT IN ({blocked})"""
    return keyed, named


def _field(name: str) -> str:
    return f"json_extract_string(message, '$.fields.{name}')"


def _prop(name: str) -> str:
    return f"json_extract_string(message, '$.properties.{name}')"


ACTIVITY_COLUMNS = "seq, node_id, anchor, source_id, kind, name, grain, ts, item_key, order_id, amount, currency, props"
"""The columns of ``activity`` every row has (the table may have more: property paths kept as columns)."""
KEYED_NAMES = ("Order Completed", "orders", "returns", "tickets")
"""The only names an activity row with an ``item_key`` can have (see :func:`activity`): ``Order Completed``
events and imported orders are ``orders``; imported returns and tickets are named as their kind (a returned
order tracked as ``Order Refunded`` has no key). A condition on any other name counts rows, not items."""


def activity(batch: str) -> tuple[str, str]:
    """Two statements: the batch's rows typed into the temporary ``_pf_typed``, then one activity row per message
    or record into ``_pf_activity`` (see the module docstring), its ``node_id`` the message's anchor; the stage
    then moves returns to the profile of the order they return."""
    typed = f"""INSERT INTO _pf_typed (seq, node_id, source_id, type, event, ts, message, grain, order_id, amount_text,
                                     currency_text)
    SELECT seq, node_id, source_id, type, event, ts, message,
           CASE WHEN type = 'record' AND event IN ('orders', 'returns', 'tickets') THEN event
                WHEN type = 'track' AND event = 'Order Completed' THEN 'orders'
                WHEN type = 'track' AND event = 'Order Refunded' THEN 'returns'
                WHEN type = 'track' THEN 'events'
                WHEN type IN ('page', 'screen') THEN 'pages' END,
           CASE WHEN type = 'record' THEN {_field("order_id")} ELSE {_prop("order_id")} END,
           CASE WHEN type = 'record' THEN {_field("amount")}
                ELSE coalesce({_prop("total")}, {_prop("revenue")}, {_prop("value")}) END,
           CASE WHEN type = 'record' THEN {_field("currency")} ELSE {_prop("currency")} END
    FROM {batch}"""
    rows = f"""INSERT INTO _pf_activity SELECT seq, node_id, node_id AS anchor, source_id,
           CASE WHEN type = 'record' THEN event ELSE type END AS kind,
           CASE WHEN type IN ('page', 'screen') THEN json_extract_string(message, '$.name') ELSE event END AS name,
           grain, ts,
           CASE WHEN grain = 'orders' AND order_id IS NOT NULL THEN 'order:' || order_id
                WHEN grain IN ('returns', 'tickets') AND type = 'record'
                THEN grain || ':' || source_id || ':' || json_extract_string(message, '$.key') END AS item_key,
           order_id, {number("amount_text")} AS amount, upper(trim(currency_text)) AS currency,
           CASE WHEN type = 'record' THEN json_extract(message, '$.fields')
                ELSE json_extract(message, '$.properties') END AS props
    FROM _pf_typed"""
    return typed, rows
