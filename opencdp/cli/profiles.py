"""``opencdp profiles`` (a 360 view, export, settings) and ``opencdp traits`` (list, add, delete, backfill)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from opencdp.cli import output
from opencdp.cli.common import AsJson, DataDir, call, console, print_json, read_document

profiles_app = typer.Typer(no_args_is_help=True, help="Unified profiles: the 360 view, export, settings.")
traits_app = typer.Typer(no_args_is_help=True, help="Computed traits: list, add, delete, backfill.")
EXPORT_CHUNK = 10_000


@profiles_app.command("show")
def profiles_show(
    ref: Annotated[str, typer.Argument(help="A profile id, or an identifier as type:value (email:ada@example.org).")],
    limit: Annotated[int, typer.Option(help="Timeline rows to show.")] = 10,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """The profile's 360 view: golden traits with their sources, computed traits, identities, recent timeline."""
    doc = call(data_dir, lambda b: b.profile(ref, True, limit))
    if as_json:
        print_json(doc)
        return
    console.print(f"[bold]{doc['profile_id']}[/bold]  (traits computed {str(doc['computed_at'])[:19]})")
    console.print(output.golden_traits(doc))
    console.print(output.computed_traits(doc))
    console.print("identities: " + ", ".join(f"{i['type']}:{i['value']}" for i in doc["identities"]))
    console.print(output.timeline(doc))


@profiles_app.command("export")
def profiles_export(
    path: Annotated[Path, typer.Argument(help="The file to write.")],
    fmt: Annotated[Literal["parquet", "csv", "jsonl"], typer.Option("--format", help="File format.")] = "parquet",
    data_dir: DataDir = None,
) -> None:
    """Every live profile (the ``profiles`` view: golden and computed traits) to Parquet, CSV or JSON Lines."""
    table: pa.Table = call(data_dir, lambda b: b.query("SELECT * FROM profiles ORDER BY profile_id"))
    columns = [TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("profiles", total=table.num_rows)
        if fmt == "parquet":
            with pq.ParquetWriter(path, table.schema) as writer:
                for batch in table.to_batches(EXPORT_CHUNK):
                    writer.write_batch(batch)
                    bar.advance(task, batch.num_rows)
        elif fmt == "csv":
            with pa_csv.CSVWriter(path, table.schema) as writer:
                for batch in table.to_batches(EXPORT_CHUNK):
                    writer.write_batch(batch)
                    bar.advance(task, batch.num_rows)
        else:
            with path.open("w") as f:
                for batch in table.to_batches(EXPORT_CHUNK):
                    f.writelines(json.dumps(row, default=str) + "\n" for row in batch.to_pylist())
                    bar.advance(task, batch.num_rows)
    console.print(f"{table.num_rows:,} profiles written to {path}")


@profiles_app.command("settings")
def profiles_settings(
    settings_file: Annotated[Path | None, typer.Argument(help="YAML or JSON: currency, rates, survivorship.")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Show the profile settings, or set them from a file (then every profile is computed again)."""
    if settings_file is not None:
        doc = read_document(settings_file, "bad_profile_settings")
        result = call(data_dir, lambda b: b.put_profile_settings(doc))
        console.print(f"profile settings saved as version {result['version']}; every profile computed again")
        return
    result = call(data_dir, lambda b: b.profile_settings())
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if as_json else yaml.safe_dump(result, sort_keys=False))


@traits_app.command("list")
def traits_list(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """The computed traits: shipped ones first, then the workspace's own."""
    traits = call(data_dir, lambda b: b.traits())
    if as_json:
        sys.stdout.write(json.dumps(traits, indent=2) + "\n")
        return
    table = Table("name", "type", "definition", "shipped")
    for t in traits:
        if "expression" in t:
            definition = t["expression"]
        else:
            definition = f"{t['aggregate']}({t.get('of', '*')}) over {t['over']}"
            definition += f" in {', '.join(t['event'])}" if t.get("event") else ""
            definition += f" where {len(t['where'])} condition(s)" if t.get("where") else ""
            definition += f", last {t['window_days']} days" if t.get("window_days") else ""
        table.add_row(t["name"], t["type"], definition, "yes" if t["shipped"] else "")
    console.print(table)


@traits_app.command("add")
def traits_add(
    definitions_file: Annotated[Path, typer.Argument(help="YAML or JSON: one definition, a list, or traits: [...].")],
    replace: Annotated[bool, typer.Option(help="Replace the workspace's traits instead of adding.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Add computed traits; each is checked before anything is saved, then every profile is computed again."""
    doc = read_document(definitions_file, "bad_trait")
    result = call(data_dir, lambda b: b.put_traits(doc, replace))
    console.print(f"traits {', '.join(result['traits'])} saved (version {result['version']}); profiles computed")


@traits_app.command("delete")
def traits_delete(name: str, data_dir: DataDir = None) -> None:
    """Remove one of the workspace's computed traits."""
    result = call(data_dir, lambda b: b.delete_trait(name))
    console.print(f"trait {result['deleted']} removed (version {result['version']})")


@traits_app.command("backfill")
def traits_backfill(data_dir: DataDir = None) -> None:
    """Compute every profile's golden and computed traits again."""
    result = call(data_dir, lambda b: b.backfill_traits())
    console.print(f"{result['profiles']:,} profiles computed")
