"""PII classes, how a field is classified into one, and the policy that says what to do with each.

A *field* is a scalar value directly inside one of the message's containers (``properties``, ``traits``,
``context``, ``context.traits``; for imported records ``fields`` and ``attributes``). It is classified

1. by a declaration in the policy (``fields: {loyalty_no: national_id, sku: none}``), else
2. by its name (``email``, ``billing_phone``, ``card_number``, ...; the name lower-cased with everything but
   letters and digits removed), else
3. by its value: an email address, a payment card number (13-19 digits, a card-network prefix and a valid Luhn
   check digit), an IBAN (valid mod-97 check), an IPv4/IPv6 address, a US social security number or a UK
   national insurance number, or an international phone number (``+`` and 8-15 digits).

The patterns below are the single definition: governance compiles them to SQL (``opencdp.govern.pii``) and the
ingest path applies them in Python (``opencdp.collect.scrub``), so both classify a value alike (tested). They
keep to the regular-expression syntax Python, RE2 (DuckDB) and PostgreSQL share.

Each class has an action per source: ``keep``, ``mask`` (a partial, class-aware mask such as
``************1111``), ``hash`` (a salted SHA-256 of the normalised value, equal for equal values, so it still
matches across sources) or ``drop`` (removed before the raw log, on the ingest path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from opencdp.model.validation import parse_document

PiiClass = Literal[
    "email",
    "phone",
    "payment_card",
    "iban",
    "ip_address",
    "national_id",
    "person_name",
    "birth_date",
    "address",
]
Action = Literal["keep", "mask", "hash", "drop"]
CLASSES: tuple[PiiClass, ...] = (
    "payment_card",
    "iban",
    "national_id",
    "email",
    "phone",
    "ip_address",
    "birth_date",
    "person_name",
    "address",
)
"""Every class, in the order name patterns are tried (the first that matches wins)."""

EVENT_CONTAINERS = ("properties", "traits", "context", "context.traits")
RECORD_CONTAINERS = ("fields", "attributes")
TRAIT_CONTAINERS = frozenset({"traits", "context.traits"})
"""Where a field called just ``name`` is a person's name (in ``properties`` it is usually a product's)."""

NAME_PATTERNS: dict[PiiClass, str] = {
    "payment_card": "(cardnumber|cardnum|cardno|creditcard|debitcard|^ccnumber|^ccnum|^ccno|^cc|^pan)$",
    "iban": "iban$",
    "national_id": "(ssn|socialsecurity|socialsecuritynumber|nationalid|nationalidnumber|nino|"
    "nationalinsurancenumber|taxid|passportnumber|passportno|^passport)$",
    "email": "e?mail(address)?$",
    "phone": "(phone|mobile|telephone|^tel|cellphone|msisdn|fax)(number|no|num)?$",
    "ip_address": "(^ip|ipaddress|^ipv4|^ipv6|clientip|remoteip)$",
    "birth_date": "(birthday|birthdate|dateofbirth|^dob|^bday)$",
    "person_name": "^(first|last|full|given|family|middle|sur)name$",
    "address": "(street|streetaddress|^address|addressline[0-9]?|postcode|postalcode|zipcode|^zip)$",
}


@dataclass(frozen=True)
class ValueRule:
    """A class recognised by its value: ``pattern`` on the prepared text, and an optional check after it.

    ``min_length`` and ``needs`` are what the pattern implies of the text as sent (preparing only removes
    characters): the Python side skips the pattern for text that cannot match, which is most text.
    """

    cls: PiiClass
    prepare: Literal["trim", "lower", "upper_compact", "digits"]
    """``lower``: lower-cased; ``upper_compact``: upper-cased without spaces; ``digits``: spaces and dashes removed."""
    pattern: str
    check: Literal["luhn", "iban", "ssn", ""] = ""
    min_length: int = 0
    needs: str = ""
    starts: str = ""
    """The characters the text as sent can begin with ('' any): the ingest path skips the rest unread."""
    run: str = ""
    """Characters a matching text (trimmed) consists of only ('' unknown): the ingest path looks for a run of
    ``min_length`` of them in a container's values at once, before looking at any value alone."""


_IPV4_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_H = "[0-9a-f]{1,4}"
_D = "0123456789"
VALUE_RULES: tuple[ValueRule, ...] = (
    ValueRule("payment_card", "digits", "^(4|5[1-5]|2[2-7]|3[0-9]|6)[0-9]{12,18}$", "luhn", 13, "", "23456", _D + " -"),
    ValueRule("iban", "upper_compact", "^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$", "iban", 15),
    ValueRule("national_id", "trim", "^[0-8][0-9]{2}-[0-9]{2}-[0-9]{4}$", "ssn", 11, "-", "012345678 \t\n\r", _D + "-"),
    ValueRule("national_id", "upper_compact", "^[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z][0-9]{6}[A-D]$", "", 9),
    ValueRule("email", "lower", "^[^@ ]+@[^@ ]+[.][a-z]{2,}$", "", 6, "@"),
    ValueRule("ip_address", "trim", f"^({_IPV4_OCTET}[.]){{3}}{_IPV4_OCTET}$", "", 7, ".", "", _D + "."),
    ValueRule(
        "ip_address",
        "lower",
        f"^(({_H}:){{7}}{_H}|(({_H}:){{0,6}}{_H})?::(({_H}:){{0,6}}{_H})?)$",
        "",
        3,
        ":",
        "",
        _D + "abcdefABCDEF:",
    ),
    ValueRule("phone", "trim", "^[+][1-9][0-9 ().-]{6,20}[0-9]$", "", 9, "+", "+ \t\n\r", _D + "+ ().-"),
)
"""Tried in order; a card's digits are checked with Luhn, an IBAN with mod 97, an SSN's area/group/serial."""

