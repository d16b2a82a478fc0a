"""Transformations: declarative rules that fix data on its way through governance (admin-authored only).

Rules run in order, once, on every message governance passes (the raw log is never changed): rename an event,
rename or drop a property, map values, cast a value's type, route an event to another type. Nothing in a rule
is ever evaluated as code; each compiles to SQL with its names and values as literals.

A rule set is refused when it could not be applied once and for all: a rename whose target is renamed again
(a chain, or a loop such as ``a → b`` and ``b → a``), or a value mapping whose results are mapped again. So
applying a rule set twice gives what applying it once gives (idempotent), whatever the order of the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from opencdp.model.validation import parse_document

MessageType = Literal["track", "identify", "page", "screen", "group", "alias"]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str | None = None
    """Only this source's messages (id); None: every source."""


class RenameEvent(_Rule):
    op: Literal["rename_event"]
    old: str = Field(alias="from", min_length=1)
    new: str = Field(alias="to", min_length=1)


class RenameProperty(_Rule):
    op: Literal["rename_property"]
    event: str | None = None
    old: str = Field(alias="from", min_length=1)
    new: str = Field(alias="to", min_length=1)


class DropProperty(_Rule):
    op: Literal["drop_property"]
    event: str | None = None
    property: str = Field(min_length=1)


class MapValues(_Rule):
    op: Literal["map_values"]
    event: str | None = None
    property: str = Field(min_length=1)
    values: dict[str, str]


class CastProperty(_Rule):
    op: Literal["cast_property"]
    event: str | None = None
    property: str = Field(min_length=1)
    to: Literal["string", "number", "boolean"]


class RouteEvent(_Rule):
    op: Literal["route"]
    event: str = Field(min_length=1)
    to_type: MessageType


Rule = Annotated[
    RenameEvent | RenameProperty | DropProperty | MapValues | CastProperty | RouteEvent, Field(discriminator="op")
]


class Transformations(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _applies_once(self) -> Transformations:
        events = [(r.source, r.old, r.new) for r in self.rules if isinstance(r, RenameEvent)]
        _no_chains("event", events)
        props = [(f"{r.source}/{r.event}", r.old, r.new) for r in self.rules if isinstance(r, RenameProperty)]
        _no_chains("property", props)
        for r in self.rules:
            again = sorted(set(r.values) & set(r.values.values())) if isinstance(r, MapValues) else []
            if again:
                raise ValueError(f"map_values: the results {again} would be mapped again")
        return self


def _no_chains(what: str, renames: Sequence[tuple[str | None, str, str]]) -> None:
    sources = {(scope, old) for scope, old, _ in renames}
    seen: set[tuple[str | None, str]] = set()
    for scope, old, new in renames:
        if (scope, old) in seen:
            raise ValueError(f"the {what} {old!r} is renamed twice")
        seen.add((scope, old))
        if (scope, new) in sources or old == new:
            raise ValueError(f"renaming the {what} {old!r} to {new!r} would be renamed again (a chain or a loop)")


def parse_transformations(doc: object) -> Transformations:
    """Rules from their JSON/YAML document; :class:`Rejected` (``invalid_transformations``) with every reason."""
    return parse_document(Transformations, doc, "transformation rules", "invalid_transformations")
