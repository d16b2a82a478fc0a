"""Imported records: the kinds a file can hold, their fields, and the mapping from a file's columns to them.

A record is one row of a CRM, point-of-sale, finance or support export. Each kind names a natural key (the
field that identifies the row in its system of origin) and the field that says when it happened, if any.
Columns a mapping does not name are kept as the record's ``attributes`` (custom attributes).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FieldType = Literal["string", "email", "phone", "name", "date", "timestamp", "decimal", "currency", "integer", "json"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: FieldType = "string"
    required: bool = False
    synonyms: tuple[str, ...] = ()
    """Column names (compared lower-case, letters and digits only) that map to this field when inferred."""
    computed_from: tuple[str, ...] = ()
    """Set for a field the importer computes from these fields of the same record (a ticket's ``sentiment``
    from its ``subject`` and ``text``); such a field is never read from a column: no column is inferred for it,
    and a mapping that names it is refused."""


@dataclass(frozen=True)
class KindSpec:
    name: str
    key: str
    """The natural key: re-importing a row with the same key and the same content stores nothing new."""
    time: str | None
    """The field that says when the record happened (its ``original_timestamp``), if the kind has one."""
    fields: tuple[FieldSpec, ...]
    description: str

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


_CONTACT = (
    FieldSpec("email", "email", synonyms=("email", "emailaddress", "mail", "e-mail", "emailaddr")),
    FieldSpec("phone", "phone", synonyms=("phone", "phonenumber", "mobile", "mobilephone", "telephone", "tel", "cell")),
)

KINDS: dict[str, KindSpec] = {
    "customers": KindSpec(
        "customers",
        key="customer_id",
        time="updated_at",
        description="CRM records: ids, names, emails, phones, addresses, birth dates, custom attributes",
        fields=(
            FieldSpec("customer_id", "string", True, ("customerid", "custid", "crmid", "id", "contactid", "clientid")),
            FieldSpec("user_id", "string", synonyms=("userid",)),
            *_CONTACT,
            FieldSpec("first_name", "name", synonyms=("firstname", "givenname", "forename", "fname")),
            FieldSpec("last_name", "name", synonyms=("lastname", "surname", "familyname", "lname")),
            FieldSpec("name", "name", synonyms=("name", "fullname", "customername", "contactname")),
            FieldSpec("house_number", "string", synonyms=("housenumber", "streetnumber", "houseno", "streetno")),
            FieldSpec("street", "string", synonyms=("street", "address", "address1", "streetaddress", "addressline1")),
            FieldSpec("city", "string", synonyms=("city", "town", "locality", "suburb")),
            FieldSpec("postal_code", "string", synonyms=("postalcode", "postcode", "zip", "zipcode")),
            FieldSpec("region", "string", synonyms=("region", "state", "province", "county")),
            FieldSpec("country", "string", synonyms=("country", "countrycode")),
            FieldSpec("birth_date", "date", synonyms=("birthdate", "dateofbirth", "dob", "birthday")),
            FieldSpec("national_id", "string", synonyms=("nationalid", "ssn", "socsecid", "socialsecuritynumber")),
            FieldSpec("created_at", "timestamp", synonyms=("createdat", "created", "signupdate", "since")),
            FieldSpec("updated_at", "timestamp", synonyms=("updatedat", "updated", "lastmodified", "modifiedat")),
        ),
    ),
    "orders": KindSpec(
        "orders",
        key="order_id",
        time="ordered_at",
        description="point-of-sale and web orders: order id, customer keys, amount, currency, items, time, channel",
        fields=(
            FieldSpec("order_id", "string", True, ("orderid", "ordernumber", "orderno", "id", "transactionid")),
            FieldSpec("customer_id", "string", synonyms=("customerid", "custid", "crmid", "clientid")),
            FieldSpec("user_id", "string", synonyms=("userid",)),
            *_CONTACT,
            FieldSpec("amount", "decimal", True, ("amount", "total", "ordertotal", "revenue", "value", "grandtotal")),
            FieldSpec("currency", "currency", synonyms=("currency", "currencycode")),
            FieldSpec("items", "json", synonyms=("items", "products", "lineitems")),
            FieldSpec("ordered_at", "timestamp", synonyms=("orderedat", "orderdate", "date", "createdat", "time")),
            FieldSpec("store", "string", synonyms=("store", "storeid", "shop", "location")),
            FieldSpec("channel", "string", synonyms=("channel", "saleschannel", "source")),
        ),
    ),
    "returns": KindSpec(
        "returns",
        key="return_id",
        time="returned_at",
        description="refunds and returns against orders, from the finance ledger",
        fields=(
            FieldSpec("return_id", "string", True, ("returnid", "refundid", "creditnoteid", "id")),
            FieldSpec("order_id", "string", True, ("orderid", "ordernumber", "orderno")),
            FieldSpec("customer_id", "string", synonyms=("customerid", "custid", "crmid", "clientid")),
            FieldSpec("amount", "decimal", True, ("amount", "refund", "refundamount", "total", "value")),
            FieldSpec("currency", "currency", synonyms=("currency", "currencycode")),
            FieldSpec("items", "json", synonyms=("items", "products", "lineitems")),
            FieldSpec("returned_at", "timestamp", synonyms=("returnedat", "refundedat", "returndate", "date")),
            FieldSpec("reason", "string", synonyms=("reason", "returnreason")),
        ),
    ),
    "tickets": KindSpec(
        "tickets",
        key="ticket_id",
        time="created_at",
        description="support conversations: sender, subject, text, and a sentiment score computed from them",
        fields=(
            FieldSpec("ticket_id", "string", True, ("ticketid", "caseid", "conversationid", "id")),
            FieldSpec("customer_id", "string", synonyms=("customerid", "custid", "crmid", "clientid")),
            *_CONTACT,
            FieldSpec("name", "name", synonyms=("name", "sender", "sendername", "from", "requester")),
            FieldSpec("subject", "string", synonyms=("subject", "title", "topic")),
            FieldSpec("text", "string", synonyms=("text", "body", "message", "description", "content")),
            FieldSpec("channel", "string", synonyms=("channel", "via")),
            FieldSpec("status", "string", synonyms=("status", "state")),
            FieldSpec("created_at", "timestamp", synonyms=("createdat", "created", "date", "sentat", "time")),
            FieldSpec("sentiment", "decimal", computed_from=("subject", "text")),
        ),
    ),
}

IMPORT_KINDS = (*KINDS, "events")
"""Every kind ``opencdp import`` takes: the record kinds, and ``events`` (rows that are Segment-spec messages)."""


class FieldMapping(BaseModel):
    """Where one field comes from: a column (with an optional date/time format), else a default value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = None
    format: str | None = None
    """A ``strptime`` format for dates and timestamps (``%d/%m/%Y``); ISO 8601 is read without one."""
    default: str | None = None
    """The value when the column is absent or empty."""