CARD_CHARS = re.compile("^[0-9][0-9 -]{10,30}[0-9]$")
"""A card number may be written in groups; only then are spaces and dashes removed before the pattern."""


def normalised_name(key: str) -> str:
    """Lower case, letters and digits only; unlike :func:`opencdp.model.records.column_key` without unicode
    folding, because governance applies the same rule in SQL, which has none."""
    return re.sub("[^a-z0-9]", "", key.lower())


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(compact: str) -> bool:
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def ssn_ok(text: str) -> bool:
    area, group, serial = text.split("-")
    return area not in ("000", "666") and group != "00" and serial != "0000"


def _prepared(rule: ValueRule, text: str) -> str | None:
    if rule.prepare == "trim":
        return text.strip()
    if rule.prepare == "lower":
        return text.strip().lower()
    if rule.prepare == "upper_compact":
        return text.replace(" ", "").upper()
    return re.sub("[ -]", "", text) if CARD_CHARS.match(text) else None


_COMPILED_NAMES = [(cls, re.compile(p)) for cls, p in NAME_PATTERNS.items()]
_COMPILED_VALUES = [(rule, re.compile(rule.pattern)) for rule in VALUE_RULES]
_CHECKS = {"luhn": luhn_ok, "iban": iban_ok, "ssn": ssn_ok}


def class_by_name(container: str, key: str) -> PiiClass | None:
    name = normalised_name(key)
    if name == "name" and container in TRAIT_CONTAINERS:
        return "person_name"
    for cls, pattern in _COMPILED_NAMES:
        if pattern.search(name):
            return cls
    return None


def class_by_value(text: str, upto: int = len(VALUE_RULES)) -> PiiClass | None:
    """The class of the first value rule ``text`` matches, trying the first ``upto`` rules only."""
    n = len(text)
    for rule, pattern in _COMPILED_VALUES[:upto]:
        if n < rule.min_length or (rule.needs and rule.needs not in text):
            continue
        prepared = _prepared(rule, text)
        if prepared is not None and pattern.search(prepared) and (not rule.check or _CHECKS[rule.check](prepared)):
            return rule.cls
    return None


def rules_deciding(classes: frozenset[PiiClass]) -> int:
    """How many value rules must be tried to know whether a value is of one of ``classes`` (rules after the
    last one of theirs cannot change the answer: an earlier match wins, a later one is another class)."""
    return max((i + 1 for i, rule in enumerate(VALUE_RULES) if rule.cls in classes), default=0)


def class_by_name_or_declared(container: str, key: str, declared: Declared) -> PiiClass | Literal["none"] | None:
    """The class a field's declaration or name gives it; ``none`` when declared not PII; None: judge the value."""
    found = declared.get(normalised_name(key))
    return found if found is not None else class_by_name(container, key)


class PiiPolicy(BaseModel):
    """What to do with each class: a workspace default, per-source overrides, and declared field classes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: dict[PiiClass, Action] = Field(default_factory=dict)
    """Over the built-in default (:data:`BUILT_IN`); a class not listed anywhere is kept."""
    sources: dict[str, dict[PiiClass, Action]] = Field(default_factory=dict)
    """Source id -> class -> action, over the default."""
    fields: dict[str, PiiClass | Literal["none"]] = Field(default_factory=dict)
    """A field name -> its class (or ``none``: not PII), over what its name or value would say."""

    def actions(self, source_id: str) -> dict[PiiClass, Action]:
        """Every class's action for one source (``keep`` included)."""
        out: dict[PiiClass, Action] = {cls: "keep" for cls in CLASSES}
        out.update(BUILT_IN)
        out.update(self.default)
        out.update(self.sources.get(source_id, {}))
        return out

    def declared(self) -> Declared:
        """Declared classes by normalised field name."""
        return {normalised_name(k): v for k, v in self.fields.items()}

    def dropping_sources(self) -> dict[str, frozenset[PiiClass]]:
        """The sources whose policy drops a class (``*``: the default does), with the classes dropped."""
        out: dict[str, frozenset[PiiClass]] = {}
        base = {cls for cls, a in {**BUILT_IN, **self.default}.items() if a == "drop"}
        if base:
            out["*"] = frozenset(base)
        for source_id in self.sources:
            dropped = frozenset(cls for cls, a in self.actions(source_id).items() if a == "drop")
            if dropped != base:
                out[source_id] = dropped
        return out


BUILT_IN: dict[PiiClass, Action] = {"payment_card": "mask", "iban": "mask", "national_id": "mask"}
"""Out of the box, card numbers, IBANs and national ids are masked downstream; everything else is kept."""


Declared = dict[str, PiiClass | Literal["none"]]


def classify(container: str, key: str, text: str | None, declared: Declared) -> PiiClass | None:
    """A field's class: declared, else by name, else by value (``text`` None: not a string or number)."""
    found = class_by_name_or_declared(container, key, declared)
    if found == "none":
        return None
    if found is not None or text is None:
        return found
    return class_by_value(text)


def parse_pii_policy(doc: object) -> PiiPolicy:
    """A policy from its JSON/YAML document; :class:`Rejected` (``invalid_pii_policy``) with every reason."""
    return parse_document(PiiPolicy, doc, "PII policy", "invalid_pii_policy")
