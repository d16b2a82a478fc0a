"""Segment-spec messages: validation and normalisation into journal lines (pure functions, no I/O).

The stored message is the message as sent, byte for byte, with ``type`` and ``messageId`` added when absent.
The server's own fields (``receivedAt``, ``sentAt``, ``originalTimestamp``, the skew-corrected ``timestamp``)
are columns of the journal line and of the raw log, not edits of the message. Two paths produce a line:

- :func:`_fast_line`, for the usual message: one msgspec decode into :class:`Checked` (the dozen fields the
  server must read; everything else is skipped, not built), checks, and the raw bytes kept as they came.
- :func:`normalise`, for everything else (errors with their precise codes, a ``writeKey`` in the message, a
  batch envelope's ``context`` to merge, ``context.ip`` to fill for client-side sources, timestamps that need
  reformatting or cannot be read): the message decoded one level deep (``dict[str, msgspec.Raw]``) and
  re-encoded. Both give the same line for a message the fast path takes (tested).

The body ``writeKey`` is authentication, not data, and is not stored.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from opencdp.collect import timestamps
from opencdp.collect.scrub import Scrubber
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

_ABSENT = msgspec.Raw(b"")
_FAST_TYPES = frozenset({"identify", "track", "page", "screen"})
"""Types whose checks the fast path makes (alias and group have more: they take :func:`normalise`)."""
MAX_CORRECTION_YEARS = 5000
"""A device clock off by more than this is not corrected: PostgreSQL's range would not hold the result."""

Id = str | int | float | None


class Checked(msgspec.Struct, gc=False):
    """The fields of a message the server reads; msgspec skips every other field without building it."""

    type: str | msgspec.UnsetType | None = msgspec.UNSET  # absent and null differ: the fast path adds an absent one
    event: str | None = None
    user_id: Id = msgspec.field(default=None, name="userId")
    anonymous_id: Id = msgspec.field(default=None, name="anonymousId")
    message_id: str | msgspec.UnsetType | None = msgspec.field(default=msgspec.UNSET, name="messageId")
    timestamp: str | None = None
    original_timestamp: str | None = msgspec.field(default=None, name="originalTimestamp")
    sent_at: str | None = msgspec.field(default=None, name="sentAt")
    write_key: str | None = msgspec.field(default=None, name="writeKey")
    properties: msgspec.Raw = _ABSENT
    traits: msgspec.Raw = _ABSENT
    context: msgspec.Raw = _ABSENT
    integrations: msgspec.Raw = _ABSENT


class Envelope(msgspec.Struct, gc=False):
    """A batch body, its items kept raw."""

    batch: list[msgspec.Raw] | None = None
    sent_at: str | None = msgspec.field(default=None, name="sentAt")
    write_key: str | None = msgspec.field(default=None, name="writeKey")
    context: msgspec.Raw = _ABSENT
    integrations: msgspec.Raw = _ABSENT


_decode_checked = msgspec.json.Decoder(Checked).decode
_decode_envelope = msgspec.json.Decoder(Envelope).decode

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
    scrubber: Scrubber | None = None
    """The source's PII policy drops classes: they are removed before the line is made."""


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
    check_utf8(body)
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
    """The journal line of one message read as a ``Doc`` (any shape), or :class:`Rejected`.

    This is the general path, for whatever :func:`_fast_line` leaves: errors, a ``writeKey`` to drop, an
    envelope to merge, an ``ip`` to add, timestamps to reformat or that cannot be read.
    """
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
    if req.scrubber is not None:
        req.scrubber.drop_containers(out)

    # Timestamps are never a reason to refuse a message. A value that cannot be read stays in the message as
    # sent, is listed under ``_opencdp.invalid`` with a flag, and counts as absent for the server's columns.
    invalid: dict[str, Any] = {}
    sent_text, sent_at = _time_field(doc, "sentAt", invalid)
    if sent_text is None and envelope is not None:
        sent_text, sent_at = _time_field(envelope, "sentAt", invalid)
    original_text, original = _time_field(doc, "originalTimestamp", invalid)
    if original_text is None:
        original_text, original = _time_field(doc, "timestamp", invalid)
    if invalid:
        flags = ["invalid_sent_at" if key == "sentAt" else "invalid_timestamp" for key in invalid]
        out["_opencdp"] = {"flags": sorted(set(flags)), "invalid": invalid}
    times = (
        _uncorrectable(original_text, original, sent_at),
        None if original is None else timestamps.format_parsed(original_text, original),
        None if sent_at is None else timestamps.format_parsed(sent_text, sent_at),
        req.received_at_text,
    )
    line = _encode(out)
    if b"\n" in line or b"\r" in line or b"\t" in line:  # whitespace between tokens of a pretty-printed payload
        line = msgspec.json.format(line, indent=-1)
    if len(line) > req.max_message_bytes + SERVER_FIELDS_ALLOWANCE:
        raise Rejected(f"the message exceeds {req.max_message_bytes} bytes", code="message_too_large")
    check_depth(line, req.max_depth)
    return journal.accepted_line(req.source_id, (message_id, type_, event, user_id, anonymous_id), times, line)


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