class Mapping(BaseModel):
    """How a file's columns become a kind's fields (YAML or JSON; inferred from column names when not given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[str, FieldMapping] = Field(default_factory=dict)
    default_region: str | None = None
    """ISO 3166 country for phone numbers written without a country code (``DE``, ``US``)."""
    default_currency: str | None = None
    """ISO 4217 code for amounts in a file without a currency column."""
    attributes: Literal["rest", "none"] = "rest"
    """``rest`` keeps the columns no field uses as custom attributes; ``none`` drops them."""


def column_key(name: str) -> str:
    """A column name as compared for inference: lower case, letters and digits only (``E-Mail`` → ``email``)."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]", "", folded)


def infer_mapping(kind: KindSpec, columns: list[str]) -> Mapping:
    """A mapping from column names alone: a column whose name is a field's name or synonym maps to it."""
    by_key: dict[str, str] = {}
    for column in columns:
        by_key.setdefault(column_key(column), column)
    fields: dict[str, FieldMapping] = {}
    used: set[str] = set()
    for spec in kind.fields:
        if spec.computed_from:
            continue
        for candidate in (column_key(spec.name), *(column_key(s) for s in spec.synonyms)):
            match = by_key.get(candidate)
            if match is not None and match not in used:
                fields[spec.name] = FieldMapping(column=match)
                used.add(match)
                break
    return Mapping(fields=fields)
