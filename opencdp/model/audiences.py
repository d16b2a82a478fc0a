"""Audiences: a typed condition tree over a profile's traits, activity, identities and other audiences (pure
definitions, no I/O). segments/compile.py checks a definition against the workspace and compiles it to SQL;
docs/segments.md explains the language.

A definition is a tree whose inner nodes are ``{"all": [...]}``, ``{"any": [...]}`` and ``{"not": ...}`` and whose
leaves are one of:

- ``{"trait": "ltv_net", "op": ">=", "value": 500}``: a golden, custom or computed trait;
- ``{"event": "Order Completed", "at_least": 3, "within_days": 30, "where": [...]}``: what the profile did (or,
  with ``at_most: 0``, did not do); ``over`` counts a kind of activity instead of (or besides) an event name;
- ``{"audience": "vip"}``: membership of another saved audience;
- ``{"identity": "email"}``: the profile has an identifier of that type.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from opencdp.model.profiles import NAME, Condition, Over

TraitOp = Literal[
    "=", "!=", ">", ">=", "<", "<=", "in", "not_in", "contains", "starts_with", "exists", "not_exists",
    "between", "in_last_days", "before_last_days",
]  # fmt: skip
"""``!=``, ``not_in`` and comparisons match profiles that have a value (a profile without the trait matches only
``not_exists``). ``between`` takes ``[low, high]`` (both included). ``in_last_days`` / ``before_last_days`` take a
number of days and apply to timestamp traits: the value is within / older than that many days before the
evaluation."""
MAX_CONDITIONS = 100
MAX_DEPTH = 8
_NO_VALUE = ("exists", "not_exists")
_LISTS = ("in", "not_in", "between")
_DAYS = ("in_last_days", "before_last_days")

Scalar = str | float | bool
TRAIT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
"""A golden or computed trait's name, or a custom trait's key as an identify call or a record reported it."""


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_number(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool)


def is_date(value: object) -> bool:
    """An ISO 8601 date or date-time (what a timestamp trait is compared with)."""
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value) if "T" in value or " " in value else date.fromisoformat(value)
    except ValueError:
        return False
    return True


class TraitCondition(_Node):
    trait: str
    op: TraitOp = "="
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _valid(self) -> TraitCondition:
        if not TRAIT_KEY.match(self.trait):
            raise ValueError(f"{self.trait!r} is not a trait name")
        if self.op in _NO_VALUE:
            if self.value is not None:
                raise ValueError(f"{self.op} takes no value")
        elif self.op in _LISTS:
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(f"{self.op} takes a non-empty list of values")
            if self.op == "between" and len(self.value) != 2:
                raise ValueError("between takes [low, high]")
        elif self.op in _DAYS:
            if not _is_number(self.value) or not 1 <= float(self.value) <= 36_500 or float(self.value) % 1:  # type: ignore[arg-type]
                raise ValueError(f"{self.op} takes a whole number of days from 1 to 36500")
        elif self.value is None or isinstance(self.value, list):
            raise ValueError(f"{self.op} takes one value")
        if self.op in ("contains", "starts_with") and not isinstance(self.value, str):
            raise ValueError(f"{self.op} takes a text value")
        return self

    def values(self) -> list[Scalar]:
        """The value or values, as a list (empty for exists)."""
        if self.value is None:
            return []
        return list(self.value) if isinstance(self.value, list) else [self.value]


class ActivityCondition(_Node):
    """How many times the profile did something (events named ``event`` and/or activity ``over`` a kind, with
    property filters, in the last ``within_days`` days) is at least ``at_least`` (default 1) and at most
    ``at_most``. Orders and returns count once each (their latest version)."""

    event: str | None = None
    over: Over | None = None
    where: list[Condition] = Field(default_factory=list)
    within_days: int | None = None
    at_least: int | None = None
    at_most: int | None = None

    @model_validator(mode="after")
    def _valid(self) -> ActivityCondition:
        if self.event is None and self.over is None:
            raise ValueError("an activity condition needs an event name or over (events, pages, orders, ...)")
        if self.event is not None and not 0 < len(self.event) <= 200:
            raise ValueError("an event name has 1 to 200 characters")
        if self.within_days is not None and not 1 <= self.within_days <= 36_500:
            raise ValueError(f"within_days must be between 1 and 36500 (got {self.within_days})")
        for bound in (self.at_least, self.at_most):
            if bound is not None and not 0 <= bound <= 1_000_000:
                raise ValueError("at_least and at_most are counts from 0 to 1000000")
        if self.at_least is not None and self.at_most is not None and self.at_least > self.at_most:
            raise ValueError(f"at_least {self.at_least} is more than at_most {self.at_most}: nobody can match")
        if self.at_least == 0 and self.at_most is None:
            raise ValueError("at_least 0 with no at_most matches everyone; use at_most: 0 for 'did not'")
        return self

    @property
    def low(self) -> int:
        return self.at_least if self.at_least is not None else (0 if self.at_most is not None else 1)


class AudienceRef(_Node):
    audience: str

    @field_validator("audience")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"{v!r} is not an audience name")
        return v


class IdentityCondition(_Node):
    identity: str


class AllOf(_Node):
    all: list[Node]


class AnyOf(_Node):
    any: list[Node]


class NotOf(_Node):
    not_: Node = Field(alias="not")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_KINDS = {"all": "all", "any": "any", "not": "not", "not_": "not", "trait": "trait", "event": "activity",
          "over": "activity", "audience": "audience", "identity": "identity"}  # fmt: skip


def _kind(node: Any) -> str | None:
    if isinstance(node, dict):
        return next((_KINDS[k] for k in node if k in _KINDS), None)
    tags: dict[type, str] = {
        AllOf: "all",
        AnyOf: "any",
        NotOf: "not",
        TraitCondition: "trait",
        ActivityCondition: "activity",
        AudienceRef: "audience",
        IdentityCondition: "identity",
    }
    return tags.get(type(node))  # fmt: skip


Node = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[TraitCondition, Tag("trait")]
    | Annotated[ActivityCondition, Tag("activity")]
    | Annotated[AudienceRef, Tag("audience")]
    | Annotated[IdentityCondition, Tag("identity")],
    Discriminator(
        _kind,
        custom_error_type="bad_condition",
        custom_error_message="a condition is all, any, not, trait, event (or over), audience or identity",
    ),
]
AllOf.model_rebuild()
AnyOf.model_rebuild()
NotOf.model_rebuild()


def children(node: Node) -> list[Node]:
    if isinstance(node, AllOf):
        return list(node.all)
    if isinstance(node, AnyOf):
        return list(node.any)
    if isinstance(node, NotOf):
        return [node.not_]
    return []


def leaves(node: Node) -> list[Node]:
    inner = children(node)
    if not inner and not isinstance(node, AllOf | AnyOf):
        return [node]
    return [leaf for child in inner for leaf in leaves(child)]


def _depth(node: Node) -> int:
    return 1 + max((_depth(c) for c in children(node)), default=0)


class AudienceDefinition(BaseModel):
    """A saved (or counted) audience: its name, what it is for, and its condition tree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    where: Node

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"{v!r} is not an audience name (lower case letters, digits and _, from a letter)")
        return v

    @model_validator(mode="after")
    def _size(self) -> AudienceDefinition:
        for node in [self.where, *_inner(self.where)]:
            if isinstance(node, AllOf | AnyOf) and not children(node):
                raise ValueError("all and any take at least one condition")
        if len(leaves(self.where)) > MAX_CONDITIONS:
            raise ValueError(f"an audience has at most {MAX_CONDITIONS} conditions")
        if _depth(self.where) > MAX_DEPTH:
            raise ValueError(f"conditions nest at most {MAX_DEPTH} deep")
        return self

    def audiences(self) -> set[str]:
        """The audiences this one is defined by."""
        return {leaf.audience for leaf in leaves(self.where) if isinstance(leaf, AudienceRef)}

    def time_relative(self) -> bool:
        """Whether membership can change with time alone (a window, a relative date): such audiences are
        evaluated again on a schedule."""
        return any(
            (isinstance(leaf, ActivityCondition) and leaf.within_days is not None)
            or (isinstance(leaf, TraitCondition) and leaf.op in _DAYS)
            for leaf in leaves(self.where)
        )


def _inner(node: Node) -> list[Node]:
    return [n for c in children(node) for n in (c, *_inner(c))]
