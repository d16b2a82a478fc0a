"""``opencdp plans``, ``opencdp violations`` and ``opencdp quarantine``: tracking plans and what they catch."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from opencdp.cli import output
from opencdp.cli.backend import Backend
from opencdp.cli.common import AsJson, DataDir, console, fail, read_document, settings_for
from opencdp.errors import OpenCDPError

plans_app = typer.Typer(no_args_is_help=True, help="Tracking plans: set, show, and draft one from traffic.")
pii_app = typer.Typer(no_args_is_help=True, help="PII: the policy per class and source, and what is classified.")
quarantine_app = typer.Typer(no_args_is_help=True, help="Messages a plan blocked: list them, release the fixed.")

SourceOption = Annotated[str | None, typer.Option(help="Only this source (id or name).")]


def _backend(data_dir: Path | None) -> Backend:
    return Backend(settings_for(data_dir))


@plans_app.command("set")
def plans_set(
    source: Annotated[str, typer.Argument(help="Source (id or name).")],
    plan_file: Annotated[Path, typer.Argument(help="The plan, YAML or JSON.")],
    data_dir: DataDir = None,
) -> None:
    """Save a source's tracking plan (a new version)."""
    try:
        result = _backend(data_dir).put_plan(source, read_document(plan_file, "invalid_plan"))
    except OpenCDPError as exc:
        raise fail(exc) from exc
    console.print(f"tracking plan of [cyan]{result['source_id']}[/cyan] saved as version {result['version']}")


@plans_app.command("transforms")
def plans_transforms(
    rules_file: Annotated[Path, typer.Argument(help="The transformation rules, YAML or JSON ({rules: [...]}).")],
    data_dir: DataDir = None,
) -> None:
    """Save the transformation rules (rename events or properties, cast, map values, drop, route)."""
    try:
        result = _backend(data_dir).put_transformations(read_document(rules_file, "invalid_transformations"))
    except OpenCDPError as exc:
        raise fail(exc) from exc
    console.print(f"transformations saved as version {result['version']}")


@plans_app.command("show")
def plans_show(source: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Print a source's current tracking plan (YAML, or JSON with --json)."""
    try:
        result = _backend(data_dir).get_plan(source)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(f"# version {result['version']}\n" + yaml.safe_dump(result["plan"], sort_keys=False))


@plans_app.command("infer")
def plans_infer(
    source: Annotated[str, typer.Option(help="Source (id or name) whose traffic to read.")],
    days: Annotated[float, typer.Option(help="How many days of traffic to read.")] = 30,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Draft a plan from observed traffic: every event seen, its properties and their types (edit, then set)."""
    try:
        plan = _backend(data_dir).draft_plan(source, days)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    sys.stdout.write(json.dumps(plan, indent=2) + "\n" if as_json else yaml.safe_dump(plan, sort_keys=False))


def violations(source: SourceOption = None, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Violations counted by event, property and rule."""
    try:
        table = _backend(data_dir).violations(source)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    output.table(table, as_json=as_json, as_csv=False, console=console)


@quarantine_app.command("list")
def quarantine_list(
    source: SourceOption = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Held messages, oldest first, with the reasons."""
    try:
        table = _backend(data_dir).quarantine(source, limit)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    output.table(table, as_json=as_json, as_csv=False, console=console)


@quarantine_app.command("release")
def quarantine_release(
    source: SourceOption = None,
    event: Annotated[str | None, typer.Option(help="Only messages of this event.")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Re-check held messages against the current plans and release those that pass now (each once)."""
    try:
        result = _backend(data_dir).release(source, event)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        console.print(f"released {result['released']}, still held {result['still_held']}")


def quality(
    source: SourceOption = None,
    days: Annotated[
        float, typer.Option(min=1.01, help="Days of history to judge by (the last 24 h against the rest).")
    ] = 7,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Data quality per source: validity, completeness, duplicates, rejects, volume, freshness, a 0-100 score."""
    try:
        rows = _backend(data_dir).quality(source, days)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("source", "messages", "score", "valid", "complete", "planned", "duplicates", "rejected",
                  "24 h vs usual", "last seen", "alerts", title=f"data quality, last {days:g} days")  # fmt: skip
    for q in rows:
        table.add_row(
            q["name"],
            f"{q['messages']:,}",
            f"[bold]{q['score']}[/bold]",
            f"{q['validity']:.1%}",
            f"{q['completeness']:.1%}",
            f"{q['planned']:.1%}",
            f"{q['duplicate_rate']:.1%}",
            f"{q['rejected_rate']:.1%}",
            "-" if q["volume_ratio"] is None else f"{q['volume_ratio']:.0%}",
            "-" if q["freshness_seconds"] is None else f"{q['freshness_seconds']:,.0f} s ago",
            "[red]" + ", ".join(q["alerts"]) + "[/red]" if q["alerts"] else "",
        )
    console.print(table)


@pii_app.command("set")
def pii_set(
    policy_file: Annotated[Path, typer.Argument(help="The policy, YAML or JSON ({default, sources, fields}).")],
    data_dir: DataDir = None,
) -> None:
    """Save the PII policy: per class (and source) keep, mask, hash or drop."""
    try:
        result = _backend(data_dir).put_pii_policy(read_document(policy_file, "invalid_pii_policy"))
    except OpenCDPError as exc:
        raise fail(exc) from exc
    console.print(f"PII policy saved as version {result['version']}")


@pii_app.command("show")
def pii_show(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Print the PII policy (YAML, or JSON with --json); classes it does not list follow the built-in default."""
    try:
        result = _backend(data_dir).pii_policy()
    except OpenCDPError as exc:
        raise fail(exc) from exc
    version = result.pop("version")
    if as_json:
        sys.stdout.write(json.dumps({"version": version, **result}, indent=2) + "\n")
    else:
        sys.stdout.write(f"# version {version}\n" + yaml.safe_dump(result, sort_keys=False))


@pii_app.command("fields")
def pii_fields(source: SourceOption = None, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Every field classified as PII: source, container, field, class, how detected, what the policy did."""
    try:
        table = _backend(data_dir).pii_fields(source)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    output.table(table, as_json=as_json, as_csv=False, console=console)
