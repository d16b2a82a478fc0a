"""The plug-ins against real peers on loopback: files (CSV and Parquet, atomic), a PostgreSQL table kept equal
to ``audience_members`` through adds and removes, email through a real SMTP server (aiosmtpd), including one
that defers and one that refuses, and a customer-match upload checked by a fake Google Ads server that speaks
the documented REST format, its hashes compared with an independent hashlib computation."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import psycopg
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from aiosmtpd.controller import Controller

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.errors import Rejected
from tests.activation.peers import Answer, Mailbox, Received, Receiver
from tests.activation.support import change, members, outbox, people
from tests.conftest import PG_DSN
from tests.helpers import free_port

FAST = {"allow_private": True, "backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.05}


@pytest.fixture
def duck_rt(duck_settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(duck_settings)
    yield runtime
    runtime.close()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_one_per_sync_written_atomically(duck_rt: Runtime, tmp_path: Path, fmt: str) -> None:
    rt = duck_rt
    ids = people(rt, 3)
    out = tmp_path / "exports"
    rt.activation.add({"name": "files", "kind": "files", "directory": str(out), "format": fmt, "audiences": ["a"],
                       "traits": ["email"], **FAST})  # fmt: skip
    for pid in ids:
        change(rt, "a", pid, "entered")
    rt.load()
    rt.activation.drain()
    change(rt, "a", ids[1], "exited")
    rt.load()
    rt.activation.drain()
    files = sorted(out.iterdir())
    assert [f.suffix for f in files] == [f".{fmt}"] * 2  # two syncs, no temporary file left
    read = pq.read_table if fmt == "parquet" else pa_csv.read_csv
    first, second = (read(f).to_pylist() for f in files)
    assert sorted((r["profile_id"], r["change"], r["trait_email"]) for r in first) == sorted(
        (pid, "entered", f"person.{i}@example.com") for i, pid in enumerate(ids))  # fmt: skip
    assert [(r["profile_id"], r["change"]) for r in second] == [(ids[1], "exited")]
    assert {r["idempotency_key"] for r in first + second} == {r["key"] for r in outbox(rt, "files")}


def test_files_into_an_unusable_directory_is_refused(duck_rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("not a directory")
    with pytest.raises(Rejected, match="not a directory"):
        duck_rt.activation.add({"name": "files", "kind": "files", "directory": str(tmp_path / "f")})


@pytest.fixture
def target_table() -> Iterator[str]:
    table = "cdp_sync_" + uuid.uuid4().hex[:10]
    yield table
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_postgres_table_follows_the_audience_with_adds_and_removes(rt: Runtime, target_table: str) -> None:
    ids = people(rt, 6)
    members(rt, "vip", ids[:3])
    rt.activation.add({"name": "crm", "kind": "postgres", "dsn": PG_DSN, "table": target_table, "audiences": ["vip"],
                       "traits": ["email", "first_name"], "batch_size": 2, **FAST})  # fmt: skip
    rt.load()
    for pid in ids[3:]:
        change(rt, "vip", pid, "entered")
    change(rt, "vip", ids[0], "exited")
    change(rt, "vip", ids[4], "exited")
    rt.load()
    rt.activation.drain()
    change(rt, "vip", ids[0], "entered")  # back again
    rt.load()
    assert rt.activation.drain()["delivered"] == 1
    with psycopg.connect(PG_DSN) as conn:
        synced = conn.execute(f"SELECT audience, profile_id, email, first_name FROM {target_table}").fetchall()
    expected = rt.engine.fetch_all(
        """SELECT m.audience, m.profile_id, p.email, p.first_name FROM audience_members AS m
           JOIN profiles AS p ON p.profile_id = m.profile_id WHERE m.audience = 'vip'"""
    )
    assert sorted(synced) == sorted(expected) and len(synced) == 5
    assert {r["state"] for r in outbox(rt, "crm")} == {"done"}


def test_postgres_target_that_refuses_is_a_dead_letter(duck_rt: Runtime) -> None:
    rt = duck_rt
    ids = people(rt, 1)
    rt.activation.add({"name": "crm", "kind": "postgres", "dsn": PG_DSN, "table": "pg_catalog.pg_class",
                       "audiences": ["vip"], **FAST})  # fmt: skip
    change(rt, "vip", ids[0], "entered")
    rt.load()
    rt.activation.drain()
    row = outbox(rt, "crm")[0]
    assert row["state"] == "dead" and row["attempts"] == 1 and "SQLSTATE" in row["error"]
    with pytest.raises(Rejected, match="cannot forward events"):
        rt.activation.add({"name": "x", "kind": "postgres", "dsn": PG_DSN, "table": "t", "events": ["E"]})


def email_destination(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": port,
            "from_address": "shop@example.org", "subject": "Hello {{ traits.first_name }}",
            "body": "{% if message['items'] %}Your cart:\n{% for i in message['items'] %}- {{ i.name }} x{{ i.qty }}\n"
                    "{% endfor %}{% else %}Welcome to {{ audience }}, {{ traits.first_name }}!{% endif %}\n",
            **FAST, **extra}  # fmt: skip


def test_email_templated_from_traits_and_a_journey_message(duck_rt: Runtime, smtp: tuple[Mailbox, int]) -> None:
    rt = duck_rt
    box, port = smtp
    ids = people(rt, 2)
    rt.activation.add(email_destination("mail", port, audiences=["vip"]))
    change(rt, "vip", ids[1], "entered")
    rt.load()
    cart = {"items": [{"name": "Cordless drill", "qty": 1}, {"name": "Drill bits {{7*7}}", "qty": 2}]}
    assert rt.activation.enqueue("mail", "journey:cart:1", ids[0], cart) > 0
    assert rt.activation.enqueue("mail", "journey:cart:1", ids[0], cart) == 0  # same key: one delivery
    assert rt.activation.drain()["delivered"] == 2
    by_to = {m["To"]: m for m in box.messages}
    welcome = by_to["person.1@example.com"]
    assert welcome["Subject"] == "Hello P1" and welcome.get_payload().strip() == "Welcome to vip, P1!"
    cart_mail = by_to["person.0@example.com"]
    lines = cart_mail.get_payload().splitlines()
    assert lines[:3] == ["Your cart:", "- Cordless drill x1", "- Drill bits {{7*7}} x2"]  # data, never code
    assert cart_mail["X-OpenCDP-Idempotency-Key"] == "journey:cart:1"
    assert cart_mail["Message-ID"] == f"<{hashlib.sha256(b'journey:cart:1').hexdigest()[:40]}@opencdp>"


def test_email_template_cannot_reach_python_internals(duck_rt: Runtime, smtp: tuple[Mailbox, int]) -> None:
    rt = duck_rt
    box, port = smtp
    ids = people(rt, 1)
    rt.activation.add(email_destination("mail", port, audiences=["vip"],
                                        body="{{ traits.__class__.__mro__[1].__subclasses__() }}"))  # fmt: skip
    change(rt, "vip", ids[0], "entered")
    rt.load()
    rt.activation.drain()
    row = outbox(rt, "mail")[0]
    assert row["state"] == "dead" and "rendering failed" in row["error"] and not box.messages
    with pytest.raises(Rejected, match="does not parse"):
        rt.activation.add(email_destination("broken", port, body="{% for %}"))


@pytest.mark.parametrize(("reply", "state", "attempts"),
                         [("451 4.3.0 try again later", "dead", 3), ("550 5.1.1 no such user", "dead", 1)])  # fmt: skip
def test_smtp_refusals_are_retried_or_dead_lettered(duck_rt: Runtime, reply: str, state: str, attempts: int) -> None:
    rt = duck_rt
    box = Mailbox(refuse=reply)
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        ids = people(rt, 1)
        rt.activation.add(email_destination("mail", port, audiences=["vip"], max_attempts=3))
        change(rt, "vip", ids[0], "entered")
        rt.load()
        rt.activation.drain(wait_seconds=5)
    finally:
        controller.stop()
    row = outbox(rt, "mail")[0]
    assert (row["state"], row["attempts"]) == (state, attempts) and box.rcpt_attempts == attempts
    assert reply[:3] in row["error"]


class FakeGoogleAds:
    """Google Ads OfflineUserDataJobService over REST, as documented: create a job, add operations, run it; and
    Google's OAuth 2.0 token endpoint (``POST /token``, a form with ``grant_type=refresh_token``, the client's
    id and secret and the refresh token; answers ``access_token`` and ``expires_in``, or 400 ``invalid_grant``)."""

    def __init__(self, lifetime: int = 3599) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.lifetime = lifetime
        self.valid: dict[str, float] = {"tok": float("inf")}
        """Access tokens the API takes, and until when (monotonic)."""
        self.issued: list[str] = []
        self.refused: list[str] = []
        """Access tokens the API answered 401 to."""
        self.grants = True

    def _token(self, req: Received) -> Answer:
        form = parse_qs(req.body.decode())
        expected = {"grant_type": ["refresh_token"], "client_id": ["cid"], "client_secret": ["csecret"],
                    "refresh_token": ["rtok"]}  # fmt: skip
        if form != expected or not self.grants:
            return 400, {}, b'{"error": "invalid_grant", "error_description": "Token has been expired or revoked."}'
        token = f"at-{len(self.issued) + 1}"
        self.issued.append(token)
        self.valid[token] = time.monotonic() + self.lifetime
        return 200, {}, json.dumps({"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer",
                                    "scope": "https://www.googleapis.com/auth/adwords"}).encode()  # fmt: skip

    def __call__(self, req: Received, n: int) -> Answer:
        if req.path == "/token":
            return self._token(req)
        bearer = req.headers.get("authorization", "").removeprefix("Bearer ")
        if self.valid.get(bearer, 0.0) <= time.monotonic() or req.headers.get("developer-token") != "dev":
            self.refused.append(bearer)
            return 401, {}, b'{"error": {"code": 401, "status": "UNAUTHENTICATED"}}'
        body = req.json()
        if req.path == "/v21/customers/1234567890/offlineUserDataJobs:create":
            meta = body["job"]["customerMatchUserListMetadata"]
            if body["job"]["type"] != "CUSTOMER_MATCH_USER_LIST" or \
                    meta["userList"] != "customers/1234567890/userLists/555":  # fmt: skip
                return 400, {}, b'{"error": {"code": 400, "status": "INVALID_ARGUMENT"}}'
            name = f"customers/1234567890/offlineUserDataJobs/{len(self.jobs) + 1}"
            self.jobs[name] = {"operations": [], "status": "PENDING"}
            return 200, {}, json.dumps({"resourceName": name}).encode()
        name, _, verb = req.path.removeprefix("/v21/").partition(":")
        job = self.jobs.get(name)
        if job is None:
            return 404, {}, b'{"error": {"code": 404, "status": "NOT_FOUND"}}'
        if verb == "addOperations":
            for op in body["operations"]:
                [(kind, data)] = op.items()
                for ident in data["userIdentifiers"]:
                    [(field, value)] = ident.items()
                    ok = kind in ("create", "remove") and field in ("hashedEmail", "hashedPhoneNumber")
                    if not ok or len(value) != 64 or value != value.lower():
                        return 400, {}, b'{"error": {"code": 400, "status": "INVALID_ARGUMENT"}}'
            job["operations"].extend(body["operations"])
            return 200, {}, b"{}"
        if verb == "run":
            job["status"] = "RUNNING"
            return 200, {}, b'{"name": "operations/1"}'
        return 404, {}, b"{}"


def hashed(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def test_customer_match_upload_in_google_ads_format(duck_rt: Runtime) -> None:
    rt = duck_rt
    ids = people(rt, 2)
    api = FakeGoogleAds()
    with Receiver(api) as peer:
        rt.activation.add({"name": "ads", "kind": "customer_match", "endpoint": peer.url, "customer_id": "123-456-7890",
                           "user_list_id": "555", "developer_token": "dev", "access_token": "tok",
                           "audiences": ["buyers"], "batch_size": 100, **FAST})  # fmt: skip
        change(rt, "buyers", ids[0], "entered")
        change(rt, "buyers", ids[1], "entered")
        rt.load()
        rt.activation.drain()
        change(rt, "buyers", ids[0], "exited")
        rt.load()
        rt.activation.drain()
    assert [j["status"] for j in api.jobs.values()] == ["RUNNING", "RUNNING"]
    first, second = (j["operations"] for j in api.jobs.values())
    expected = [{"create": {"userIdentifiers": [{"hashedEmail": hashed(f"person.{i}@example.com")},
                                                {"hashedPhoneNumber": hashed(f"+1415555000{i}")}]}}
                for i in range(2)]  # fmt: skip
    assert sorted(first, key=json.dumps) == sorted(expected, key=json.dumps)
    assert second == [{"remove": expected[0]["create"]}]


def test_customer_match_fetches_access_tokens_renews_them_and_dead_letters_a_revoked_grant(duck_rt: Runtime) -> None:
    rt = duck_rt
    ids = people(rt, 4)
    api = FakeGoogleAds(lifetime=2)  # Google's last an hour; two seconds here

    def sync(pid: str) -> dict[str, Any]:
        change(rt, "buyers", pid, "entered")
        rt.load()
        return rt.activation.drain()

    with Receiver(api) as peer:
        rt.activation.add({"name": "ads", "kind": "customer_match", "endpoint": peer.url, "customer_id": "1234567890",
                           "user_list_id": "555", "developer_token": "dev", "client_id": "cid",
                           "client_secret": "csecret", "refresh_token": "rtok", "token_endpoint": f"{peer.url}/token",
                           "audiences": ["buyers"], "max_attempts": 2, **FAST})  # fmt: skip
        listed = rt.activation.listing()[0]
        assert listed["client_secret"] == listed["refresh_token"] == "**********"
        assert sync(ids[0])["delivered"] == 1
        assert api.issued == ["at-1"]  # one token for the job's three requests
        time.sleep(2.1)
        assert sync(ids[1])["delivered"] == 1
        assert api.issued == ["at-1", "at-2"] and api.refused == []  # renewed before it expired, not after a 401
        api.valid["at-2"] = 0.0  # revoked early (the user changed their password)
        assert sync(ids[2])["delivered"] == 1
        assert api.refused == ["at-2"] and api.issued[-1] == "at-3"  # one 401, a new token, the same request again
        api.grants = False  # the refresh token itself was revoked
        api.valid["at-3"] = 0.0
        assert sync(ids[3])["dead"] == 1
    dead = [r for r in outbox(rt, "ads") if r["state"] == "dead"]
    assert len(dead) == 1 and "token endpoint answered 400" in dead[0]["error"]
    assert len(api.jobs) == 3


def test_customer_match_needs_a_token_or_the_means_to_fetch_one(duck_rt: Runtime) -> None:
    base = {"name": "ads", "kind": "customer_match", "customer_id": "1", "user_list_id": "2", "developer_token": "d",
            "audiences": ["a"]}  # fmt: skip
    with pytest.raises(Rejected, match="access_token"):
        duck_rt.activation.add(base)
    with pytest.raises(Rejected, match="go together"):
        duck_rt.activation.add({**base, "client_id": "cid", "refresh_token": "r"})


def test_customer_match_normalisation() -> None:
    from opencdp.activation.plugins.customer_match import user_identifiers

    payload = {
        "traits": {"email": "  Jo.Hn.Smith@GoogleMail.com ", "phone": "(415) 555-0100"},
        "identities": [{"type": "email", "value": "JOHN@example.org"}, {"type": "phone", "value": "n/a"}],
    }
    assert user_identifiers(payload, "US") == [
        {"hashedEmail": hashed("johnsmith@googlemail.com")},
        {"hashedEmail": hashed("john@example.org")},
        {"hashedPhoneNumber": hashed("+14155550100")},
    ]
    assert user_identifiers({"traits": {"phone": "020 7946 0958"}}, "GB") == [
        {"hashedPhoneNumber": hashed("+442079460958")}
    ]
