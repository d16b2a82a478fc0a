"""``opencdp``: serve, demo, process, sources, import, plans, pii, violations, quarantine, quality, query, tail."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from opencdp.cli import governing, output
from opencdp.cli.backend import Backend
from opencdp.cli.common import AsJson, DataDir, console, fail, settings_for
from opencdp.cli.destinations import destinations_app
from opencdp.cli.identity import identity_app
from opencdp.cli.profiles import profiles_app, traits_app
from opencdp.cli.segments import audiences_app, journeys_app
from opencdp.errors import OpenCDPError
from opencdp.model.sources import SourceKind, SourceLimits

app = typer.Typer(no_args_is_help=True, add_completion=False, help="OpenCDP: an open-source Customer Data Platform.")
sources_app = typer.Typer(no_args_is_help=True, help="Create, list, disable and rotate sources and write keys.")
app.add_typer(sources_app, name="sources")
app.add_typer(governing.plans_app, name="plans")
app.add_typer(governing.quarantine_app, name="quarantine")
app.add_typer(governing.pii_app, name="pii")
app.add_typer(identity_app, name="identity")
app.add_typer(profiles_app, name="profiles")
app.add_typer(traits_app, name="traits")
app.add_typer(audiences_app, name="audiences")
app.add_typer(journeys_app, name="journeys")
app.add_typer(destinations_app, name="destinations")
app.command("violations")(governing.violations)
app.command("quality")(governing.quality)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    data_dir: DataDir = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run the collection API, the admin API and the loader."""
    from opencdp.cli.serving import run_server

    run_server(settings_for(data_dir), host, port, log_level=log_level)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    data_dir: DataDir = None,
    events: Annotated[int, typer.Option(help="Simulated messages to send (0: until stopped).")] = 0,
    rate: Annotated[float, typer.Option(help="Simulated messages per second.")] = 20.0,
) -> None:
    """Start OpenCDP with a demo source and simulated web, app and server traffic."""
    from opencdp.cli.serving import run_demo

    run_demo(settings_for(data_dir), host, port, events=events, rate=rate, console=console)


@app.command()
def process(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Catch up and exit: load what is journalled, govern it, resolve identities (a server does this itself)."""
    import json

    try:
        done = Backend(settings_for(data_dir)).process()
    except OpenCDPError as exc:
        raise fail(exc) from exc
    if done is None:
        console.print("a server runs on this data directory: it processes everything as it arrives")
        return
    if as_json:
        sys.stdout.write(json.dumps(done) + "\n")
        return
    console.print(
        f"raw log: {done['raw_log']:,} messages; governed up to {done['governed_upto']:,}; identity up to "
        f"{done['identity_upto']:,} of {done['governed_stream']:,} in the governed stream; "
        f"{done['identifiers']:,} identifiers in {done['profiles']:,} profiles ({done['merged']:,} merged away)"
    )


@sources_app.command("create")
def sources_create(
    name: str,
    kind: Annotated[str, typer.Option(help="web, mobile, server, http or rudderstack (raises size limits).")] = "http",
    max_message_kb: Annotated[int | None, typer.Option(help="Largest single message, KiB.")] = None,
    max_batch_kb: Annotated[int | None, typer.Option(help="Largest batch request, KiB.")] = None,
    rate: Annotated[float | None, typer.Option(help="Requests per second per write key.")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Create a source and print its write key."""
    if kind not in ("web", "mobile", "server", "http", "rudderstack"):
        raise typer.BadParameter("kind must be web, mobile, server, http or rudderstack")
    typed_kind: SourceKind = kind  # type: ignore[assignment]
    limits = SourceLimits.for_kind(typed_kind)
    overrides: dict[str, float] = {}
    if max_message_kb:
        overrides["max_message_bytes"] = max_message_kb * 1024
    if max_batch_kb:
        overrides["max_batch_bytes"] = max_batch_kb * 1024
    if rate:
        overrides["rate_per_second"] = rate
    limits = limits.model_copy(update=overrides) if overrides else limits
    try:
        source = Backend(settings_for(data_dir)).create_source(name, typed_kind, limits)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    output.sources([source], as_json=as_json, single=True, console=console)


@sources_app.command("list")
def sources_list(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """List sources with their write keys and state."""
    try:
        found = Backend(settings_for(data_dir)).list_sources()
    except OpenCDPError as exc:
        raise fail(exc) from exc
    output.sources(found, as_json=as_json, console=console)


def _source_action(ref: str, action: str, data_dir: Path | None, as_json: bool) -> None:
    try:
        source = Backend(settings_for(data_dir)).source_action(ref, action)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    output.sources([source], as_json=as_json, single=True, console=console)


@sources_app.command("disable")
def sources_disable(source: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Disable a source (by id or name): its write key is refused from now on."""
    _source_action(source, "disable", data_dir, as_json)


@sources_app.command("enable")
def sources_enable(source: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Enable a disabled source again."""
    _source_action(source, "enable", data_dir, as_json)


@sources_app.command("rotate-key")
def sources_rotate(source: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Give a source a new write key; the old one stops working at once."""
    _source_action(source, "rotate-key", data_dir, as_json)


@app.command()
def query(
    sql: Annotated[
        str, typer.Argument(help="One read-only SQL statement (DuckDB dialect), e.g. 'SELECT * FROM events'.")
    ],
    data_dir: DataDir = None,
    as_json: AsJson = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """Run a read-only SQL query against the store (through the server when one is running)."""
    try:
        table = Backend(settings_for(data_dir)).query(sql)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    output.table(table, as_json=as_json, as_csv=as_csv, console=console)


@app.command()
def rejected(
    source: Annotated[str | None, typer.Option(help="Only this source (id or name).")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1, max=10_000)] = 50,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Show messages and requests that were refused, with the reason (kept, never dropped)."""
    try:
        table = Backend(settings_for(data_dir)).rejected(source, limit)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    output.table(table, as_json=as_json, as_csv=False, console=console)


@app.command("import")
def import_files(
    files: Annotated[list[str], typer.Argument(help="CSV, JSON Lines or Parquet files, directories or globs.")],
    source: Annotated[str, typer.Option(help="Source (name or id) the records belong to.")],
    kind: Annotated[str, typer.Option(help="customers, orders, returns, tickets or events.")],
    mapping: Annotated[
        Path | None, typer.Option(help="YAML or JSON mapping of columns to fields (inferred when omitted).")
    ] = None,
    rejects_file: Annotated[Path | None, typer.Option(help="Write the rejected rows to this CSV file.")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Import a CRM, point-of-sale, finance or support export into the raw log (idempotent)."""
    from opencdp.cli.importing import run

    try:
        run(
            Backend(settings_for(data_dir)),
            files,
            source=source,
            kind=kind,
            mapping=mapping,
            rejects_file=rejects_file,
            as_json=as_json,
            console=console,
        )
    except OpenCDPError as exc:
        raise fail(exc) from exc


@app.command()
def tail(
    source: Annotated[str | None, typer.Option(help="Only this source (id or name).")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Show messages live as the server acknowledges them (needs a running server)."""
    from opencdp.cli.tailing import follow

    try:
        follow(settings_for(data_dir), source, as_json=as_json, console=console)
    except OpenCDPError as exc:
        raise fail(exc) from exc
    except KeyboardInterrupt:
        pass


def main() -> None:  # pragma: no cover - console entry point
    logging.basicConfig(level=logging.WARNING)
    try:
        app()
    except BrokenPipeError:
        sys.stderr.close()


__all__ = ["app", "main"]
