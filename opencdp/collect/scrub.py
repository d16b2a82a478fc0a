"""Dropping PII on the ingest path, before anything is journalled (the one policy handled before the raw log).

Only a source whose PII policy *drops* a class pays for this: every scalar field of its messages' containers
(``properties``, ``traits``, ``context``, ``context.traits``) is classified as
:func:`opencdp.model.pii.classify` does, and the fields of a dropped class are removed. ``mask`` and ``hash``
are applied by governance instead (the raw log may keep those values; the governed stream never shows them).

It is lean because it runs on every message of such a source. The fast path (``messages._fast_line``) asks
:meth:`Scrubber.may_drop` first: a container's keys are read (its values stay raw) and judged once per key
set (messages of a source repeat their shapes), and its values as a whole in C: no value can be of a dropped
class unless the character the class's pattern needs and a long enough run of the characters it is made of
are in the raw bytes. Only a message that might hold something to drop takes the general path
(``messages.normalise``), which decodes its containers and drops exactly (:meth:`Scrubber.drop_containers`).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from opencdp.model.pii import (
    VALUE_RULES,
    Declared,
    PiiClass,
    ValueRule,
    class_by_name_or_declared,
    class_by_value,
    rules_deciding,
)

WITHHELD = b'"withheld: this source drops PII, and the payload could not be read to drop it"'
"""What is kept of an unreadable payload from a source that drops PII (it cannot be classified, so not stored)."""

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_CONTAINERS = ("properties", "traits", "context")
_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
MAX_CACHED_SHAPES = 10_000


class _ValueFilter:
    """Whether raw JSON might hold a value one rule matches: the character the rule needs is there, and a run
    of ``min_length`` of the characters its text consists of (those characters mapped to 1 and the rest to 0
    by ``bytes.translate``, then the run searched for)."""

    def __init__(self, rule: ValueRule) -> None:
        self.needs = rule.needs.encode()
        self.table = bytes(1 if chr(b) in rule.run else 0 for b in range(256)) if rule.run else b""
        self.needle = b"\x01" * rule.min_length

    def may_match(self, raw: bytes) -> bool:
        if self.needs and self.needs not in raw:
            return False
        return not self.table or self.needle in raw.translate(self.table)


class Scrubber:
    """Finds and removes the fields of the dropped classes."""

    def __init__(self, dropped: frozenset[PiiClass], declared: Declared) -> None:
        self.dropped = dropped
        self.declared = declared
        self._upto = rules_deciding(dropped)
        rules = VALUE_RULES[: self._upto]
        self._values = [_ValueFilter(r) for r in rules] if all(r.run or r.needs for r in rules) else None
        self.min_value_length = min((r.min_length for r in rules), default=0)
        """No value shorter than this is of a dropped class."""
        self._shapes: dict[tuple[str, tuple[str, ...]], bool] = {}

    def may_drop(self, *containers: msgspec.Raw) -> bool:
        """False only when no field of these raw containers (``properties``, ``traits``, ``context``, in that
        order) can be of a dropped class: names judged per key set (cached), values by C-level pre-checks."""
        for name, container in zip(_CONTAINERS, containers, strict=False):
            raw = bytes(container)
            if len(raw) < 3 or raw[0] != 123:  # absent, null or empty: nothing to drop
                continue
            fields = _decode_fields(raw)
            if self._named(name, fields):
                return True
            traits = fields.get("traits") if name == "context" else None
            if (
                traits is not None
                and bytes(traits)[:1] == b"{"
                and self._named("context.traits", _decode_fields(traits))
            ):
                return True
            if self._upto and (self._values is None or b"\\" in raw or any(v.may_match(raw) for v in self._values)):
                return True  # a value might be of a dropped class (or is escaped, so bytes cannot tell)
        return False

    def _named(self, container: str, fields: dict[str, msgspec.Raw]) -> bool:
        """Whether a key of this container is named (or declared) as a dropped class: once per key set."""
        keys = tuple(fields)
        found = self._shapes.get((container, keys))
        if found is None:
            if len(self._shapes) >= MAX_CACHED_SHAPES:
                self._shapes.clear()
            found = self._shapes[(container, keys)] = any(self.drops_field(container, k) for k in keys)
        return found

    def drops_field(self, container: str, key: str) -> bool:
        """Whether every value of this field is dropped (declared, or named, as a dropped class)."""
        return class_by_name_or_declared(container, key, self.declared) in self.dropped

    def judges_values(self, container: str, key: str) -> bool:
        """Whether this field's values must be looked at one by one (it has no class of its own, and a dropped
        class can be told by its value)."""
        return self._upto > 0 and class_by_name_or_declared(container, key, self.declared) is None

    def drops_value(self, container: str, key: str, text: str) -> bool:
        """Whether this value is dropped: its field's class, else (no declared or named class) its value's."""
        return self._is_dropped(container, key, text)

    def drop_containers(self, message: dict[str, Any]) -> None:
        """Drop in a message read one level deep (its containers raw): the changed containers re-encoded."""
        decoded = {k: _decode(message[k]) for k in _CONTAINERS if isinstance(message.get(k), msgspec.Raw)}
        if self.drop_in(decoded):
            for key, value in decoded.items():
                message[key] = msgspec.Raw(_encode(value))

    def payload(self, raw: bytes) -> bytes:
        """A rejected item's payload as it may be kept: without the dropped fields, or withheld if unreadable."""
        try:
            doc = _decode(raw)
        except (msgspec.DecodeError, RecursionError):
            return WITHHELD
        if not isinstance(doc, dict):
            return WITHHELD
        return _encode(doc) if self.drop_in(doc) else raw

    def drop_in(self, message: dict[str, Any]) -> bool:
        """Drop in place in a decoded message; True when something was dropped."""
        changed = self._drop("properties", message.get("properties"))
        changed |= self._drop("traits", message.get("traits"))
        context = message.get("context")
        changed |= self._drop("context", context)
        if isinstance(context, dict):
            changed |= self._drop("context.traits", context.get("traits"))
        return changed

    def _drop(self, container: str, obj: object) -> bool:
        if not isinstance(obj, dict):
            return False
        doomed = []
        for key, value in obj.items():
            if value is None or isinstance(value, dict | list):
                continue
            text = value if isinstance(value, str) else str(value) if type(value) is int else None
            if self._is_dropped(container, key, text):
                doomed.append(key)
        for key in doomed:
            del obj[key]
        return bool(doomed)

    def _is_dropped(self, container: str, key: str, text: str | None) -> bool:
        found: PiiClass | Literal["none"] | None = class_by_name_or_declared(container, key, self.declared)
        if found is not None:
            return found in self.dropped
        return text is not None and self._upto > 0 and class_by_value(text, self._upto) in self.dropped
