"""What every ``opencdp`` command shares: options, consoles, settings and the error exit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from opencdp.config import Settings
from opencdp.errors import OpenCDPError

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
