"""``python -m opencdp`` is the ``opencdp`` command."""

from opencdp.cli.main import main

main()
