"""What every ``opencdp`` command shares: options, consoles, settings and the error exit."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from opencdp.cli.backend import Backend
from opencdp.config import Settings
from opencdp.errors import OpenCDPError, Rejected

console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="OPENCDP_DATA_DIR", help="Data directory (default ./opencdp-data)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def settings_for(data_dir: Path | None) -> Settings:
    return Settings(data_dir=data_dir) if data_dir is not None else Settings()


def fail(exc: OpenCDPError) -> typer.Exit:
    """Print an error's code and first line on stderr; the command exits with 1."""
    err_console.print(f"[red]error[/red] [bold]{exc.code}[/bold]: {exc.message.splitlines()[0]}")
    return typer.Exit(code=1)


def call(data_dir: Path | None, what: Callable[[Backend], Any]) -> Any:
    """Run ``what`` on the backend for ``data_dir``; an OpenCDP error ends the command with its message."""
    try:
        return what(Backend(settings_for(data_dir)))
    except OpenCDPError as exc:
        raise fail(exc) from exc


def print_json(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def read_document(path: Path, code: str) -> object:
    """A YAML or JSON file's content; :class:`Rejected` (``code``) when it cannot be read as either."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise Rejected(f"{path}: cannot be read as YAML or JSON: {exc}", code=code) from exc
