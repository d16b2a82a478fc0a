"""Profiles: the golden traits and how each survives (survivorship), the workspace currency, and the computed
trait language with the shipped commerce traits (pure definitions, no I/O).

A *golden trait* is one value per profile chosen among every value its messages and records reported, by an
ordered list of survivorship criteria. A *computed trait* is an aggregate over a profile's activity (events,
orders, returns, tickets), or an arithmetic expression over other traits. profiles/traits.py compiles both to
SQL; docs/profiles.md explains them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Criterion = Literal["verified", "source_priority", "most_frequent", "most_recent", "first_seen"]
"""One survivorship criterion; a rule applies them in order, each breaking the previous one's ties:

- ``verified``: a value an import validated (a CRM email that passed email-validator) before one an SDK sent;
- ``source_priority``: the value from the source listed first in the rule's ``sources``;
- ``most_frequent``: the value reported by most messages and records;
- ``most_recent`` / ``first_seen``: the value reported last / first.

Empty values never survive (non-empty is always on); the last tie-break is the latest report.
"""


class Survivorship(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    order: tuple[Criterion, ...] = ("most_recent",)
    sources: tuple[str, ...] = ()
    """Source ids or names, strongest first (for ``source_priority``; unlisted sources come after)."""

    @model_validator(mode="after")
    def _sources_when_ranked(self) -> Survivorship:
        if not self.order:
            raise ValueError("a survivorship rule needs at least one criterion")
        if len(set(self.order)) != len(self.order):
            raise ValueError("a survivorship criterion is listed twice")
        if "source_priority" in self.order and not self.sources:
            raise ValueError("source_priority needs the sources, strongest first")
        return self


@dataclass(frozen=True)
class GoldenTrait:
    name: str
    synonyms: tuple[str, ...]
    """Trait keys (compared lower case, letters and digits only) that report this trait: ``firstName``,
    ``first_name`` and ``givenName`` all report ``first_name``."""
    normaliser: Literal["text", "email", "phone"] = "text"
    rule: Survivorship | None = None
    """How its value survives (None: the workspace default, the most recent)."""


GOLDEN_TRAITS: tuple[GoldenTrait, ...] = (
    GoldenTrait("first_name", ("firstname", "givenname", "forename")),
    GoldenTrait("last_name", ("lastname", "surname", "familyname")),
    GoldenTrait("name", ("name", "fullname")),
    GoldenTrait("email", ("email", "emailaddress"), "email", Survivorship(order=("verified", "most_recent"))),
    GoldenTrait("phone", ("phone", "phonenumber", "mobile"), "phone", Survivorship(order=("verified", "most_recent"))),
    GoldenTrait(
        "birth_date",
        ("birthdate", "birthday", "dateofbirth", "dob"),
        rule=Survivorship(order=("most_frequent", "most_recent")),
    ),
    GoldenTrait("gender", ("gender",)),
    GoldenTrait("street", ("street", "address1", "streetaddress")),
    GoldenTrait("house_number", ("housenumber", "streetnumber")),
    GoldenTrait("city", ("city", "town")),
    GoldenTrait("postal_code", ("postalcode", "postcode", "zip", "zipcode")),
    GoldenTrait("region", ("region", "state", "province")),
    GoldenTrait("country", ("country", "countrycode")),
)
"""The traits every profile has a column for (in the ``profiles`` view); any other trait key an identify call
or a CRM record reports is a custom trait, kept under its own name (most recent value wins by default)."""

NOT_TRAITS = frozenset({"id", "userid", "anonymousid", "customerid", "createdat", "updatedat", "nationalid"})
"""Keys that are identifiers or bookkeeping, not traits of the person (national ids are never copied out)."""

GOLDEN_NAMES = frozenset(t.name for t in GOLDEN_TRAITS)

IDENTIFIER_TYPES = "identifier_types"
"""A column of ``profile_computed`` beside the computed traits: the types of the profile's identifiers, each
between commas (``,anonymous_id,email,user_id,``), kept by the profiles stage whenever the profile's traits are
computed (which its identifiers changing causes), so that "has an email" reads one row, not a join of every
identifier."""
PROFILE_KEY = "profile_key"
"""The profile's integer key: drawn from a sequence when the identity stage creates the profile, never changed
while the profile id lives and never given to another. Rows that name a profile where joins on it are hot carry
it beside the text id (``identity_membership``, ``profile_computed``, ``profile_nodes``: every identifier and its
profile's key, ``audience_members``): counting activity per profile and comparing an audience's members with its
saved ones join and group on it (an integer join costs about half a join on the 24-character id)."""
CUSTOM_DEFAULT = Survivorship()

_CURRENCY = re.compile(r"^[A-Z]{3}$")


class ProfileSettings(BaseModel):
    """The workspace's profile settings: its currency, the conversion rates into it, and survivorship rules that
    replace a trait's default (golden or custom, by name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = "USD"
    rates: dict[str, float] = Field(default_factory=dict)
    """Units of the workspace currency per unit of another (``{"EUR": 1.08}``). An amount in a currency without
    a rate is not converted: a trait that would sum it says it cannot be computed (NULL) instead of adding
    euros to dollars."""
    survivorship: dict[str, Survivorship] = Field(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, v: str) -> str:
        if not _CURRENCY.match(v):
            raise ValueError(f"{v!r} is not an ISO 4217 currency code (three capital letters)")
        return v

    @field_validator("rates")
    @classmethod
    def _positive_rates(cls, v: dict[str, float]) -> dict[str, float]:
        for code, rate in v.items():
            if not _CURRENCY.match(code):
                raise ValueError(f"{code!r} is not an ISO 4217 currency code (three capital letters)")
            if not rate > 0 or rate != rate or rate == float("inf"):
                raise ValueError(f"the rate for {code} must be a positive number")
        return v

    def rule(self, trait: str) -> Survivorship:
        if trait in self.survivorship:
            return self.survivorship[trait]
        return next((t.rule for t in GOLDEN_TRAITS if t.name == trait and t.rule), CUSTOM_DEFAULT)


# ----------------------------------------------------------------------------------------------- computed traits

Over = Literal["events", "pages", "orders", "returns", "tickets"]
"""What a computed trait aggregates:

- ``events``: track calls (filter them with ``event``);
- ``pages``: page and screen calls;
- ``orders``: imported orders and ``Order Completed`` events, each order once (its latest version);
- ``returns``: imported returns and ``Order Refunded`` events, each attributed to the profile of the order it
  returns when that order is known;
- ``tickets``: imported support tickets.
"""
Aggregate = Literal["count", "sum", "min", "max", "avg", "first", "last", "distinct_count", "most_frequent"]
Operator = Literal["=", "!=", ">", ">=", "<", "<=", "in", "contains", "exists"]
TraitType = Literal["integer", "number", "text", "timestamp"]

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
PROPERTY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62}){0,4}$")
BUILT_IN_VALUES = ("amount", "timestamp", "event")
"""What ``of`` can name besides a property: the amount in the workspace currency (orders: their total;
returns: the refund), the time it happened, the event name (or the record's kind)."""


