"""Secrets sealed before they reach the engine: a destination's webhook secret, SMTP password, database DSN or
OAuth tokens are stored encrypted (Fernet: AES-128-CBC with HMAC-SHA256), so a copy of the database, a dump or
a backup does not hand them out. The key lives outside the engine: ``OPENCDP_SECRETS_KEY``, else
``data_dir/secrets_key`` (created, mode 0600, at first start). Losing the key loses the secrets (the
destinations must be given them again), not the data.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from opencdp.errors import Terminal

SEALED = "sealed:v1:"
"""How a sealed value starts (anything else was written before secrets were sealed)."""


def new_key() -> str:
    return Fernet.generate_key().decode()


class Sealer:
    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.strip().encode())
        except ValueError:
            raise Terminal(
                "the secrets key (OPENCDP_SECRETS_KEY or data_dir/secrets_key) is not a key: 32 bytes in URL-safe "
                "base64, e.g. from python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())'",
                code="bad_secrets_key",
            ) from None

    def seal(self, value: str) -> str:
        return SEALED + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str) -> str:
        """The secret in ``value`` (a value that is not sealed is returned as it is)."""
        if not value.startswith(SEALED):
            return value
        try:
            return self._fernet.decrypt(value[len(SEALED) :].encode()).decode()
        except InvalidToken:
            raise Terminal(
                "a stored secret does not open with this secrets key: start with the key it was sealed with "
                "(OPENCDP_SECRETS_KEY or data_dir/secrets_key), or give the destinations their secrets again",
                code="wrong_secrets_key",
            ) from None

    def open_all(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with every sealed top-level value opened."""
        return {k: self.open(v) if isinstance(v, str) else v for k, v in doc.items()}


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED)
