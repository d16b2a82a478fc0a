"""``opencdp destinations``: add, list, test, status, deliveries, replay, confirm, drain."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from opencdp.cli.common import AsJson, DataDir, call, console, print_json, read_document

destinations_app = typer.Typer(no_args_is_help=True, help="Destinations: add, list, test, status, replay, drain.")


@destinations_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="YAML or JSON destination document (see docs/destinations.md).")],
    replace: Annotated[bool, typer.Option(help="Replace the destination of that name.")] = False,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Add a destination; its host is resolved and checked now (the SSRF guard)."""
    doc = call(data_dir, lambda b: b.add_destination(read_document(file, "invalid_destination"), replace))
    if as_json:
        print_json(doc)
        return
    console.print(f"destination [bold]{doc['name']}[/bold] ({doc['kind']}) saved, version {doc['version']}")


@destinations_app.command("list")
def listing(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Every destination (secrets masked)."""
    docs = call(data_dir, lambda b: b.destinations())
    if as_json:
        print_json(docs)
        return
    table = Table("name", "kind", "enabled", "audiences", "events", "version")
    for d in docs:
        table.add_row(d["name"], d["kind"], str(d["enabled"]), ", ".join(d["audiences"]), ", ".join(d["events"]),
                      str(d["version"]))  # fmt: skip
    console.print(table)


@destinations_app.command("test")
def test(name: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Send one test delivery now and say how it went (exit 1 if it was not delivered)."""
    doc = call(data_dir, lambda b: b.test_destination(name))
    if as_json:
        print_json(doc)
    else:
        console.print(f"{name}: {doc['outcome']}" + (f" ({doc['error']})" if doc["error"] else ""))
    if doc["outcome"] != "delivered":
        raise typer.Exit(code=1)


@destinations_app.command("status")
def status(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Deliveries pending, held, done and dead per destination, the oldest pending one and the last errors."""
    rows = call(data_dir, lambda b: b.destinations_status())
    if as_json:
        print_json(rows)
        return
    table = Table("destination", "kind", "pending", "held", "done", "dead", "oldest pending", "last error")
    for r in rows:
        last = r["last_errors"][0]["error"] if r["last_errors"] else ""
        table.add_row(r["destination"], r["kind"], *(str(r[k]) for k in ("pending", "held", "done", "dead")),
                      str(r["oldest_pending"] or ""), last)  # fmt: skip
    console.print(table)


@destinations_app.command("deliveries")
def deliveries(
    name: str,
    state: Annotated[str | None, typer.Option(help="pending, held, done or dead.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    data_dir: DataDir = None,
) -> None:
    """A destination's deliveries, newest first, with attempts and the last error (JSON)."""
    print_json(call(data_dir, lambda b: b.deliveries(name, state, limit)))


@destinations_app.command("replay")
def replay(
    name: str,
    since: Annotated[datetime | None, typer.Option(help="Replay what happened from this time (with --until).")] = None,
    until: Annotated[datetime | None, typer.Option(help="... up to this time.")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Send the dead letters again (each once), or everything of a time range."""
    doc = call(data_dir, lambda b: b.replay(name, since, until))
    if as_json:
        print_json(doc)
        return
    console.print(f"{doc['replayed']} deliveries of {name} queued again")


@destinations_app.command("confirm")
def confirm(
    name: str,
    discard: Annotated[bool, typer.Option(help="Discard the held syncs (as dead letters) instead.")] = False,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Release a sync held by the broad-sync threshold."""
    doc = call(data_dir, lambda b: b.confirm_sync(name, discard))
    if as_json:
        print_json(doc)
        return
    console.print(f"{name}: {doc.get('confirmed', doc.get('discarded'))} held deliveries "
                  f"{'discarded' if discard else 'released'}")  # fmt: skip


@destinations_app.command("drain")
def drain(
    wait: Annotated[float, typer.Option(help="Also wait this many seconds for retries in backoff.")] = 0.0,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Process what is journalled, route it and deliver everything due, then exit."""
    doc = call(data_dir, lambda b: b.drain(wait))
    if as_json:
        print_json(doc)
        return
    console.print(f"delivered {doc['delivered']}, retrying {doc['retried']}, dead {doc['dead']}; left: {doc['left']}")
