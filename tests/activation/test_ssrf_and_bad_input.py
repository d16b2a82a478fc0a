"""The SSRF guard and bad destination input: private, loopback, link-local, multicast and reserved addresses
refused unless ``allow_private``; unresolvable hosts a clear error at add/test time and a transient one during
delivery; invalid documents refused with what is wrong."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from opencdp.activation.network import pin, refused_reason, resolve
from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.errors import Rejected, Transient
from tests.activation.peers import Receiver
from tests.activation.support import change, outbox, people, webhook


@pytest.fixture
def rt(duck_settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(duck_settings)
    yield runtime
    runtime.close()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.9", "private"),
        ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "reserved"), ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not global"), ("::ffff:127.0.0.1", "loopback"), ("fd00::1", "private"),
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert refused_reason(ipaddress.ip_address(address)) == reason
    with pytest.raises(Rejected, match="allow_private") as err:
        resolve(address, 80, allow_private=False)
    assert err.value.code == "private_address"


def test_public_addresses_pass_and_allow_private_lets_loopback_through() -> None:
    assert refused_reason(ipaddress.ip_address("8.8.8.8")) is None
    assert refused_reason(ipaddress.ip_address("2606:4700:4700::1111")) is None
    pinned = pin("http://127.0.0.1:8080/hook?x=1", allow_private=True)
    assert pinned.url == "http://127.0.0.1:8080/hook?x=1" and pinned.host_header == "127.0.0.1:8080"
    pinned = pin("https://localhost/hook", allow_private=True)
    assert pinned.url in ("https://127.0.0.1/hook", "https://[::1]/hook") and pinned.server_name == "localhost"


def test_unresolvable_hosts_are_transient_during_delivery() -> None:
    with pytest.raises(Transient) as err:
        resolve("no-such-host.invalid", 443, allow_private=False)
    assert err.value.code == "unresolvable_host"


def test_bad_destinations_are_refused_when_added(rt: Runtime) -> None:
    cases = [
        ({**webhook("h", "http://127.0.0.1:9/x"), "allow_private": False}, "private_address", "loopback"),
        (webhook("h", "http://no-such-host.invalid/x"), "unresolvable_host", "does not resolve"),
        (webhook("h", "ftp://example.org/x"), "invalid_destination", "not an http"),
        (webhook("h", "http://user:pw@example.org/x"), "invalid_destination", "credentials"),
        ({**webhook("h", "http://127.0.0.1:9/x"), "secret": "short"}, "invalid_destination", "16 characters"),
        (webhook("Bad Name", "http://127.0.0.1:9/x"), "invalid_destination", "destination name"),
        ({**webhook("h", "http://127.0.0.1:9/x"), "kind": "carrier-pigeon"}, "invalid_destination", "kind"),
        (webhook("h", "http://127.0.0.1:9/x", traits=["no_such_trait"]), "unknown_trait", "no_such_trait"),
        (webhook("h", "http://127.0.0.1:9/x", max_attempts=0), "invalid_destination", "max_attempts"),
    ]
    for doc, code, words in cases:
        with pytest.raises(Rejected, match=words) as err:
            rt.activation.add(doc)
        assert err.value.code == code, doc
    assert rt.activation.listing() == []
    rt.activation.add(webhook("h", "http://127.0.0.1:9/x"))
    with pytest.raises(Rejected) as err:
        rt.activation.add(webhook("h", "http://127.0.0.1:9/x"))
    assert err.value.code == "destination_exists"
    assert rt.activation.add(webhook("h", "http://127.0.0.1:9/y"), replace=True)["version"] == 2
    listed = rt.activation.listing()
    assert listed[0]["secret"] == "**********" and listed[0]["url"].endswith("/y")


def test_a_refused_connection_is_retried_and_recorded(rt: Runtime) -> None:
    ids = people(rt, 1)
    with Receiver() as peer:
        url = peer.url
    rt.activation.add(webhook("gone", url, audiences=["a"], max_attempts=2))  # nothing listens there any more
    change(rt, "a", ids[0], "entered")
    rt.load()
    assert rt.activation.test("gone")["outcome"] == "transient"
    rt.activation.drain(wait_seconds=5)
    row = outbox(rt, "gone")[0]
    assert row["state"] == "dead" and row["attempts"] == 2 and "could not be reached" in row["error"]


def test_a_webhook_that_hangs_times_out_is_retried_and_dead_lettered(rt: Runtime) -> None:
    import threading

    ids = people(rt, 1)
    hang = threading.Event()
    hang.set()
    with Receiver(hang=hang) as peer:
        rt.activation.add(webhook("slow", peer.url, audiences=["a"], timeout_seconds=0.3, max_attempts=2))
        change(rt, "a", ids[0], "entered")
        rt.load()
        rt.activation.drain(wait_seconds=5)
        hang.clear()
    row = outbox(rt, "slow")[0]
    assert row["state"] == "dead" and row["attempts"] == 2 and "timed out" in row["error"]
    assert len(peer.received) == 2
