"""Turning a document into a model, with every reason in one :class:`Rejected` when it does not fit."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from opencdp.errors import Rejected

M = TypeVar("M", bound=BaseModel)


def parse_document(model: type[M], doc: object, what: str, code: str) -> M:
    """``model`` from ``doc``; :class:`Rejected` (``code``) listing each field at fault and why."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        reasons = "; ".join(f"{_where(e['loc']) or what}: {e['msg']}" for e in exc.errors())
        raise Rejected(f"invalid {what}: {reasons}", code=code) from exc


def _where(loc: tuple[int | str, ...]) -> str:
    """A field's path, without the parts pydantic adds for a union's member (``function-after[...]``)."""
    return ".".join(str(p) for p in loc if not str(p).startswith(("function-", "tagged-union")))
