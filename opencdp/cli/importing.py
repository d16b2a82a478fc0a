"""``opencdp import``: files to expand, a progress bar, the summary and the rejected rows."""

from __future__ import annotations

import csv
import glob
import json
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from opencdp.cli.backend import Backend
from opencdp.errors import Rejected
from opencdp.store.files import FORMATS

_IMPORT_ID = re.compile(r"imp_[0-9a-f]+")


def expand(patterns: list[str]) -> list[Path]:
    """Files named directly, the importable files of a directory (sorted), or a glob's matches."""
    out: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FORMATS)
        elif path.exists():
            out.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())  # noqa: PTH207 (any pattern)
            if not matches:
                raise Rejected(f"{pattern}: no such file, directory or matching files", code="file_not_found")
            out += matches
    if not out:
        raise Rejected("no files to import", code="file_not_found")
    return out


def run(
    backend: Backend,
    patterns: list[str],
    *,
    source: str,
    kind: str,
    mapping: Path | None,
    rejects_file: Path | None,
    as_json: bool,
    console: Console,
) -> dict[str, Any]:
    paths = expand(patterns)
    mapping_text = mapping.read_bytes() if mapping is not None else None
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    columns += [TextColumn("{task.fields[rows]}"), TextColumn("{task.fields[rate]}")]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=as_json) as bar:
        task = bar.add_task(f"importing {len(paths)} file(s)", total=None, rows="", rate="")

        def progress(phase: str, done: int, total: int) -> None:
            elapsed = bar.tasks[task].elapsed or 0
            rate = f"{done / elapsed:,.0f} rows/s" if done and elapsed else ""
            rows = f"{done:,}/{total:,} rows" if total else ""
            bar.update(task, description=phase, completed=done, total=total or None, rows=rows, rate=rate)

        summary = backend.import_files(source, kind, paths, mapping_text, progress)
    if rejects_file is not None:
        _write_rejects(backend, summary["import_id"], rejects_file)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        _print(summary, console)
    return summary


def _write_rejects(backend: Backend, import_id: str, target: Path) -> None:
    if not _IMPORT_ID.fullmatch(import_id):  # it goes into SQL below
        raise Rejected(f"unexpected import id {import_id!r}", code="invalid_import_id")
    table = backend.query(
        "SELECT file, row_number, column_name, reason, raw FROM rejects "
        f"WHERE import_id = '{import_id}' ORDER BY file, row_number"
    )
    with target.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "row_number", "column_name", "reason", "raw"])
        for row in table.to_pylist():
            writer.writerow([row["file"], row["row_number"], row["column_name"], row["reason"], row["raw"]])


def _print(summary: dict[str, Any], console: Console) -> None:
    fields = summary["mapping"].get("fields", {})
    if fields:
        how = "inferred from the column names" if summary["mapping_inferred"] else "from the mapping file"
        mapping = Table("field", "column / default", title=f"mapping ({how})")
        for name, m in fields.items():
            mapping.add_row(name, m.get("column") or f"[dim]default[/dim] {m.get('default')}")
        console.print(mapping)
    table = Table("import", "kind", "rows", "accepted", "rejected", "duplicates", "flagged values")
    flagged = ", ".join(f"{k}: {v}" for k, v in summary["flagged"].items()) or "-"
    table.add_row(
        summary["import_id"],
        summary["kind"],
        f"{summary['rows']:,}",
        f"{summary['accepted']:,}",
        f"[red]{summary['rejected']:,}[/red]" if summary["rejected"] else "0",
        f"{summary['duplicates']:,}",
        flagged,
    )
    console.print(table)
    if summary["rejected"]:
        console.print(
            f"[dim]rejected rows: opencdp query \"SELECT * FROM rejects WHERE import_id = '{summary['import_id']}'\""
            " (or --rejects-file)[/dim]"
        )
