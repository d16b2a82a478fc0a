"""Normalising values with well-kept libraries: emails, phone numbers, names, currencies; and the sentiment of a
support ticket's text (pure functions).

Each function returns ``(normalised, None)`` or ``(None, reason)``: an invalid value is flagged with why, never
guessed. The library calls cost tens of microseconds a value (email-validator ~23 µs, phonenumbers ~32 µs on
this machine), so the importer calls them once per *distinct* value, spread over the machine's cores when there
are many, and joins the verdicts back to the rows set-based.
"""

from __future__ import annotations

import importlib
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache, partial
from multiprocessing import get_context

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email
from email_validator.syntax import validate_email_domain_name
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

Verdict = tuple[str | None, str | None]

# email-validator spends ~85% of a call checking the domain (IDNA tables, label by label), and a customer file
# has a handful of domains for a million addresses. Its domain check is a pure function of the domain and two
# flags, and ``validate_email`` only reads what it returns, so the same function, memoized, gives the same
# verdicts (tested against the unmemoized library) at a fraction of the cost. Failed checks raise and are not
# cached. Pinned to email-validator 2.3.0, whose ``validate_email`` calls it by this module-level name.
# (``email_validator.validate_email`` is the function: the package re-exports it over its module's name.)
_email_validator_module = importlib.import_module("email_validator.validate_email")
setattr(  # noqa: B010  (a module attribute the type checker cannot see)
    _email_validator_module, "validate_email_domain_name", lru_cache(maxsize=65_536)(validate_email_domain_name)
)

PARALLEL_FROM = 20_000
"""Distinct values from which the work is spread over worker processes (below, starting them costs more)."""
_CHUNK = 20_000


def email(value: str) -> Verdict:
    """Syntax check and normalised form (lower-case domain, IDNA); no DNS lookup, ever."""
    try:
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        return None, str(exc)
    return result.normalized, None


def phone(value: str, region: str | None = None) -> Verdict:
    """E.164 (``+4930123456``); a number without a country code needs ``region`` (ISO 3166, e.g. ``DE``)."""
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        return None, f"not a phone number: {exc}"
    if not phonenumbers.is_valid_number(parsed):
        return None, "not a valid phone number for its country"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None


_SPACES = re.compile(r"\s+")


def name(value: str) -> Verdict:
    """Trimmed, NFC, single spaces; a name written all in upper or all in lower case gets capitals."""
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", value)).strip()
    if not text:
        return None, "empty name"
    if text.isupper() or text.islower():
        text = text.title()
    return text, None


@lru_cache(maxsize=1)
def currency_codes() -> frozenset[str]:
    """ISO 4217 alphabetic codes (from pycountry's copy of the standard)."""
    return frozenset(c.alpha_3 for c in pycountry.currencies)


def currency(value: str) -> Verdict:
    code = value.strip().upper()
    if code in currency_codes():
        return code, None
    return None, f"not an ISO 4217 currency code: {value!r}"


SENTIMENT_CHARS = 2_000
"""Characters of a ticket's subject and text that are scored. VADER's time grows with the square of a text's
length (each word's rules re-read the whole text: ~5 ms for 2,000 characters, ~10 s for 100,000), and a mail
can carry a long quoted thread below what the customer wrote."""


@lru_cache(maxsize=1)
def _analyzer() -> SentimentIntensityAnalyzer:
    """VADER with the lexicons its wheel ships (read from the package's folder, ~20 ms, once per process)."""
    return SentimentIntensityAnalyzer()


def sentiment(text: str) -> Verdict:
    """VADER's compound score of an English text, rounded to 4 places, as the text of a decimal field
    (``-0.875``, ``0``, ``1``): ``-1`` most negative, ``1`` most positive, about ``0`` neutral. Never refused: a
    text without sentiment words scores ``0``."""
    compound: float = _analyzer().polarity_scores(text)["compound"]
    decimal = f"{compound:.4f}".rstrip("0").rstrip(".")
    return ("0" if decimal == "-0" else decimal), None


def _verdicts(function: Callable[[str], Verdict], values: Sequence[str]) -> list[Verdict]:
    return [function(v) for v in values]


class Workers:
    """Processes for the library calls of one import: one per available core, started on first use.

    Below :data:`PARALLEL_FROM` values (or on one core) the calls run in this process: starting the workers
    would cost more than it saves.
    """

    def __init__(self) -> None:
        self.cores = len(os.sched_getaffinity(0))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def map(self, function: Callable[[str], Verdict], values: Sequence[str]) -> list[Verdict]:
        """``function`` of each value, in order."""
        if len(values) < PARALLEL_FROM or self.cores < 2:
            return _verdicts(function, values)
        if self._pool is None:
            # forkserver: the workers do not inherit a server's threads and locks (fork would).
            self._pool = ProcessPoolExecutor(max_workers=self.cores, mp_context=get_context("forkserver"))
        chunks = [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]
        return [v for chunk in self._pool.map(partial(_verdicts, function), chunks) for v in chunk]


def normalise_all(function: Callable[[str], Verdict], values: Sequence[str]) -> list[Verdict]:
    """``function`` applied to each value, in worker processes when there are many."""
    with Workers() as workers:
        return workers.map(function, values)


REGION_SEPARATOR = "\x1f"


def phone_in_region(key: str) -> Verdict:
    """``phone`` of ``"<region>\\x1f<number>"`` (an empty region: the number must carry its country code)."""
    region, _, number = key.partition(REGION_SEPARATOR)
    return phone(number, region or None)
