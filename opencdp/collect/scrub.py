"""Dropping PII on the ingest path, before anything is journalled (the one policy handled before the raw log).

Only a source whose PII policy *drops* a class pays for this: every scalar field of its messages' containers
(``properties``, ``traits``, ``context``, ``context.traits``, and a batch envelope's ``context``) is
classified as :func:`opencdp.model.pii.classify` does, and the fields of a dropped class are removed. A body
with nothing to drop is journalled byte for byte as sent. ``mask`` and ``hash`` are applied by governance
instead (the raw log may keep those values; the governed stream never shows them).

Finding is lean, because it runs on every request of such a source: the body is decoded with the containers'
values left as raw JSON (nothing nested is built), the names of a container's keys are classified once per
key set (a cache: messages of one source repeat their shapes), and a value is decoded only when it is long
enough to be of a dropped class. Only a body that has something to drop is decoded in full and re-encoded.
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

WITHHELD = b'"withheld: the body could not be read, and this source drops PII"'
"""What is kept of an unreadable body from a source that drops PII (it cannot be classified, so not stored)."""

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

Fields = dict[str, msgspec.Raw]


class _Message(msgspec.Struct, gc=False):
    """A message's containers, their values kept raw; every other field is skipped, not built."""

    properties: Fields | None = None
    traits: Fields | None = None
    context: Fields | None = None


class _Batch(msgspec.Struct, gc=False):
    batch: list[_Message] | None = None
    context: Fields | None = None


_decode_message = msgspec.json.Decoder(_Message).decode
_decode_batch = msgspec.json.Decoder(_Batch).decode
_decode_fields = msgspec.json.Decoder(Fields).decode
_NOT_SCALAR = frozenset(b"{[n")
"""First bytes of raw JSON values that are never classified: objects, arrays, null."""
_NUMBER_START = frozenset(b"-0123456789")
MAX_CACHED_SHAPES = 10_000


class _Prefilter:
    """Whether raw JSON values (joined by NUL) might hold a value one rule matches: the character the rule
    needs is there, and a run of ``min_length`` of the characters its text consists of (found by mapping those
    characters to 1 and the rest to 0 in C, then searching for the run)."""

    def __init__(self, rule: ValueRule) -> None:
        self.needs = rule.needs.encode()
        self.table = bytes(1 if chr(b) in rule.run else 0 for b in range(256)) if rule.run else b""
        self.needle = b"\x01" * rule.min_length

    def may_match(self, joined: bytes) -> bool:
        if self.needs and self.needs not in joined:
            return False
        return not self.table or self.needle in joined.translate(self.table)


Doomed = list[tuple[int, str, str]]
"""(message index, -1 for a batch envelope; container; key) of each field to drop."""


