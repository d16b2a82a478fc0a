"""Tracking plans: what a source's events and traits should look like, and what to do when they do not.

A plan holds one JSON Schema per planned ``track`` event (for its ``properties``) and one for ``identify``
traits, plus two modes: what happens to an *unplanned* event (a ``track`` whose name the plan does not list)
and to a *violation* (a planned event or traits that break their schema):

- ``allow``: passes downstream; the violation is still recorded;
- ``flag``: passes downstream marked as flagged, and recorded;
- ``block``: held in the quarantine (not deleted), recorded; released once a fix makes it pass.

Schemas are checked against the JSON Schema meta-schema when a plan is saved, and must keep to the part of JSON
Schema that governance compiles to set-based SQL (listed in :data:`SUPPORTED_KEYWORDS`): an unsupported keyword
is refused, never ignored.
"""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator

from opencdp.model.validation import parse_document

Mode = Literal["allow", "flag", "block"]
JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")

SUPPORTED_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "enum", "pattern", "minimum", "maximum",
     "minLength", "maxLength", "description", "title", "$schema", "$comment", "examples"}
)  # fmt: skip
"""Keywords a plan's schemas may use (at the top level, and for each property)."""


class PlanError(ValueError):
    """A plan that cannot be used, with the reason (the caller turns it into a ``Rejected``)."""


def _check_schema(where: str, schema: dict[str, Any]) -> None:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        raise PlanError(f"{where}: not a valid JSON Schema{f' at {path}' if path else ''}: {exc.message}") from exc
    _check_keywords(where, schema)
    if schema.get("type", "object") != "object":
        raise PlanError(f"{where}: the schema must describe an object (type: object)")
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, dict):
            raise PlanError(f"{where}: property {name!r} must have an object schema")
        _check_keywords(f"{where}, property {name!r}", sub)
        if "properties" in sub or "additionalProperties" in sub or "required" in sub:
            raise PlanError(f"{where}, property {name!r}: nested object rules are not supported yet")
    extra = schema.get("additionalProperties", True)
    if not isinstance(extra, bool):
        raise PlanError(f"{where}: additionalProperties must be true or false")


def _check_keywords(where: str, schema: dict[str, Any]) -> None:
    unsupported = sorted(set(schema) - SUPPORTED_KEYWORDS)
    if unsupported:
        raise PlanError(
            f"{where}: keywords {unsupported} are not supported in tracking plans; "
            f"supported: {sorted(SUPPORTED_KEYWORDS)}"
        )


class TrackingPlan(BaseModel):
    """One source's plan (JSON or YAML on the wire)."""

    model_config = ConfigDict(extra="forbid")

    events: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Planned ``track`` events: event name → JSON Schema of its ``properties``."""
    identify: dict[str, Any] | None = None
    """JSON Schema of ``identify`` traits (None: traits are not checked)."""
    unplanned: Mode = "allow"
    """What happens to a ``track`` event the plan does not list."""
    violations: Mode = "flag"
    """What happens to a planned event or traits that break their schema."""

    @field_validator("events")
    @classmethod
    def _events(cls, events: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, schema in events.items():
            if not name:
                raise PlanError("an event name must not be empty")
            _check_schema(f"event {name!r}", schema)
        return events

    @field_validator("identify")
    @classmethod
    def _identify(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            _check_schema("identify traits", schema)
        return schema


def parse_plan(doc: object) -> TrackingPlan:
    """A tracking plan from its JSON/YAML document; :class:`Rejected` (``invalid_plan``) with every reason."""
    return parse_document(TrackingPlan, doc, "tracking plan", "invalid_plan")
