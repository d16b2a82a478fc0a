"""``opencdp identity``: why a profile is one person (explain) and how the identity graph is doing (health)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from opencdp.cli.backend import Backend
from opencdp.cli.common import AsJson, DataDir, console, fail, settings_for
from opencdp.errors import OpenCDPError

identity_app = typer.Typer(
    no_args_is_help=True, help="The identity graph: explain a profile, split one for good, check its health."
)


def _print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


@identity_app.command("explain")
def identity_explain(
    ref: Annotated[str, typer.Argument(help="A profile id, or an identifier as type:value (email:ada@example.org).")],
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Why these identifiers are one person: each edge and the message that made it, and what was refused."""
    try:
        doc = Backend(settings_for(data_dir)).explain_profile(ref)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    if as_json:
        _print_json(doc)
        return
    console.print(f"[bold]{doc['profile_id']}[/bold]: {len(doc['identifiers'])} identifiers")
    ids = Table("type", "value", "first seen", "messages")
    for i in doc["identifiers"]:
        ids.add_row(i["type"], i["value"], str(i["first_seen"])[:19], str(i["messages"]))
    console.print(ids)
    edges = Table("joined", "to", "because", "message", "source", title="why they are one person")
    for e in doc["edges"]:
        edges.add_row(e["from"], e["to"], e["rule"], str(e["message_id"]), str(e["source_id"]))
    console.print(edges)
    if doc["refused"]:
        refused = Table("identifier", "kept apart from", "reason", "in profile", title="merges refused")
        for r in doc["refused"]:
            refused.add_row(r["identifier"], r["kept_apart_from"], r["reason"], str(r["other_profile_id"]))
        console.print(refused)
    for a in doc["absorbed"]:
        console.print(f"absorbed {a['profile_id']} at {str(a['merged_at'])[:19]}")


@identity_app.command("split")
def identity_split(
    profile: Annotated[str, typer.Argument(help="A profile id, or an identifier of it as type:value.")],
    by: Annotated[str, typer.Option(help="What to separate: an identifier (type:value) or record:KEY.")],
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Separate an identifier (and what is nearest to it) from a profile, for good: later evidence and
    reprocessing respect it until `opencdp identity unsplit` removes it."""
    try:
        doc = Backend(settings_for(data_dir)).split_profile(profile, by)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    if as_json:
        _print_json(doc)
        return
    console.print(f"{by} now belongs to {doc['split_off']}; the rest stays in {doc['profile_id']}")


@identity_app.command("unsplit")
def identity_unsplit(
    a: Annotated[str, typer.Argument(help="An identifier, type:value.")],
    b: Annotated[str, typer.Argument(help="The identifier it was split from, type:value.")],
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Remove a split: the two identifiers may be one profile again if the evidence joins them."""
    try:
        doc = Backend(settings_for(data_dir)).unsplit(a, b)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    if as_json:
        _print_json(doc)
        return
    console.print(f"split removed; {a} is in {doc['profile_id']}")


@identity_app.command("health")
def identity_health(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Profile sizes, the largest profiles, merges, splits, refused edges, and giant-profile alerts."""
    try:
        doc = Backend(settings_for(data_dir)).identity_health()
    except OpenCDPError as exc:
        raise fail(exc) from exc
    if as_json:
        _print_json(doc)
        return
    console.print(
        f"{doc['profiles']:,} profiles from {doc['identifiers']:,} identifiers; {doc['merges']:,} merges, "
        f"{doc['splits']:,} splits, {doc['refused_edges']:,} merges refused by limits"
    )
    sizes = Table("identifiers per profile", "profiles")
    for bucket, n in doc["size_distribution"].items():
        sizes.add_row(bucket, f"{n:,}")
    console.print(sizes)
    top = Table("largest profiles", "identifiers", "user ids", "emails", "anonymous ids")
    for t in doc["largest"]:
        top.add_row(t["profile_id"], f"{t['identifiers']:,}", str(t["user_ids"]), str(t["emails"]),
                    str(t["anonymous_ids"]))  # fmt: skip
    console.print(top)
    if doc["blocked_values_hit"]:
        hits = ", ".join(f"{b['type']} {b['value']!r} ({b['hits']:,})" for b in doc["blocked_values_hit"])
        console.print(f"placeholders sent as identifiers (ignored): {hits}")
    for alert in doc["alerts"]:
        console.print(f"[red]{alert}[/red]")
