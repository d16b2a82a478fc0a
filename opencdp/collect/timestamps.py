"""Timestamps: lenient parsing of what SDKs send, strict RFC 3339 output, and Segment's clock-skew rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_ODD = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,9}))?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


def parse(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO-8601-ish string, or None if it cannot be read."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    dt: datetime | None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        dt = _parse_odd(value)
    if dt is None:
        return None
    if dt.tzinfo is UTC:  # "...Z", what nearly every SDK sends: astimezone(UTC) would return it as is
        return dt
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _parse_odd(value: str) -> datetime | None:
    """Forms ``fromisoformat`` refuses but SDKs and Segment's own examples use (``2015-2-02T00:30:08.276Z``)."""
    m = _ODD.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    iso = f"{int(year):04d}-{int(month):02d}-{int(day):02d}"
    iso += f"T{int(hour or 0):02d}:{int(minute or 0):02d}:{int(second or 0):02d}"
    if frac:
        iso += "." + (frac + "000000")[:6]
    if tz and tz.upper() != "Z":
        iso += tz if ":" in tz else f"{tz[:3]}:{tz[3:]}"
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def format_utc(dt: datetime) -> str:
    """RFC 3339, UTC, milliseconds (truncated): ``2024-05-01T12:00:00.123Z``."""
    # Up to four calls per message on the collection hot path: %-formatting the fields costs ~0.7 us where
    # ``isoformat()`` of an aware datetime sliced to milliseconds costs ~1.0 us and
    # ``isoformat(timespec="milliseconds")`` ~1.3 us (identical output: checked on 300,000 random datetimes).
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    return _FORMAT % (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond // 1000)


_FORMAT = "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ"


_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z").fullmatch


def format_parsed(text: str | None, dt: datetime) -> str:
    """``format_utc(dt)`` for ``dt = parse(text)``, without formatting when ``text`` already is that form.

    What ``toISOString()`` and most SDKs send is already RFC 3339 UTC with milliseconds, and ``parse`` of such
    a text (when it is a real date) formats back to the same text, so the hot path keeps it as it came.
    """
    return text if text is not None and _CANONICAL(text) else format_utc(dt)


def corrected(received_at: datetime, original: datetime, sent_at: datetime | None) -> datetime:
    """Segment's rule: ``timestamp = receivedAt - (sentAt - originalTimestamp)``; without sentAt, ``original``."""
    if sent_at is None:
        return original
    try:
        return received_at - (sent_at - original)
    except OverflowError:
        return original
