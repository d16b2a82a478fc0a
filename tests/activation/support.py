"""Shared set-up for activation tests: a runtime, real profiles from real messages, audience rows written the
way the segments stage writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from opencdp.api.runtime import Runtime
from tests.identity.test_stitching import journal

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def people(rt: Runtime, n: int, *, source: str = "web") -> list[str]:
    """``n`` profiles (users u0..u{n-1} with an email and a phone); returns their profile ids in user order."""
    found = [s for s in rt.registry.list() if s.name == source]
    source_id = found[0].source_id if found else rt.registry.create(source, "server", None).source_id
    journal(rt, source_id, [
        {"type": "identify", "messageId": f"id-{i}", "userId": f"u{i}",
         "traits": {"email": f"Person.{i}@Example.com", "phone": f"+1 415 555 {i:04d}", "firstName": f"P{i}"}}
        for i in range(n)
    ])  # fmt: skip
    rows = rt.engine.fetch_all(
        """SELECT n.id_value, m.profile_id FROM identity_nodes AS n JOIN identity_membership AS m
           ON m.node_id = n.node_id WHERE n.id_type = 'user_id'"""
    )
    by_user = dict(rows)
    return [by_user[f"u{i}"] for i in range(n)]


def members(rt: Runtime, audience: str, profile_ids: list[str]) -> None:
    rt.engine.execute("DELETE FROM audience_members WHERE audience = ?", (audience,))
    for pid in profile_ids:
        _member(rt, audience, pid, T0)


def _member(rt: Runtime, audience: str, profile_id: str, since: datetime) -> None:
    rt.engine.execute(
        "INSERT INTO audience_members (audience, profile_id, profile_key, since) "
        "SELECT ?, profile_id, profile_key, ? FROM profiles_index WHERE profile_id = ?",
        (audience, since, profile_id),
    )


def change(rt: Runtime, audience: str, profile_id: str, what: str, cause: str = "event") -> int:
    """Append an entry or exit to ``audience_changes`` (and keep ``audience_members`` in step)."""
    row = rt.engine.fetch_one("SELECT coalesce(max(change_seq), 0) + 1 FROM audience_changes")
    assert row is not None
    seq = int(row[0])
    rt.engine.execute("INSERT INTO audience_changes VALUES (?, ?, ?, ?, ?, ?)",
                      (seq, audience, profile_id, what, cause, datetime.now(UTC)))  # fmt: skip
    if what == "entered":
        _member(rt, audience, profile_id, datetime.now(UTC))
    else:
        rt.engine.execute("DELETE FROM audience_members WHERE audience = ? AND profile_id = ?", (audience, profile_id))
    return seq


def webhook(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "webhook", "url": url, "secret": "s3cret-s3cret-s3cret", "allow_private": True,
            "backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.05, **extra}  # fmt: skip


def outbox(rt: Runtime, destination: str) -> list[dict[str, Any]]:
    rows = rt.engine.fetch_all(
        """SELECT delivery_id, idempotency_key, kind, audience, change, profile_id, state, attempts, replays,
                  last_error FROM outbox WHERE destination = ? ORDER BY delivery_id""",
        (destination,),
    )
    keys = ("delivery_id", "key", "kind", "audience", "change", "profile_id", "state", "attempts", "replays", "error")
    return [dict(zip(keys, r, strict=True)) for r in rows]
