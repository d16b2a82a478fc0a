"""Starting the server (``serve``) and the demo (``demo``)."""

from __future__ import annotations

import logging
import sys
import threading

import uvicorn
from rich.console import Console

from opencdp.api.runtime import ensure_admin_token
from opencdp.api.server import Server
from opencdp.cli.backend import Backend
from opencdp.cli.demo_story import run_story
from opencdp.cli.demo_traffic import DEMO_SOURCES, drive_traffic
from opencdp.config import Settings
from opencdp.model.sources import Source

SWITCH_INTERVAL_SECONDS = 0.0002
"""How long a thread may hold the GIL while another waits (CPython's default is 0.005)."""


def run_server(settings: Settings, host: str, port: int, *, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Each group commit hands the journal's writer thread the GIL twice; with CPython's default 5 ms switch
    # interval a busy event loop keeps that thread waiting up to 5 ms each time, which capped single calls at
    # ~5.5k/s on one core (with 0.2 ms: ~10k/s; benchmarks/, docs/performance.md).
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    server = Server(settings, address=(host, port))
    uvicorn.run(
        server,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        http="httptools",
        loop="uvloop",
        timeout_graceful_shutdown=5,
    )


def demo_sources(settings: Settings) -> list[Source]:
    """The demo workspace's sources, created on first run."""
    backend = Backend(settings)
    existing = {s.name: s for s in backend.list_sources()}
    return [existing.get(name) or backend.create_source(name, kind, None) for name, kind in DEMO_SOURCES]


def run_demo(settings: Settings, host: str, port: int, *, events: int, rate: float, console: Console) -> None:
    sources = demo_sources(settings)
    base = f"http://{host}:{port}"
    console.rule("[bold]OpenCDP demo")
    console.print(f"Data directory: [bold]{settings.data_dir.resolve()}[/bold] (DuckDB file opencdp.duckdb)")
    for s in sources:
        console.print(f"Source [cyan]{s.name}[/cyan] ({s.kind}) write key: [bold]{s.write_key}[/bold]")
    key = sources[0].write_key
    console.print("\nSend your own event:")
    console.print(
        f"  curl -u '{key}:' -H 'Content-Type: application/json' {base}/v1/track "
        '-d \'{"userId":"me","event":"Hello OpenCDP","properties":{"from":"curl"}}\'',
        soft_wrap=True,
    )
    console.print("Watch events arrive:   [bold]opencdp tail[/bold]   (in another terminal, same directory)")
    console.print(
        'Query them:            [bold]opencdp query "SELECT type, event, count(*) FROM events GROUP BY ALL"[/bold]'
    )
    console.rule()
    stop = threading.Event()
    traffic = threading.Thread(
        target=drive_traffic, args=(base, sources, stop), kwargs={"events": events, "rate": rate}, daemon=True
    )
    traffic.start()
    story = threading.Thread(
        target=run_story, args=(base, ensure_admin_token(settings), settings.data_dir, console, stop), daemon=True
    )
    story.start()
    try:
        run_server(settings, host, port, log_level="warning")
    finally:
        stop.set()