@dataclass(slots=True)
class Body:
    """A request body, read as far as the request needs before the source is known.

    ``fast`` is the body decoded into :class:`Checked` (a single call) or :class:`Envelope` (a batch); it is
    None when that decode failed, and then ``doc`` holds the body read one level deep (:func:`parse_body`, which
    raises :class:`Rejected` for a body that is not a JSON object).
    """

    raw: bytes
    write_key: str | None
    fast: Checked | Envelope | None = None
    doc: Doc | None = None


def read_body(raw: bytes, *, batch: bool) -> Body:
    """Read a request body: its write key and its messages' fields; :class:`Rejected` when it is unreadable."""
    check_utf8(raw)
    try:
        fast = _decode_envelope(raw) if batch else _decode_checked(raw)
    except (msgspec.DecodeError, RecursionError):
        doc = parse_body(raw)
        return Body(raw, string_field(doc, "writeKey") if "writeKey" in doc else None, doc=doc)
    return Body(raw, fast.write_key, fast=fast)


def check_utf8(raw: bytes) -> None:
    try:
        if not raw.isascii():  # ASCII is UTF-8, and checking it costs no copy
            raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("the body is not valid UTF-8", code="invalid_utf8") from exc


def _fast_id(value: Id) -> str | None:
    if value is None or value == "":
        return None
    return value if value.__class__ is str else str(value)


def _readable(text: str) -> datetime | None:
    """A timestamp already in the canonical form (``2024-05-01T12:00:00.123Z``) that is a real date, else None."""
    if _CANONICAL(text) is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z").fullmatch


def _uncorrectable(original_text: str | None, original: datetime | None, sent_at: datetime | None) -> str | None:
    """The ``timestamp`` to store when the skew correction must not run (a clock off by millennia), else None.

    The correction itself (``receivedAt - (sentAt - originalTimestamp)``) is made by the loader, in SQL.
    """
    if original is None or sent_at is None or abs(sent_at.year - original.year) <= MAX_CORRECTION_YEARS:
        return None
    return timestamps.format_parsed(original_text, original)


Sent = tuple[str, datetime] | None
"""A batch's ``sentAt``, as sent (already in the canonical form) and parsed."""


def _fast_line(f: Checked, raw: bytes, type_: str | None, req: RequestInfo, batch_sent: Sent) -> bytes | None:
    """The journal line of a usual message, from its raw bytes; None sends it to :func:`normalise`.

    ``type_`` is the route's type (None for a batch item).
    """
    if f.write_key is not None or req.ip is not None:
        return None
    prefix = b""
    if f.type is msgspec.UNSET:
        if type_ is None:
            return None
        prefix = b'"type":"' + type_.encode() + b'",'
    elif type_ is None:
        type_ = f.type
    elif f.type != type_:
        return None
    if type_ not in _FAST_TYPES:
        return None
    user_id, anonymous_id, event = _fast_id(f.user_id), _fast_id(f.anonymous_id), f.event
    if (user_id is None and anonymous_id is None) or (type_ == "track" and not event):
        return None
    for value in (f.properties, f.traits, f.context, f.integrations):
        if value is not _ABSENT and memoryview(value)[0] not in _OBJECT_OR_NULL:  # not an object, nor null
            return None
    if req.scrubber is not None and req.scrubber.may_drop(f.properties, f.traits, f.context):
        return None  # normalise drops what must not be stored
    message_id = f.message_id
    if message_id is msgspec.UNSET:
        message_id = str(uuid.uuid4())
        prefix += b'"messageId":"' + message_id.encode() + b'",'
    elif not message_id or len(message_id) > MAX_MESSAGE_ID:
        return None
    original_text = f.original_timestamp or f.timestamp
    original = sent_at = None
    if original_text is not None and (original := _readable(original_text)) is None:
        return None
    sent = f.sent_at
    if sent is not None:
        if (sent_at := _readable(sent)) is None:
            return None
    elif batch_sent is not None:
        sent, sent_at = batch_sent
    if original is not None and sent_at is not None and abs(sent_at.year - original.year) > MAX_CORRECTION_YEARS:
        return None
    doc = bytes(raw).strip()
    if b"\n" in doc or b"\r" in doc or b"\t" in doc:  # whitespace between tokens of a pretty-printed message
        doc = msgspec.json.format(doc, indent=-1)
    if prefix:
        doc = b"{" + prefix + doc[1:]  # the message has keys (an id at least): the prefix ends with a comma
    if len(doc) > req.max_message_bytes + SERVER_FIELDS_ALLOWANCE:
        return None
    # Counting brackets bounds the depth; ``replace`` counts with memchr where ``count`` reads byte by byte.
    brackets = len(doc) - len(doc.replace(b"{", b"")) + (len(doc) - len(doc.replace(b"[", b"")) if b"[" in doc else 0)
    if brackets > req.max_depth and _depth(doc) > req.max_depth:
        return None  # too deep: normalise says so
    line = journal.accepted_line(
        req.source_id,
        (message_id, type_, event, user_id, anonymous_id),
        (None, original_text, sent, req.received_at_text),
        doc,
    )
    return line if line[0] == _ACCEPTED_KIND else None  # an id with a tab or NUL: normalise decides


