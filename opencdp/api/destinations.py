"""Admin API routes for destinations (``/admin/v1/destinations...``), behind the admin token like every admin
route: add, list, test, status, deliveries, replay, confirm a held sync, drain."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.params import Depends

from opencdp.api.runtime import Runtime
from opencdp.errors import Rejected


def destinations_router(runtime: Runtime, admin: list[Depends]) -> APIRouter:
    router = APIRouter(prefix="/admin/v1/destinations", dependencies=admin)
    activation = runtime.activation

    @router.post("", status_code=201)
    def add(body: Any = Body(...), replace: bool = False) -> dict[str, Any]:  # noqa: B008
        """Add a destination (``replace``: change an existing one). Its host is resolved and checked now: an
        unresolvable host or a private address is refused (422) unless it sets ``allow_private``."""
        return activation.add(body, replace=replace)

    @router.get("")
    def listing() -> list[dict[str, Any]]:
        """Every destination's document (secrets masked) and version."""
        return activation.listing()

    @router.get("/status")
    def status() -> list[dict[str, Any]]:
        """Per destination: deliveries pending, held, done and dead, the oldest pending, the last errors."""
        return activation.status()

    @router.post("/drain")
    async def drain(wait_seconds: Annotated[float, Query(ge=0, le=600)] = 0) -> dict[str, Any]:
        """Deliver what is due now (and retries falling due within ``wait_seconds``), then answer."""
        await asyncio.to_thread(runtime.load)
        return await asyncio.to_thread(activation.drain, wait_seconds)

    @router.post("/{name}/test")
    async def test(name: str) -> dict[str, Any]:
        """Send one test delivery now (not through the outbox) and say how it went."""
        return await asyncio.to_thread(activation.test, name)

    @router.get("/{name}/deliveries")
    def deliveries(
        name: str, state: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[dict[str, Any]]:
        """The destination's deliveries, newest first (``state``: pending, held, done or dead)."""
        return activation.deliveries(name, state, limit)

    @router.post("/{name}/replay")
    def replay(name: str, since: datetime | None = None, until: datetime | None = None,
               dead: bool = True) -> dict[str, Any]:  # fmt: skip
        """Send the dead letters again (each once), or with ``dead=false`` everything routed in
        ``[since, until)``."""
        if not dead and (since is None or until is None):
            raise Rejected("a time-range replay needs since and until", code="bad_range")
        return activation.replay(name, dead=dead, since=since, until=until)

    @router.post("/{name}/confirm")
    def confirm(name: str, discard: bool = False) -> dict[str, Any]:
        """Release the destination's held broad syncs (``discard``: dead-letter them instead)."""
        return activation.confirm(name, discard=discard)

    return router
