"""An ad audience in the wire format of Google Ads Customer Match (OfflineUserDataJobService, REST):

1. ``POST {endpoint}/{version}/customers/{customer}/offlineUserDataJobs:create`` with a
   ``CUSTOMER_MATCH_USER_LIST`` job for ``customers/{customer}/userLists/{list}``; the answer names the job;
2. ``POST {endpoint}/{version}/{job}:addOperations`` with ``create`` operations for entries and ``remove``
   operations for exits, each a ``UserData`` of ``userIdentifiers`` (``hashedEmail``, ``hashedPhoneNumber``);
3. ``POST {endpoint}/{version}/{job}:run``.

Identifiers are normalised as Google documents before hashing (SHA-256, lower-case hex): an email trimmed and
lower-cased, with the dots of a gmail.com or googlemail.com local part removed; a phone number in E.164 (``+``,
country code, digits). A profile with neither is left out of the upload.

Requests carry an OAuth 2.0 access token: a fixed one, or one fetched from Google's token endpoint with the
client credentials and a refresh token (``grant_type=refresh_token``; the answer's ``access_token`` and
``expires_in``), fetched again shortly before it expires and at once when the API answers 401 to it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import phonenumbers

from opencdp.activation import http
from opencdp.activation.network import pin
from opencdp.activation.plugins.base import Delivery, DeliveryRefused, Unauthorised
from opencdp.model.destinations import CustomerMatchDestination

GMAIL = ("gmail.com", "googlemail.com")
RENEW_BEFORE_SECONDS = 60.0
"""A fetched access token is replaced this long before it expires (or after three quarters of a short life)."""


def normalise_email(value: str) -> str | None:
    email = value.strip().lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        return None
    if domain in GMAIL:
        local = local.replace(".", "")
    return f"{local}@{domain}"


def normalise_phone(value: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def user_identifiers(payload: dict[str, Any], region: str) -> list[dict[str, str]]:
    """The hashed identifiers of the profile a payload is about (traits and identities, deduplicated)."""
    traits = payload.get("traits") or {}
    ids = payload.get("identities") or []
    emails = [traits.get("email"), *(i["value"] for i in ids if i.get("type") == "email")]
    phones = [traits.get("phone"), *(i["value"] for i in ids if i.get("type") == "phone")]
    out: list[dict[str, str]] = []
    for email in _unique(normalise_email(e) for e in emails if isinstance(e, str)):
        out.append({"hashedEmail": sha256(email)})
    for phone in _unique(normalise_phone(p, region) for p in phones if isinstance(p, str)):
        out.append({"hashedPhoneNumber": sha256(phone)})
    return out


def _unique(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


@dataclass(frozen=True)
class Upload:
    operations: list[dict[str, Any]]
    key: str


class CustomerMatch:
    def __init__(self, config: CustomerMatchDestination) -> None:
        self.config = config
        self.http = http.client(config.timeout_seconds)
        self.base = f"{config.endpoint.rstrip('/')}/{config.api_version}"
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None
        """The fetched access token and when (monotonic) to fetch the next."""

    def prepare(self, batch: Sequence[Delivery]) -> Upload:
        operations = []
        for d in batch:
            if d.payload.get("type") != "audience":
                continue
            identifiers = user_identifiers(d.payload, self.config.default_region)
            if identifiers:
                op = "create" if d.payload["change"] == "entered" else "remove"
                operations.append({op: {"userIdentifiers": identifiers}})
        return Upload(operations, sha256("\n".join(d.key for d in batch)))

    def _bearer(self, refused: str | None = None) -> str:
        """The access token to send: the fixed one, or a fetched one that is still fresh and is not ``refused``
        (the API just answered 401 to it)."""
        c = self.config
        if c.refresh_token is None:
            assert c.access_token is not None  # the model requires one or the other
            return c.access_token.get_secret_value()
        with self._lock:  # the destination's workers share one token
            if self._token is None or self._token[0] == refused or time.monotonic() >= self._token[1]:
                self._token = self._fetch_token()
            return self._token[0]

    def _fetch_token(self) -> tuple[str, float]:
        c = self.config
        assert c.client_id and c.client_secret and c.refresh_token
        form = urlencode({"grant_type": "refresh_token", "client_id": c.client_id,
                          "client_secret": c.client_secret.get_secret_value(),
                          "refresh_token": c.refresh_token.get_secret_value()})  # fmt: skip
        what = f"customer match {c.name}: the token endpoint"
        response = http.post(self.http, c.token_endpoint, allow_private=c.allow_private, content=form.encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, what=what)  # fmt: skip
        try:
            answer = response.json()
        except ValueError:
            answer = None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise DeliveryRefused(f"{what} answered without an access_token")
        life = answer.get("expires_in") if isinstance(answer, dict) else None
        seconds = float(life) if isinstance(life, int | float) and not isinstance(life, bool) and life > 0 else 3600.0
        return token, time.monotonic() + seconds - min(RENEW_BEFORE_SECONDS, seconds / 4)

    def _post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        token = self._bearer()
        try:
            return self._request(path, body, key, token)
        except Unauthorised:
            if self.config.refresh_token is None:
                raise
            return self._request(path, body, key, self._bearer(refused=token))  # revoked early: once more

    def _request(self, path: str, body: dict[str, Any], key: str, token: str) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "developer-token": self.config.developer_token.get_secret_value(),
            "X-OpenCDP-Idempotency-Key": key,
        }
        response = http.post(self.http, f"{self.base}/{path}", allow_private=self.config.allow_private,
                             content=json.dumps(body).encode(), headers=headers,
                             what=f"customer match {self.config.name}")  # fmt: skip
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            raise DeliveryRefused(f"customer match {self.config.name}: the answer is not JSON") from None
        return answer if isinstance(answer, dict) else {}

    def send(self, prepared: object) -> None:
        assert isinstance(prepared, Upload)
        if not prepared.operations:
            return
        c = self.config
        job = self._post(f"customers/{c.customer_id}/offlineUserDataJobs:create", {"job": {
            "type": "CUSTOMER_MATCH_USER_LIST",
            "customerMatchUserListMetadata": {"userList": f"customers/{c.customer_id}/userLists/{c.user_list_id}"},
        }}, prepared.key)  # fmt: skip
        name = job.get("resourceName")
        if not isinstance(name, str) or not name.startswith(f"customers/{c.customer_id}/offlineUserDataJobs/"):
            raise DeliveryRefused(f"customer match {c.name}: the job was not created (no resourceName)")
        self._post(f"{name}:addOperations", {"operations": prepared.operations, "enablePartialFailure": False},
                   prepared.key)  # fmt: skip
        self._post(f"{name}:run", {}, prepared.key)

    def check(self) -> None:
        pin(self.base, allow_private=self.config.allow_private)
        if self.config.refresh_token is not None:
            pin(self.config.token_endpoint, allow_private=self.config.allow_private)

    def close(self) -> None:
        self.http.close()
