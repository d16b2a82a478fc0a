"""Dropping PII on the ingest path, before anything is journalled (the one policy handled before the raw log).

Only a source whose PII policy *drops* a class pays for this: its request bodies are decoded, every scalar
field of the containers (``properties``, ``traits``, ``context``, ``context.traits``, and a batch envelope's
``context``) is classified with :func:`opencdp.model.pii.classify`, and the fields of a dropped class are
removed. A body with nothing to drop is journalled byte for byte as sent. ``mask`` and ``hash`` are applied
by governance instead (the raw log may keep those values; the governed stream never shows them).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from opencdp.model.pii import PiiClass, class_by_value, classify, normalised_name

WITHHELD = b'"withheld: the body could not be read, and this source drops PII"'
"""What is kept of an unreadable body from a source that drops PII (it cannot be classified, so not stored)."""

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class Scrubber:
    """Removes the fields of the dropped classes from messages."""

    def __init__(self, dropped: frozenset[PiiClass], declared: dict[str, PiiClass | Literal["none"]]) -> None:
        self.dropped = dropped
        self.declared = declared

    def drops_field(self, container: str, key: str) -> bool:
        """Whether every value of this field is dropped (declared, or named, as a dropped class)."""
        return classify(container, key, None, self.declared) in self.dropped

    def drops_value(self, key: str, text: str) -> bool:
        """Whether this value of a field that is not dropped as a whole is (a dropped class by its value)."""
        return normalised_name(key) not in self.declared and class_by_value(text) in self.dropped

    def _container(self, container: str, obj: object) -> bool:
        if not isinstance(obj, dict):
            return False
        doomed = [
            key
            for key, value in obj.items()
            if not isinstance(value, dict | list)
            and value is not None
            and classify(container, key, _text(value), self.declared) in self.dropped
        ]
        for key in doomed:
            del obj[key]
        return bool(doomed)

    def message(self, msg: dict[str, Any]) -> bool:
        """Drop in place; True when something was dropped."""
        changed = self._container("properties", msg.get("properties"))
        changed |= self._container("traits", msg.get("traits"))
        context = msg.get("context")
        changed |= self._container("context", context)
        if isinstance(context, dict):
            changed |= self._container("context.traits", context.get("traits"))
        return changed

    def body(self, raw: bytes, *, batch: bool) -> bytes | None:
        """The body without the dropped fields (``raw`` itself when none); None when it cannot be read."""
        try:
            doc = _decode(raw)
        except (msgspec.DecodeError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        if not batch:
            return _encode(doc) if self.message(doc) else raw
        changed = self.message({"context": doc.get("context")})
        items = doc.get("batch")
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict):
                changed |= self.message(item)
        return _encode(doc) if changed else raw