_ACCEPTED_KIND = ord("A")


def collect_single(body: Body, type_: str, req: RequestInfo) -> Outcome:
    outcome = Outcome()
    try:
        line = None
        if isinstance(body.fast, Checked):
            line = _fast_line(body.fast, body.raw, type_, req, None)
        if line is None:
            line = normalise(body.doc if body.doc is not None else parse_body(body.raw), type_, req)
        outcome.lines.append(line)
        outcome.accepted = 1
    except Rejected as exc:
        error = ItemError(None, exc.code, exc.message)
        outcome.errors.append(error)
        outcome.lines.append(rejected_line(req, error, _kept(req, body.raw)))
    return outcome


def _kept(req: RequestInfo, payload: bytes) -> bytes:
    """What a rejected payload may keep: all of it, unless the source's PII policy drops something."""
    return payload if req.scrubber is None else req.scrubber.payload(payload)


def collect_batch(body: Body, req: RequestInfo) -> Outcome:
    """The lines of a batch: each valid item accepted, each invalid one rejected with its index and reason."""
    envelope = body.fast if isinstance(body.fast, Envelope) else None
    items, batch_sent, fast = (
        _envelope_items(envelope)
        if envelope is not None
        else (_doc_items(body.doc or parse_body(body.raw)), None, False)
    )
    slow_envelope = _slow_envelope(body, envelope)
    outcome = Outcome()
    for index, item in enumerate(items):
        try:
            if index >= req.max_batch_items:
                raise Rejected(f"a batch holds at most {req.max_batch_items} items", code="too_many_items")
            if len(item) > req.max_message_bytes:  # as sent, which is what SDKs measure
                raise Rejected(f"the message exceeds {req.max_message_bytes} bytes", code="message_too_large")
            line = None
            if fast:
                try:
                    line = _fast_line(_decode_checked(item), item, None, req, batch_sent)
                except (msgspec.DecodeError, RecursionError):
                    line = None
            if line is None:
                line = _slow_item(item, req, slow_envelope)
            outcome.lines.append(line)
            outcome.accepted += 1
        except Rejected as exc:
            error = ItemError(index, exc.code, exc.message)
            outcome.errors.append(error)
            outcome.lines.append(rejected_line(req, error, _kept(req, bytes(item))))
    return outcome


def _envelope_items(envelope: Envelope) -> tuple[list[msgspec.Raw], Sent, bool]:
    """A decoded batch's items, its sentAt for the fast path, and whether the fast path may run at all."""
    if envelope.batch is None:
        raise Rejected("a batch body needs a 'batch' array", code="missing_batch")
    fast = not envelope.context and not envelope.integrations  # an envelope to merge: every item goes slow
    sent: Sent = None
    if envelope.sent_at:
        parsed = _readable(envelope.sent_at)
        if parsed is None:
            fast = False  # unreadable, or to be reformatted: normalise decides, per item
        else:
            sent = (envelope.sent_at, parsed)
    return envelope.batch, sent, fast


def _doc_items(doc: Doc) -> list[msgspec.Raw]:
    raw_batch = doc.get("batch")
    if raw_batch is None:
        raise Rejected("a batch body needs a 'batch' array", code="missing_batch")
    try:
        return _decode_list(raw_batch)
    except msgspec.DecodeError as exc:
        raise Rejected("'batch' must be an array", code="invalid_batch") from exc


def _slow_envelope(body: Body, envelope: Envelope | None) -> Doc | None:
    """The batch-level fields :func:`normalise` merges into each item."""
    if envelope is None:
        doc = body.doc or {}
        return {k: doc[k] for k in ("context", "integrations", "sentAt") if k in doc} or None
    out: Doc = {}
    if envelope.context:
        out["context"] = envelope.context
    if envelope.integrations:
        out["integrations"] = envelope.integrations
    if envelope.sent_at is not None:
        out["sentAt"] = msgspec.Raw(_encode(envelope.sent_at))
    return out or None


def _slow_item(item: msgspec.Raw, req: RequestInfo, envelope: Doc | None) -> bytes:
    try:
        item_doc = _decode_doc(item)
    except msgspec.DecodeError as exc:
        raise Rejected("a batch item must be a JSON object", code="invalid_item") from exc
    type_ = string_field(item_doc, "type")
    if type_ is None:
        raise Rejected("a batch item needs a type", code="missing_type")
    return normalise(item_doc, type_, req, envelope)
