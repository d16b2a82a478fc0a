"""The SSRF guard: every outbound connection goes to an address that was resolved and checked first.

A destination's host is resolved, every address it resolves to must be public (not private, loopback,
link-local, multicast, reserved, shared or unspecified, IPv4-mapped IPv6 included) unless the destination sets
``allow_private``, and the connection is then made to the checked address itself (the host name stays in the
``Host`` header and in TLS's server name), so a second, different DNS answer cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from opencdp.errors import Rejected, Transient

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def refused_reason(ip: Address) -> str | None:
    """Why an address is not public (None when it is)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return refused_reason(ip.ipv4_mapped)
    for reason in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{reason}"):
            return reason.replace("_", "-")
    if not ip.is_global:
        return "not global"  # shared address space (100.64/10), documentation ranges and the like
    return None


class UnresolvableHost(Transient):
    """The host name does not resolve (now): a clear error when a destination is added or tested, and a
    transient one during delivery (DNS may come back)."""

    code = "unresolvable_host"


class PrivateAddress(Rejected):
    """The host resolves to an address the SSRF guard refuses."""

    code = "private_address"


def resolve(host: str, port: int, *, allow_private: bool) -> Address:
    """The address to connect to for ``host``: each address it resolves to is checked, the first is used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"host {host!r} does not resolve: {exc}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise UnresolvableHost(f"host {host!r} resolves to no address")
    if not allow_private:
        for ip in addresses:
            reason = refused_reason(ip)
            if reason is not None:
                raise PrivateAddress(
                    f"host {host!r} resolves to {ip}, a {reason} address; outbound requests go to public addresses "
                    "only unless the destination sets allow_private: true",
                    status=422,
                )
    return addresses[0]


@dataclass(frozen=True)
class PinnedURL:
    """A URL rewritten to the checked address, with what the request must still say about the host."""

    url: str
    host_header: str
    server_name: str | None
    """TLS server name (and certificate name) for https; None for plain http."""


def pin(url: str, *, allow_private: bool) -> PinnedURL:
    """``url`` with its host replaced by its checked address."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise Rejected(f"{url!r} is not an http(s) URL", code="invalid_url", status=422)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ip = resolve(host, port, allow_private=allow_private)
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    return PinnedURL(
        url=urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")),
        host_header=parts.netloc,
        server_name=host if parts.scheme == "https" else None,
    )
