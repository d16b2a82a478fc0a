"""Outbound HTTP for plug-ins: every request goes to the SSRF guard's checked address, never follows a
redirect, and sorts failures into the error taxonomy."""

from __future__ import annotations

import socket
from typing import Any

import httpx

from opencdp.activation.network import pin
from opencdp.activation.plugins.base import DeliveryFailed, raise_for_status

NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
"""A request's head and body go out as separate writes; with Nagle's algorithm the body waits for the peer's
delayed ACK of the head (~40 ms on Linux) on every request of a kept-alive connection."""


def client(timeout: float) -> httpx.Client:
    """A client for one destination (thread-safe; its workers share it)."""
    return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False,
                        transport=httpx.HTTPTransport(socket_options=NO_DELAY))  # fmt: skip


def post(
    http: httpx.Client, url: str, *, allow_private: bool, content: bytes, headers: dict[str, str], what: str
) -> httpx.Response:
    """POST ``content`` to ``url`` (resolved and checked first); returns a 2xx answer or raises."""
    pinned = pin(url, allow_private=allow_private)
    extensions: dict[str, Any] = {"sni_hostname": pinned.server_name} if pinned.server_name else {}
    try:
        response = http.post(
            pinned.url, content=content, headers={**headers, "Host": pinned.host_header}, extensions=extensions
        )
    except httpx.TimeoutException as exc:
        raise DeliveryFailed(f"{what} timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise DeliveryFailed(f"{what} could not be reached ({type(exc).__name__})") from exc
    raise_for_status(response.status_code, response.headers, what)
    return response
