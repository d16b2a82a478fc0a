"""``opencdp tail``: follow the server's live stream of acknowledged messages."""

from __future__ import annotations

import json

import httpx
from rich.console import Console

from opencdp.api.runtime import ensure_admin_token
from opencdp.cli.backend import running_server
from opencdp.config import Settings
from opencdp.errors import Transient


def follow(settings: Settings, source: str | None, *, as_json: bool, console: Console) -> None:
    url = running_server(settings)
    if url is None:
        raise Transient(
            "no server is running on this data directory; start one with `opencdp serve`", code="server_not_running"
        )
    headers = {"Authorization": f"Bearer {ensure_admin_token(settings)}"}
    params = {"source": source} if source else {}
    with httpx.stream(
        "GET", f"{url}/admin/v1/tail", headers=headers, params=params, timeout=httpx.Timeout(10.0, read=None)
    ) as response:
        if response.status_code != 200:
            raise Transient(f"the server refused the tail: {response.read().decode()}", code="tail_failed")
        for line in response.iter_lines():
            if not line:
                continue
            doc = json.loads(line)
            if "tail" in doc:
                if not as_json:
                    console.print(f"[dim]following {source or 'all sources'}... (Ctrl-C to stop)[/dim]")
                continue
            if as_json:
                print(json.dumps(doc), flush=True)
                continue
            message = doc["message"]
            if doc["kind"] == "rejected":
                console.print(f"[red]rejected[/red] {doc['source_id']} {message.get('code')}: {message.get('reason')}")
                continue
            name = message.get("event") or message.get("name") or ""
            who = message.get("userId") or message.get("anonymousId") or ""
            console.print(
                f"[dim]{message.get('timestamp', '')}[/dim] [cyan]{doc['source_id']}[/cyan] "
                f"[bold]{message.get('type', '')}[/bold] {name} [green]{who}[/green] "
                f"[dim]{message.get('messageId', '')}[/dim]"
            )
