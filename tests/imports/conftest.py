"""The runtime the whole-import tests share: one engine (DuckDB, then PostgreSQL) with a server source ``crm``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opencdp.api.runtime import Runtime
from opencdp.config import Settings


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    rt.registry.create("crm", "server", None)
    yield rt
    rt.close()
