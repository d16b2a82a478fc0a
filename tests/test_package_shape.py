"""The package's front door stays small, and the module layers follow the data flow."""

from __future__ import annotations

import opencdp


def test_public_surface_is_pinned() -> None:
    assert sorted(opencdp.__all__) == ["Settings", "__version__", "open_store"]
    for name in opencdp.__all__:
        assert hasattr(opencdp, name)
