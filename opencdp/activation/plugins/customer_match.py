"""An ad audience in the wire format of Google Ads Customer Match (OfflineUserDataJobService, REST):

1. ``POST {endpoint}/{version}/customers/{customer}/offlineUserDataJobs:create`` with a
   ``CUSTOMER_MATCH_USER_LIST`` job for ``customers/{customer}/userLists/{list}``; the answer names the job;
2. ``POST {endpoint}/{version}/{job}:addOperations`` with ``create`` operations for entries and ``remove``
   operations for exits, each a ``UserData`` of ``userIdentifiers`` (``hashedEmail``, ``hashedPhoneNumber``);
3. ``POST {endpoint}/{version}/{job}:run``.

Identifiers are normalised as Google documents before hashing (SHA-256, lower-case hex): an email trimmed and
lower-cased, with the dots of a gmail.com or googlemail.com local part removed; a phone number in E.164 (``+``,
country code, digits). A profile with neither is left out of the upload.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers

from opencdp.activation import http
from opencdp.activation.network import pin
from opencdp.activation.plugins.base import Delivery, DeliveryRefused
from opencdp.model.destinations import CustomerMatchDestination

GMAIL = ("gmail.com", "googlemail.com")


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

    def _post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.config.access_token.get_secret_value()}",
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

    def close(self) -> None:
        self.http.close()
