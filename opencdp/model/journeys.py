"""Journeys: a trigger (an event, or entering an audience), then steps per profile: wait, branch on a condition,
send to a destination, set a trait; with exit events and a frequency cap (pure definitions, no I/O).
segments/journeys.py runs them; docs/segments.md explains them.

The abandoned cart::

    name: abandoned_cart
    trigger: {event: Product Added}
    exit_on: [Order Completed]
    steps:
      - wait: {hours: 1}
      - send: {destination: shop_email, template: abandoned_cart}
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from opencdp.model.audiences import TRAIT_KEY, Node
from opencdp.model.profiles import NAME, Condition

MAX_STEPS = 50
MAX_WAIT_DAYS = 366


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    """What puts a profile into the journey: an event (with property filters) or entering an audience."""

    event: str | None = None
    where: list[Condition] = Field(default_factory=list)
    audience: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Trigger:
        if (self.event is None) == (self.audience is None):
            raise ValueError("a trigger is an event or an audience, not both or neither")
        if self.audience is not None and self.where:
            raise ValueError("where filters the trigger event's properties; an audience trigger takes none")
        return self


class Duration(_Strict):
    seconds: int = 0
    minutes: int = 0
    hours: int = 0
    days: int = 0

    @model_validator(mode="after")
    def _positive(self) -> Duration:
        total = self.total_seconds
        if total <= 0 or total > MAX_WAIT_DAYS * 86_400 or min(self.seconds, self.minutes, self.hours, self.days) < 0:
            raise ValueError(f"a wait is more than nothing and at most {MAX_WAIT_DAYS} days")
        return self

    @property
    def total_seconds(self) -> int:
        return self.seconds + self.minutes * 60 + self.hours * 3600 + self.days * 86_400


class Wait(_Strict):
    wait: Duration


class Send(_Strict):
    send: SendSpec


class SendSpec(_Strict):
    destination: str
    template: str | None = None
    """A name the destination understands (an email template); the payload carries the profile's traits and
    the events that triggered the journey."""


class SetTrait(_Strict):
    set_trait: TraitSpec


class TraitSpec(_Strict):
    name: str
    value: str | float | bool

    @field_validator("name")
    @classmethod
    def _key(cls, v: str) -> str:
        if not TRAIT_KEY.match(v):
            raise ValueError(f"{v!r} is not a trait name")
        return v


class Branch(_Strict):
    """``if`` a condition (the audience language, evaluated for the profile when it reaches the step) ``then``
    these steps, ``else`` those; either way the steps after the branch follow."""

    if_: Node = Field(alias="if")
    then: list[Step] = Field(default_factory=list)
    else_: list[Step] = Field(default_factory=list, alias="else")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_TAGS = {"wait": "wait", "send": "send", "set_trait": "set_trait", "if": "branch", "if_": "branch"}


def _step_kind(step: Any) -> str | None:
    if isinstance(step, dict):
        return next((_TAGS[k] for k in step if k in _TAGS), None)
    tags: dict[type, str] = {Wait: "wait", Send: "send", SetTrait: "set_trait", Branch: "branch"}
    return tags.get(type(step))


Step = Annotated[
    Annotated[Wait, Tag("wait")]
    | Annotated[Send, Tag("send")]
    | Annotated[SetTrait, Tag("set_trait")]
    | Annotated[Branch, Tag("branch")],
    Discriminator(
        _step_kind,
        custom_error_type="bad_step",
        custom_error_message="a step is wait, send, set_trait or if (a branch)",
    ),
]
Branch.model_rebuild()
Send.model_rebuild()
SetTrait.model_rebuild()


class FrequencyCap(_Strict):
    entries: int = 1
    days: int = 1

    @model_validator(mode="after")
    def _sane(self) -> FrequencyCap:
        if not 1 <= self.entries <= 1000 or not 1 <= self.days <= 3650:
            raise ValueError("a frequency cap is 1 to 1000 entries per 1 to 3650 days")
        return self


class JourneyDefinition(_Strict):
    name: str
    description: str = ""
    trigger: Trigger
    steps: list[Step]
    exit_on: list[str] = Field(default_factory=list)
    """Event names that end the journey for a profile that does one after entering (an order completed ends
    an abandoned-cart journey)."""
    cap: FrequencyCap | None = None
    """At most this many entries per profile in so many days (a profile is never in the journey twice at once)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"{v!r} is not a journey name (lower case letters, digits and _, from a letter)")
        return v

    @model_validator(mode="after")
    def _steps(self) -> JourneyDefinition:
        flat = flatten(self.steps)
        if not flat:
            raise ValueError("a journey needs at least one step")
        if len(flat) > MAX_STEPS:
            raise ValueError(f"a journey has at most {MAX_STEPS} steps")
        return self


def flatten(steps: list[Step]) -> list[tuple[Step, int | None, int | None]]:
    """Every step numbered (its index), with the number of the step that follows it (None: the journey ends)
    and, for a branch, the one that follows when its condition is false (for a branch, the first is the start
    of its ``then`` list, the second of its ``else`` list; an empty list goes straight to the step after the
    branch)."""
    out: list[tuple[Step, int | None, int | None]] = []

    def place(items: list[Step], after: int | None) -> int | None:
        """Number ``items`` (each followed by the next, the last by ``after``); returns the first's number."""
        first: int | None = None
        slots: list[int] = []
        for step in items:
            slots.append(len(out))
            out.append((step, None, None))
            if first is None:
                first = slots[-1]
        for i, slot in enumerate(slots):
            step = out[slot][0]
            follow = slots[i + 1] if i + 1 < len(slots) else after
            if isinstance(step, Branch):
                then_first = place(step.then, follow)
                else_first = place(step.else_, follow)
                out[slot] = (step, then_first if step.then else follow, else_first if step.else_ else follow)
            else:
                out[slot] = (step, follow, None)
        return first

    place(steps, None)
    return out
