"""Destinations' secrets are sealed in the engine on both engines: a copy of the database does not hand them out,
the key survives restarts, older plain rows are sealed at start, and a wrong or malformed key is a clear error."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.errors import Terminal
from tests.activation.support import webhook

SECRET = "s3cret-s3cret-s3cret"


def stored(rt: Runtime, name: str) -> dict[str, object]:
    row = rt.engine.fetch_one("SELECT config FROM destinations WHERE name = ?", (name,))
    assert row is not None
    return dict(json.loads(row[0]))


def test_secrets_are_sealed_in_the_engine_and_open_after_a_restart(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        rt.activation.add(webhook("hook", "http://127.0.0.1:9/x"))
        rt.activation.add({"name": "mail", "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": 2525,
                           "username": "u", "password": "p4ssw0rd-p4ssw0rd", "from_address": "a@example.com",
                           "subject": "s", "body": "b", "audiences": ["a"], "allow_private": True})  # fmt: skip
        everything = json.dumps(rt.engine.fetch_all("SELECT * FROM destinations"), default=str)
        assert SECRET not in everything and "p4ssw0rd" not in everything
        assert str(stored(rt, "hook")["secret"]).startswith("sealed:v1:")
        assert stored(rt, "hook")["url"] == "http://127.0.0.1:9/x"  # only secrets are sealed
    finally:
        rt.close()
    assert (settings.data_dir / "secrets_key").stat().st_mode & 0o777 == 0o600
    again = Runtime(settings)
    try:
        hook = again.activation.store.get("hook")
        assert isinstance(hook.secret, SecretStr) and hook.secret.get_secret_value() == SECRET  # type: ignore[union-attr]
        assert again.activation.listing()[0]["secret"] == "**********"
    finally:
        again.close()


def test_a_destination_stored_in_plain_text_is_sealed_at_start(settings: Settings) -> None:
    rt = Runtime(settings)
    rt.activation.add(webhook("hook", "http://127.0.0.1:9/x"))
    plain = {**stored(rt, "hook"), "secret": SECRET}  # as versions before sealing wrote it
    rt.engine.execute("UPDATE destinations SET config = ? WHERE name = 'hook'", (json.dumps(plain),))
    rt.close()
    again = Runtime(settings)
    try:
        assert str(stored(again, "hook")["secret"]).startswith("sealed:v1:")
        assert again.activation.store.get("hook").secret.get_secret_value() == SECRET  # type: ignore[union-attr]
    finally:
        again.close()


def test_a_wrong_or_malformed_key_is_a_clear_error(settings: Settings) -> None:
    rt = Runtime(settings)
    rt.activation.add(webhook("hook", "http://127.0.0.1:9/x"))
    rt.close()
    other = settings.model_copy(update={"secrets_key": SecretStr(Fernet.generate_key().decode())})
    with pytest.raises(Terminal) as wrong:
        Runtime(other)
    assert wrong.value.code == "wrong_secrets_key" and SECRET not in wrong.value.message
    malformed = settings.model_copy(update={"secrets_key": SecretStr("not-a-key")})
    with pytest.raises(Terminal) as bad:
        Runtime(malformed)
    assert bad.value.code == "bad_secrets_key"