class Scrubber:
    """Finds and removes the fields of the dropped classes."""

    def __init__(self, dropped: frozenset[PiiClass], declared: Declared) -> None:
        self.dropped = dropped
        self.declared = declared
        self._upto = rules_deciding(dropped)
        rules = VALUE_RULES[: self._upto]
        self._min_length = min((r.min_length for r in rules), default=0)
        starts = "".join(r.starts for r in rules) if all(r.starts for r in rules) else ""
        self._string_starts = frozenset(starts.encode())  # empty: a string may start with anything
        self._number_can_match = not starts or bool(set(starts) & set("-0123456789"))
        self._prefilter = [_Prefilter(r) for r in rules] if all(r.run or r.needs for r in rules) else None

        self._shapes: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def _by_name(self, container: str, key: str) -> PiiClass | Literal["none"] | None:
        return class_by_name_or_declared(container, key, self.declared)

    def drops_field(self, container: str, key: str) -> bool:
        """Whether every value of this field is dropped (declared, or named, as a dropped class)."""
        return self._by_name(container, key) in self.dropped

    def drops_value(self, container: str, key: str, text: str) -> bool:
        """Whether this value is dropped: its field's class, else (no declared or named class) its value's."""
        found = self._by_name(container, key)
        if found is not None:
            return found in self.dropped
        return self._value_dropped(text)

    def _value_dropped(self, text: str) -> bool:
        return self._upto > 0 and class_by_value(text, self._upto) in self.dropped

    def _shape(self, container: str, keys: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """For a container with this key set: the keys dropped by their name, and those to judge by value."""
        found = self._shapes.get((container, keys))
        if found is None:
            if len(self._shapes) >= MAX_CACHED_SHAPES:
                self._shapes.clear()
            named: list[str] = []
            judged: list[str] = []
            for key in keys:
                by_name = self._by_name(container, key)
                if by_name is None and self._upto:
                    judged.append(key)
                elif by_name is not None and by_name in self.dropped:
                    named.append(key)
            found = self._shapes[(container, keys)] = (tuple(named), tuple(judged))
        return found

    def _raw_dropped(self, raw: bytes) -> bool:
        """Whether a raw value of a field without a class of its own is of a dropped class, by its value."""
        first = raw[0]
        if first == 34:  # '"': a string
            return (not self._string_starts or raw[1] in self._string_starts) and self._value_dropped(_decode(raw))
        if (
            first in _NUMBER_START
            and self._number_can_match
            and b"." not in raw
            and b"e" not in raw
            and b"E" not in raw
        ):
            return self._value_dropped(str(int(raw)))
        return False

    def _find(self, index: int, container: str, fields: Fields | None, doomed: Doomed) -> None:
        if not fields:
            return
        named, judged = self._shape(container, tuple(fields))
        for key in named:
            raw = bytes(fields[key])
            if raw and raw[0] not in _NOT_SCALAR:
                doomed.append((index, container, key))
        if judged and self._prefilter is not None:
            joined = b"\x00".join([fields[k] for k in judged])
            if b"\\u" not in joined and not any(p.may_match(joined) for p in self._prefilter):
                judged = ()  # no value here can be of a dropped class: none is looked at alone
        for key in judged:
            raw = bytes(fields[key])
            if raw and raw[0] not in _NOT_SCALAR and len(raw) >= self._min_length and self._raw_dropped(raw):
                doomed.append((index, container, key))
        traits = fields.get("traits") if container == "context" else None
        if traits is not None and bytes(traits)[:1] == b"{":
            self._find(index, "context.traits", _decode_fields(traits), doomed)

    def _find_message(self, index: int, m: _Message, doomed: Doomed) -> None:
        self._find(index, "properties", m.properties, doomed)
        self._find(index, "traits", m.traits, doomed)
        self._find(index, "context", m.context, doomed)

    def body(self, raw: bytes, *, batch: bool) -> bytes | None:
        """The body without the dropped fields (``raw`` itself when none); None when it cannot be read."""
        doomed: Doomed = []
        try:
            if batch:
                b = _decode_batch(raw)
                self._find(-1, "context", b.context, doomed)
                for i, m in enumerate(b.batch or ()):
                    self._find_message(i, m, doomed)
            else:
                self._find_message(0, _decode_message(raw), doomed)
        except msgspec.ValidationError:
            return self._slow(raw, batch=batch)  # a container that is not an object: judge it decoded
        except (msgspec.DecodeError, RecursionError):
            return None
        if not doomed:
            return raw
        doc = _decode(raw)
        for index, container, key in doomed:
            message = doc if index == -1 or not batch else doc["batch"][index]
            obj = message["context"] if container.startswith("context") else message[container]
            if container == "context.traits":
                obj = obj["traits"]
            obj.pop(key, None)
        return bytes(_encode(doc))

    def _slow(self, raw: bytes, *, batch: bool) -> bytes | None:
        """For bodies whose shape the lean pass cannot read (an item that is not an object, ...)."""
        try:
            doc = _decode(raw)
        except (msgspec.DecodeError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        if not batch:
            return _encode(doc) if self._drop_in(doc) else raw
        changed = self._drop_in({"context": doc.get("context")})
        items = doc.get("batch")
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict):
                changed |= self._drop_in(item)
        return _encode(doc) if changed else raw

    def _drop_in(self, msg: dict[str, Any]) -> bool:
        changed = self._drop_container("properties", msg.get("properties"))
        changed |= self._drop_container("traits", msg.get("traits"))
        context = msg.get("context")
        changed |= self._drop_container("context", context)
        if isinstance(context, dict):
            changed |= self._drop_container("context.traits", context.get("traits"))
        return changed

    def _drop_container(self, container: str, obj: object) -> bool:
        if not isinstance(obj, dict):
            return False
        doomed = []
        for key, value in obj.items():
            if value is None or isinstance(value, dict | list):
                continue
            found = self._by_name(container, key)
            if found is not None:
                if found in self.dropped:
                    doomed.append(key)
                continue
            text = value if isinstance(value, str) else None
            if isinstance(value, int) and not isinstance(value, bool):
                text = str(value)
            if text is not None and self._value_dropped(text):
                doomed.append(key)
        for key in doomed:
            del obj[key]
        return bool(doomed)
