"""Segment-spec messages: validation and normalisation into journal lines (pure functions, no I/O).

The hot path keeps payloads as raw JSON: a message is decoded only one level deep
(``dict[str, msgspec.Raw]``), the handful of fields the server must check are decoded on their own, and
``properties``, ``traits``, ``context`` and every unknown field pass through byte for byte. The stored
message is the message as sent plus the server-side fields (``type``, ``messageId`` when absent,
``receivedAt``, ``sentAt``, ``originalTimestamp``, corrected ``timestamp``, ``context.ip`` for client-side
sources); the body ``writeKey`` is authentication, not data, and is not stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from opencdp.collect import timestamps
from opencdp.errors import Rejected
from opencdp.store import journal

TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})
MAX_MESSAGE_ID = 100
SERVER_FIELDS_ALLOWANCE = 1024
"""Room for the fields the server adds (receivedAt, sentAt, ...): a client's size limit is on what it sent."""
_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
_OBJECT_OR_NULL = (ord("{"), ord("n"))
"""First bytes of a JSON object or null (a value msgspec kept raw starts with its first token)."""

_decode_doc = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_list = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

Doc = dict[str, msgspec.Raw]


@dataclass(slots=True)
class RequestInfo:
    """What the server knows about one request, shared by all its messages."""

    source_id: str
    received_at: datetime
    received_at_text: str
    max_message_bytes: int
    max_batch_items: int
    max_depth: int
    ip: str | None = None
    """Filled into ``context.ip`` when absent (client-side sources only); None leaves context untouched."""


@dataclass(slots=True)
class ItemError:
    index: int | None
    code: str
    message: str

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        return out


@dataclass(slots=True)
class Outcome:
    """Journal lines for one request, and the items that were rejected (also journalled, as ``R`` lines)."""

    lines: list[bytes] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    accepted: int = 0


def parse_body(body: bytes) -> Doc:
    """The top level of a JSON object body; raises :class:`Rejected` for anything else."""
    try:
        if not body.isascii():  # ASCII is UTF-8, and checking it costs no copy
            body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("the body is not valid UTF-8", code="invalid_utf8") from exc
    try:
        return _decode_doc(body)
    except msgspec.ValidationError as exc:
        raise Rejected("the body must be a JSON object", code="invalid_json") from exc
    except msgspec.DecodeError as exc:
        raise Rejected(f"malformed JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:  # msgspec walks nested values even when it keeps them raw
        raise Rejected("the body is nested too deeply", code="too_deep") from exc


def string_field(doc: Doc, key: str) -> str | None:
    """A top-level string field, or None when absent/null; :class:`Rejected` when it has another type."""
    raw = doc.get(key)
    if raw is None:
        return None
    value = _decode_any(raw)
    if value is None:
        return None
    if isinstance(value, str) and "\x00" not in value:  # no engine stores NUL in a text column
        return value
    raise Rejected(f"{key} must be a string without NUL characters", code=f"invalid_{_snake(key)}")


def _id_field(doc: Doc, key: str) -> str | None:
    """userId/anonymousId/previousId/groupId: SDKs may send numbers, which are read as strings."""
    raw = doc.get(key)
    if raw is None:
        return None
    value = _decode_any(raw)
    if value is None or value == "":
        return None
    if isinstance(value, str) and "\x00" not in value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise Rejected(f"{key} must be a string or a number, without NUL characters", code=f"invalid_{_snake(key)}")


def _snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in key)


def _depth(raw: bytes) -> int:
    """Deepest nesting of objects/arrays in ``raw`` (decodes; only called when a cheap bound is exceeded)."""
    try:
        value = _decode_any(raw)
    except (msgspec.DecodeError, RecursionError):
        return 10**6  # msgspec's own recursion limit was hit
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, d)
            stack.extend((child, d + 1) for child in node)
    return deepest


