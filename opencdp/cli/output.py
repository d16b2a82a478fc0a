"""Printing tables, JSON and CSV for CLI commands."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.table import Column, Table

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


def _money(value: Any) -> str:
    return "-" if value is None else f"{value:,.2f}" if isinstance(value, float) else str(value)


def golden_traits(doc: dict[str, Any], source_names: Mapping[str, str] | None = None) -> Table:
    """A 360 view's golden and custom traits (fetched with lineage), each with where it came from: the source
    (by name when ``source_names`` knows its id) and the record key or message id, when, and the rule that chose
    it."""
    names = source_names or {}
    columns = [Column(name, overflow="fold") for name in ("trait", "value", "from", "when", "rule")]
    golden = Table(*columns, title="golden traits")  # folded, not cut: a narrow terminal shows every value
    for name, t in {**doc["traits"], **doc["custom_traits"]}.items():
        origin = t.get("record_key") or t.get("message_id")
        source = names.get(t["source_id"], t["source_id"])
        golden.add_row(name, str(t["value"]), f"{source} {origin}", str(t["observed_at"])[:19], t["rule"])
    return golden


def computed_traits(doc: dict[str, Any]) -> Table:
    """A 360 view's computed traits."""
    computed = Table("trait", "value", title="computed traits")
    for name, value in doc["computed"].items():
        computed.add_row(name, _money(value))
    return computed


def timeline(doc: dict[str, Any]) -> Table:
    """A 360 view's page of timeline, latest received first."""
    rows = Table("received", "at", "kind", "name", "amount", title="timeline (latest first)")
    for row in doc["timeline"]:
        amount = "" if row["amount"] is None else f"{row['amount']:,.2f} {row['currency'] or ''}"
        rows.add_row(str(row["seq"]), str(row["at"])[:19], row["kind"], str(row["name"] or ""), amount)
    return rows