def _is_number(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool)


class Condition(BaseModel):
    """A filter on a property (events) or field (records): ``{"property": "category", "op": "=", "value":
    "Tools"}``; nested properties with dots (``address.city``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    property: str
    op: Operator = "="
    value: str | float | bool | list[str | float] | None = None

    @model_validator(mode="after")
    def _valid(self) -> Condition:
        if not PROPERTY.match(self.property):
            raise ValueError(f"{self.property!r} is not a property path (letters, digits, _ and dots)")
        if self.op == "exists":
            if self.value is not None:
                raise ValueError("exists takes no value")
        elif self.op == "in":
            if not isinstance(self.value, list) or not self.value:
                raise ValueError("in takes a non-empty list of values")
        elif self.value is None or isinstance(self.value, list):
            raise ValueError(f"{self.op} takes one value")
        elif self.op in (">", ">=", "<", "<=") and (
            isinstance(self.value, bool) or not isinstance(self.value, float | int)
        ):
            raise ValueError(f"{self.op} compares numbers: {self.value!r} is not one")
        return self


class TraitDefinition(BaseModel):
    """A computed trait: an aggregate (``over``, ``aggregate``, ``of``, filters, window) or an ``expression`` over
    other traits (``gross_revenue - refunds``), never both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    over: Over | None = None
    aggregate: Aggregate | None = None
    of: str | None = None
    """``amount``, ``timestamp``, ``event`` or a property path; count needs none."""
    event: list[str] = Field(default_factory=list)
    """Only these event names (``events`` only)."""
    where: list[Condition] = Field(default_factory=list)
    window_days: int | None = None
    """Only what happened in the last N days (as of the computation; time-relative traits are refreshed
    daily). None: all time."""
    expression: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> TraitDefinition:
        if not NAME.match(self.name):
            raise ValueError(f"{self.name!r} is not a trait name (lower case letters, digits and _, from a letter)")
        if self.name in GOLDEN_NAMES or self.name in (
            "profile_id",
            "computed_at",
            IDENTIFIER_TYPES,
            PROFILE_KEY,
            "r_score",
            "f_score",
            "m_score",
        ):
            raise ValueError(f"{self.name!r} is a golden trait or a column of the profiles view already")
        if self.expression is not None:
            extra = [f for f in ("over", "aggregate", "of", "window_days") if getattr(self, f) is not None]
            if extra or self.event or self.where:
                raise ValueError(f"an expression trait takes no {', '.join(extra) or 'event or where'}")
            return self
        if self.over is None or self.aggregate is None:
            raise ValueError("a computed trait needs over and aggregate (or an expression)")
        if self.aggregate == "count" and self.of is not None:
            raise ValueError("count counts rows: it takes no of")
        if self.aggregate != "count" and self.of is None:
            raise ValueError(f"{self.aggregate} needs of: amount, timestamp, event or a property")
        if self.of is not None and self.of not in BUILT_IN_VALUES and not PROPERTY.match(self.of):
            raise ValueError(f"of: {self.of!r} is not amount, timestamp, event or a property path")
        if self.aggregate in ("sum", "avg") and self.of in ("timestamp", "event"):
            raise ValueError(f"{self.aggregate} of {self.of} makes no sense: it is not a number")
        if self.event and self.over != "events":
            raise ValueError("event filters only apply over events")
        if self.window_days is not None and not 1 <= self.window_days <= 36_500:
            raise ValueError(f"window_days must be between 1 and 36500 (got {self.window_days})")
        return self

    @property
    def type(self) -> TraitType:
        if self.expression is not None:
            return "number"
        if self.aggregate in ("count", "distinct_count"):
            return "integer"
        if self.of == "timestamp" and self.aggregate in ("min", "max", "first", "last", "most_frequent"):
            return "timestamp"
        if self.aggregate in ("sum", "avg") or self.of == "amount":
            return "number"
        return "text"


