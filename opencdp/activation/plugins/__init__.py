"""Destination plug-ins: one module per kind, each with the shape of :class:`base.Plugin`."""

from __future__ import annotations

from opencdp.activation.plugins.base import Plugin
from opencdp.model.destinations import DestinationBase


def build(config: DestinationBase) -> Plugin:
    """The plug-in for a destination's kind (imported on first use)."""
    kind = getattr(config, "kind", None)
    if kind == "webhook":
        from opencdp.activation.plugins.webhook import Webhook

        return Webhook(config)  # type: ignore[arg-type]
    if kind == "files":
        from opencdp.activation.plugins.files import Files

        return Files(config)  # type: ignore[arg-type]
    if kind == "postgres":
        from opencdp.activation.plugins.postgres import PostgresTable

        return PostgresTable(config)  # type: ignore[arg-type]
    if kind == "email":
        from opencdp.activation.plugins.email import Email

        return Email(config)  # type: ignore[arg-type]
    if kind == "customer_match":
        from opencdp.activation.plugins.customer_match import CustomerMatch

        return CustomerMatch(config)  # type: ignore[arg-type]
    raise ValueError(f"no plug-in for destination kind {kind!r}")
