"""The ``opencdp`` command line (typer + rich)."""