class TraitDefinitions(BaseModel):
    """The workspace's own computed traits (the shipped ones always come first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    traits: list[TraitDefinition] = Field(default_factory=list)


PRODUCT_EVENTS = ("Product Viewed", "Product Clicked", "Product Added")
"""The e-commerce spec's product events, whose properties name the product's category and brand."""

SHIPPED_TRAITS: tuple[TraitDefinition, ...] = (
    TraitDefinition(name="order_count", over="orders", aggregate="count", description="orders placed"),
    TraitDefinition(
        name="gross_revenue",
        over="orders",
        aggregate="sum",
        of="amount",
        description="what the orders came to, in the workspace currency",
    ),
    TraitDefinition(
        name="refunds",
        over="returns",
        aggregate="sum",
        of="amount",
        description="what was refunded for returns, in the workspace currency",
    ),
    TraitDefinition(
        name="ltv_net",
        expression="gross_revenue - refunds",
        description="lifetime value net of returns: revenue minus refunds",
    ),
    TraitDefinition(
        name="return_rate",
        expression="refunds / gross_revenue",
        description="share of the revenue that was refunded (by value)",
    ),
    TraitDefinition(
        name="avg_order_value", expression="gross_revenue / order_count", description="average order value"
    ),
    TraitDefinition(
        name="first_order_at",
        over="orders",
        aggregate="min",
        of="timestamp",
        description="when the first order was placed",
    ),
    TraitDefinition(
        name="last_order_at",
        over="orders",
        aggregate="max",
        of="timestamp",
        description="when the last order was placed",
    ),
    TraitDefinition(
        name="days_since_last_order",
        expression="days_since(last_order_at)",
        description="whole days from the last order to the computation",
    ),
    TraitDefinition(
        name="discounted_orders",
        over="orders",
        aggregate="count",
        where=[Condition(property="discount", op=">", value=0)],
        description="orders with a discount (the e-commerce spec's discount property)",
    ),
    TraitDefinition(
        name="discount_dependence",
        expression="discounted_orders / order_count",
        description="share of the orders that had a discount",
    ),
    TraitDefinition(
        name="favourite_category",
        over="events",
        event=list(PRODUCT_EVENTS),
        aggregate="most_frequent",
        of="category",
        description="the category of the products viewed, clicked and added most often",
    ),
    TraitDefinition(
        name="favourite_brand",
        over="events",
        event=list(PRODUCT_EVENTS),
        aggregate="most_frequent",
        of="brand",
        description="the brand of the products viewed, clicked and added most often",
    ),
    TraitDefinition(name="ticket_count", over="tickets", aggregate="count", description="support tickets"),
    TraitDefinition(
        name="last_contact_at",
        over="tickets",
        aggregate="max",
        of="timestamp",
        description="when the last support ticket came in",
    ),
    TraitDefinition(
        name="avg_ticket_sentiment",
        over="tickets",
        aggregate="avg",
        of="sentiment",
        description="average sentiment of the tickets (-1 to 1, VADER at import)",
    ),
)
"""The commerce and support traits every workspace has (named as issue 6 and docs/profiles.md say)."""
