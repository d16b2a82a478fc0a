"""Identifier types: where each is read from a message or record, how it is normalised, its priority, and the
placeholder values that never identify anyone (pure definitions, no I/O).

An identifier is a (type, value) pair. Two identifiers seen in the same message or record belong to the same
person (a deterministic edge); the people are the connected components of those edges (identity/stitch.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Normaliser = Literal["text", "email", "phone"]


@dataclass(frozen=True)
class IdentifierType:
    name: str
    priority: int
    """Lower is stronger: a message's strongest identifier anchors it, and (later) the weaker edge yields."""
    limit: int
    """At most this many distinct values per profile (enforced by the next step of identity; recorded now)."""
    paths: tuple[str, ...]
    """JSON paths into a governed message (``$.traits.email``), or ``column:user_id`` for a column of it."""
    normaliser: Normaliser = "text"
    records_only: bool = False
    """Read from imported records (``$.fields...``) only; the value is namespaced by the record's source."""


def identifier_key(ref_sql: str) -> str:
    """SQL for an identifier's lookup key from SQL text ``type:value`` (types have no colon, so the text is
    unambiguous): the 128-bit MD5 of it as a UUID. A micro-batch finds its known identifiers by joining on this
    fixed-width key instead of hashing every stored identifier's two strings; at 128 bits two identifiers sharing
    a key is not a practical concern (about 10^-19 at ten billion identifiers)."""
    return f"CAST(md5({ref_sql}) AS UUID)"


NODE_KEY = identifier_key("id_type || ':' || id_value")
"""The lookup key of a row that has ``id_type`` and ``id_value`` columns (``identity_nodes.id_key``)."""


IDENTIFIER_TYPES: tuple[IdentifierType, ...] = (
    IdentifierType("user_id", 1, 1, ("column:user_id", "$.fields.user_id")),
    IdentifierType("crm_id", 2, 10, ("$.fields.customer_id",), records_only=True),
    IdentifierType("email", 3, 5, ("$.traits.email", "$.context.traits.email", "$.fields.email"), "email"),
    IdentifierType("phone", 4, 5, ("$.traits.phone", "$.context.traits.phone", "$.fields.phone"), "phone"),
    IdentifierType("device_id", 5, 10, ("$.context.device.id",)),
    IdentifierType("anonymous_id", 6, 500, ("column:anonymous_id",)),
)

BLOCKED_VALUES: frozenset[str] = frozenset(
    {
        "",
        "-",
        "0",
        "00000000-0000-0000-0000-000000000000",
        "0000000000",
        "1234567890",
        "anonymous",
        "test",
        "test@test.com",
        "test@example.com",
        "noemail@noemail.com",
        "no@email.com",
        "none@none.com",
        "email@example.com",
        "user@example.com",
        "n/a",
        "na",
        "none",
        "null",
        "nil",
        "undefined",
        "unknown",
        "not provided",
        "[object object]",
    }
)
"""Placeholders seen in real data (compared after normalisation, lower case): never an identifier."""


def canonical_ref(ref: str) -> str:
    """A ``type:value`` reference as identifiers are stored: an email's value trimmed and lower-cased (the other
    types are compared as given; a profile id passes through)."""
    kind, sep, value = ref.partition(":")
    return f"email:{value.strip().lower()}" if sep and kind == "email" else ref