def check_depth(raw: bytes, max_depth: int) -> None:
    # Counting brackets is an upper bound on depth and costs almost nothing; decode only when it might be over.
    # ``count`` reads byte by byte where ``in`` is a memchr: skip counting arrays in a message without any.
    brackets = raw.count(b"{") + (raw.count(b"[") if b"[" in raw else 0)
    if brackets > max_depth and _depth(raw) > max_depth:
        raise Rejected(f"the message is nested deeper than {max_depth} levels", code="too_deep")


def _time_field(doc: Doc, key: str, invalid: dict[str, Any]) -> tuple[str | None, datetime | None]:
    """A timestamp field as text and parsed; an unreadable one is recorded in ``invalid`` and read as absent."""
    raw = doc.get(key)
    if raw is None:
        return None, None
    value = _decode_any(raw)
    if value is None or value == "":
        return None, None
    parsed = timestamps.parse(value)
    if parsed is None:
        invalid[key] = value
        return None, None
    return value, parsed


def _merge(base: Any, over: Any) -> Any:
    """Deep merge of two JSON objects; values in ``over`` win."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if k in out else v
    return out


def _with_ip(context: msgspec.Raw | None, ip: str) -> msgspec.Raw:
    if context is None:
        return msgspec.Raw(_encode({"ip": ip}))
    raw = bytes(context)
    if b'"ip"' in raw:  # might already have one: decide on the parsed object
        parsed = _decode_any(raw)
        if "ip" in parsed:
            return context
        parsed["ip"] = ip
        return msgspec.Raw(_encode(parsed))
    body = raw.strip()[1:].lstrip()
    sep = b"" if body.startswith(b"}") else b","
    return msgspec.Raw(b'{"ip":' + _encode(ip) + sep + body)


def normalise(doc: Doc, type_: str, req: RequestInfo, envelope: Doc | None = None) -> bytes:
    """The journal line of one message (its header fields and compact JSON), or :class:`Rejected`."""
    if type_ not in TYPES:
        raise Rejected(f"unknown message type {type_!r}", code="invalid_type")
    user_id = _id_field(doc, "userId")
    anonymous_id = _id_field(doc, "anonymousId")
    if type_ == "alias":
        if _id_field(doc, "previousId") is None:
            raise Rejected("alias requires previousId", code="missing_previous_id")
        if user_id is None:
            raise Rejected("alias requires userId", code="missing_user_id")
    elif user_id is None and anonymous_id is None:
        raise Rejected("a message needs userId or anonymousId", code="no_user_anon_id")
    event = string_field(doc, "event")
    if type_ == "track" and not event:
        raise Rejected("track requires an event name", code="missing_event")
    if type_ == "group" and _id_field(doc, "groupId") is None:
        raise Rejected("group requires groupId", code="missing_group_id")
    for key in _OBJECT_FIELDS:
        raw = doc.get(key)
        if raw is not None and (not raw or memoryview(raw)[0] not in _OBJECT_OR_NULL):  # an object, or null
            raise Rejected(f"{key} must be an object", code=f"invalid_{key}")
    message_id = string_field(doc, "messageId")
    if message_id is not None and len(message_id) > MAX_MESSAGE_ID:
        raise Rejected(f"messageId is longer than {MAX_MESSAGE_ID} characters", code="message_id_too_long")

    out: dict[str, Any] = dict(doc)
    out.pop("writeKey", None)
    out["type"] = type_
    if not message_id:
        message_id = out["messageId"] = str(uuid.uuid4())
    if envelope is not None:
        for key in ("context", "integrations"):
            if key in envelope:
                merged = _merge(_decode_any(envelope[key]), _decode_any(doc[key]) if key in doc else {})
                out[key] = msgspec.Raw(_encode(merged))
    if req.ip is not None:
        out["context"] = _with_ip(out.get("context"), req.ip)

    # Timestamps are never a reason to refuse a message. A value that cannot be read is replaced (the server's
    # columns must always hold a real time) and kept, as sent, under ``_opencdp.invalid`` with a flag.
    invalid: dict[str, Any] = {}
    sent_text, sent_at = _time_field(doc, "sentAt", invalid)
    if sent_text is None and envelope is not None:
        sent_text, sent_at = _time_field(envelope, "sentAt", invalid)
    original_text, original = _time_field(doc, "originalTimestamp", invalid)
    if original_text is None:
        original_text, original = _time_field(doc, "timestamp", invalid)
    out.pop("sentAt", None)
    out["receivedAt"] = req.received_at_text
    if original is None:  # no device time to correct: the event happened when it arrived
        out["originalTimestamp"] = out["timestamp"] = req.received_at_text
    else:
        out["originalTimestamp"] = timestamps.format_parsed(original_text, original)
        out["timestamp"] = timestamps.format_utc(timestamps.corrected(req.received_at, original, sent_at))
    if sent_at is not None:
        out["sentAt"] = timestamps.format_parsed(sent_text, sent_at)
    if invalid:
        flags = ["invalid_sent_at" if key == "sentAt" else "invalid_timestamp" for key in invalid]
        out["_opencdp"] = {"flags": sorted(set(flags)), "invalid": invalid}

    line = _encode(out)
    if b"\n" in line or b"\r" in line or b"\t" in line:  # whitespace between tokens of a pretty-printed payload
        line = msgspec.json.format(line, indent=-1)
    if len(line) > req.max_message_bytes + SERVER_FIELDS_ALLOWANCE:
        raise Rejected(f"the message exceeds {req.max_message_bytes} bytes", code="message_too_large")
    check_depth(line, req.max_depth)
    return journal.accepted_line(
        req.source_id,
        (message_id, type_, event, user_id, anonymous_id),
        (out["timestamp"], out["originalTimestamp"], out.get("sentAt"), req.received_at_text),
        line,
    )


def rejected_line(req: RequestInfo, error: ItemError, payload: bytes) -> bytes:
    doc = _encode(
        {
            "code": error.code,
            "reason": error.message,
            "index": error.index,
            "receivedAt": req.received_at_text,
            "payload": payload.decode("utf-8", "replace"),
        }
    )
    return journal.rejected_line(req.source_id, req.received_at_text, doc)


def collect_single(doc: Doc, type_: str, req: RequestInfo, body: bytes) -> Outcome:
    outcome = Outcome()
    try:
        outcome.lines.append(normalise(doc, type_, req))
        outcome.accepted = 1
    except Rejected as exc:
        error = ItemError(None, exc.code, exc.message)
        outcome.errors.append(error)
        outcome.lines.append(rejected_line(req, error, body))
    return outcome


def collect_batch(doc: Doc, req: RequestInfo) -> Outcome:
    raw_batch = doc.get("batch")
    if raw_batch is None:
        raise Rejected("a batch body needs a 'batch' array", code="missing_batch")
    try:
        items = _decode_list(raw_batch)
    except msgspec.DecodeError as exc:
        raise Rejected("'batch' must be an array", code="invalid_batch") from exc
    envelope: Doc | None = {k: doc[k] for k in ("context", "integrations", "sentAt") if k in doc} or None
    outcome = Outcome()
    for index, item in enumerate(items):
        try:
            if index >= req.max_batch_items:
                raise Rejected(f"a batch holds at most {req.max_batch_items} items", code="too_many_items")
            if len(item) > req.max_message_bytes:  # as sent, which is what SDKs measure
                raise Rejected(f"the message exceeds {req.max_message_bytes} bytes", code="message_too_large")
            try:
                item_doc = _decode_doc(item)
            except msgspec.DecodeError as exc:
                raise Rejected("a batch item must be a JSON object", code="invalid_item") from exc
            type_ = string_field(item_doc, "type")
            if type_ is None:
                raise Rejected("a batch item needs a type", code="missing_type")
            line = normalise(item_doc, type_, req, envelope)
            outcome.lines.append(line)
            outcome.accepted += 1
        except Rejected as exc:
            error = ItemError(index, exc.code, exc.message)
            outcome.errors.append(error)
            outcome.lines.append(rejected_line(req, error, bytes(item)))
    return outcome
