"""Golden traits on both engines: the default survivorship, configured rules, lineage, custom traits and
placeholders, and a split that gives each side back exactly its own values."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.errors import Rejected
from tests.helpers import write_csv
from tests.identity.test_stitching import journal as send

T0 = datetime(2026, 4, 1, tzinfo=UTC)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def _identify(mid: str, user: str, days: int, **traits: object) -> dict[str, object]:
    return {"type": "identify", "messageId": mid, "userId": user, "traits": traits, "_at": T0 + timedelta(days=days)}


def test_default_survivorship_with_lineage(rt: Runtime, tmp_path: Path) -> None:
    web = rt.registry.create("web", "web", None).source_id
    crm = rt.registry.create("crm", "server", None).source_id
    # the CRM row is older than the web's last word, but its email was validated at import
    rt.import_files("crm", "customers", [write_csv(tmp_path / "c.csv", [
        {"customer_id": "C1", "user_id": "u1", "email": "Ann@Mail.com", "first_name": "Ann",
         "birth_date": "1990-05-01", "updated_at": "2026-03-01T00:00:00"}])])  # fmt: skip
    send(rt, web, [
        _identify("m1", "u1", 1, email="ann.web@mail.com", firstName="Annie", birthday="1990-05-01"),
        _identify("m2", "u1", 2, firstName="Anna", birthday="1991-05-01", plan="pro", email="test@test.com"),
        _identify("m3", "u1", 3, address={"city": "Leeds", "postalCode": "LS1 1AA"}, phone="+44 (0)113 496 0000"),
    ])  # fmt: skip
    view = rt.profile("user_id:u1", lineage=True)
    traits = view["traits"]
    assert traits["email"]["value"] == "ann@mail.com"  # verified first
    assert traits["email"]["source_id"] == crm and traits["email"]["record_key"] == "C1"
    assert traits["email"]["rule"] == "verified, most_recent"
    assert traits["first_name"]["value"] == "Anna" and traits["first_name"]["message_id"] == "m2"  # most recent
    assert traits["birth_date"]["value"] == "1990-05-01"  # most frequent (CRM and m1 against m2)
    assert traits["city"]["value"] == "Leeds" and traits["postal_code"]["value"] == "LS1 1AA"
    assert traits["phone"]["value"] == "+441134960000"
    assert view["custom_traits"]["plan"]["value"] == "pro"
    row = rt.engine.fetch_one("SELECT first_name, email, city FROM profiles WHERE profile_id = ?",
                              (view["profile_id"],))  # fmt: skip
    assert row == ("Anna", "ann@mail.com", "Leeds")


def test_configured_rules_apply_to_every_profile(rt: Runtime, tmp_path: Path) -> None:
    web = rt.registry.create("web", "web", None).source_id
    rt.registry.create("crm", "server", None)
    row = {"customer_id": "C1", "user_id": "u1", "first_name": "Ann", "updated_at": "2026-03-01T00:00:00"}
    rt.import_files("crm", "customers", [write_csv(tmp_path / "c.csv", [row])])
    send(rt, web, [_identify("m1", "u1", 1, firstName="Annie"), _identify("m2", "u1", 2, firstName="Annie"),
                   _identify("m3", "u1", 3, firstName="Anna")])  # fmt: skip
    assert rt.profile("user_id:u1")["traits"]["first_name"] == "Anna"
    rt.put_profile_settings({"survivorship": {"first_name": {"order": ["source_priority"], "sources": ["crm"]}}})
    assert rt.profile("user_id:u1")["traits"]["first_name"] == "Ann"
    rt.put_profile_settings({"survivorship": {"first_name": {"order": ["most_frequent", "most_recent"]}}})
    assert rt.profile("user_id:u1")["traits"]["first_name"] == "Annie"
    rt.put_profile_settings({"survivorship": {"first_name": {"order": ["first_seen"]}}})
    assert rt.profile("user_id:u1")["traits"]["first_name"] == "Ann"
    unknown_source = {"survivorship": {"x": {"order": ["source_priority"], "sources": ["nope"]}}}
    for bad, code in [({"survivorship": {"first_name": {"order": ["source_priority"]}}}, "bad_profile_settings"),
                      ({"survivorship": {"x": {"order": ["loudest"]}}}, "bad_profile_settings"),
                      ({"currency": "euro"}, "bad_profile_settings"), ({"rates": {"EUR": -1}}, "bad_profile_settings"),
                      (unknown_source, "source_not_found")]:  # fmt: skip
        with pytest.raises(Rejected) as err:
            rt.put_profile_settings(bad)
        assert err.value.code == code, bad
    assert rt.profile_settings()["survivorship"]["first_name"]["order"] == ("first_seen",)


def test_a_split_gives_each_side_back_its_own_values(rt: Runtime, tmp_path: Path) -> None:
    web = rt.registry.create("web", "web", None).source_id
    rt.registry.create("crm", "server", None)
    send(rt, web, [_identify("m1", "u1", 1, email="ann@mail.com", firstName="Ann")])
    rt.import_files("crm", "customers", [write_csv(tmp_path / "c.csv", [
        {"customer_id": "C9", "email": "bob@mail.com", "first_name": "Bob", "city": "York",
         "updated_at": "2026-04-05T00:00:00"}])])  # fmt: skip
    send(rt, web, [_identify("m2", "u1", 6, email="bob@mail.com")])  # the family shares a login, once
    merged = rt.profile("user_id:u1")["traits"]
    assert merged["first_name"] == "Bob" and merged["city"] == "York"  # the CRM row is the latest word
    rt.split_profile("user_id:u1", "email:bob@mail.com")
    ann, bob = rt.profile("user_id:u1")["traits"], rt.profile("email:bob@mail.com")["traits"]
    assert ann == {"email": "ann@mail.com", "first_name": "Ann"}
    assert bob == {"email": "bob@mail.com", "first_name": "Bob", "city": "York"}
