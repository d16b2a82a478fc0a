"""Printing tables, JSON and CSV for CLI commands."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from opencdp.model.sources import Source


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def sources(found: list[Source], *, as_json: bool, console: Console, single: bool = False) -> None:
    if as_json:
        docs = [json.loads(s.model_dump_json()) for s in found]
        sys.stdout.write(json.dumps(docs[0] if single else docs, indent=2) + "\n")
        return
    table = Table("name", "source_id", "kind", "enabled", "write_key", "max msg KiB", "max batch KiB")
    for s in found:
        table.add_row(
            s.name,
            s.source_id,
            s.kind,
            "yes" if s.enabled else "[red]no[/red]",
            s.write_key,
            str(s.limits.max_message_bytes // 1024),
            str(s.limits.max_batch_bytes // 1024),
        )
    console.print(table)


def table(result: pa.Table, *, as_json: bool, as_csv: bool, console: Console) -> None:
    rows = result.to_pylist()
    if as_json:
        sys.stdout.write(json.dumps([{k: _plain(v) for k, v in r.items()} for r in rows], indent=2, default=str) + "\n")
        return
    if as_csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(result.column_names)
        for r in rows:
            writer.writerow([_plain(r[c]) for c in result.column_names])
        sys.stdout.write(buf.getvalue())
        return
    out = Table(*result.column_names)
    for r in rows:
        out.add_row(*["" if r[c] is None else str(_plain(r[c])) for c in result.column_names])
    console.print(out)
    console.print(f"[dim]{len(rows)} row(s)[/dim]")
