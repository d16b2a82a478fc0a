"""The OpenCDP server: the collection ASGI app and the admin API behind one port, plus the loader."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
from typing import Any

from opencdp.api.admin import build_admin_app
from opencdp.api.collection import CollectionApp, Receive, Scope, Send
from opencdp.api.profile_api import ProfileApp
from opencdp.api.runtime import Runtime
from opencdp.collect.ingest import run_loader
from opencdp.config import Settings

log = logging.getLogger("opencdp.server")


def server_file(settings: Settings) -> Any:
    return settings.data_dir / "server.json"


class Server:
    """ASGI entry point. Collection and profile paths go to their lean apps; everything else to FastAPI."""

    def __init__(self, settings: Settings, *, address: tuple[str, int] | None = None) -> None:
        self.settings = settings
        self.address = address
        self.runtime: Runtime | None = None
        self._stop = asyncio.Event()
        self._loader: asyncio.Task[None] | None = None

    def _open(self) -> Runtime:
        runtime = Runtime(self.settings)
        self.runtime = runtime
        self.collection = CollectionApp(runtime.ingestor, trusted_proxies=frozenset(self.settings.trusted_proxies))
        self.admin = build_admin_app(runtime)
        self.profile_api = ProfileApp(runtime.profile_cache, runtime.read_token, runtime.timeline_page)
        return runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.runtime is None:
            self._open()
        if scope["type"] == "http" and CollectionApp.handles(scope["path"]):
            await self.collection(scope, receive, send)
        elif scope["type"] == "http" and ProfileApp.handles(scope["path"]):
            await self.profile_api(scope, receive, send)
        else:
            await self.admin(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    runtime = await asyncio.to_thread(self._open)
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self._stop = asyncio.Event()
                self._loader = asyncio.create_task(
                    run_loader(runtime.load, self.settings.load_interval_seconds, self._stop)
                )
                runtime.activation.deliverer.start()  # destinations are delivered to in the background
                self._write_server_file()
                _freeze_startup_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._stop.set()
                if self._loader is not None:
                    with contextlib.suppress(Exception):
                        await self._loader
                with contextlib.suppress(FileNotFoundError):
                    server_file(self.settings).unlink()
                if self.runtime is not None:
                    await asyncio.to_thread(self.runtime.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _write_server_file(self) -> None:
        if self.address is None:
            return
        host, port = self.address
        path = server_file(self.settings)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"host": host, "port": port, "pid": os.getpid()}))
        tmp.replace(path)


def _freeze_startup_heap() -> None:
    """Put what start-up allocated (modules, FastAPI's routes, pydantic's and sqlglot's tables: ~75k objects)
    out of the garbage collector's reach.

    Otherwise every full collection walks all of it again: ~19 ms on this machine, a stall of every request in
    flight, which set the single-call p99 (docs/performance.md).
    """
    gc.collect()
    gc.freeze()
