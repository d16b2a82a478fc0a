"""OpenCDP: an open-source Customer Data Platform.

The public surface is small on purpose: settings, opening a store, and the version. Everything else is
reached through the ``opencdp`` command and the HTTP APIs.
"""

from __future__ import annotations

from opencdp.config import Settings
from opencdp.store import open_engine as open_store

__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "open_store"]
