"""Destinations: where activation sends audience changes, events and journey messages (pure definitions, no I/O).

A destination is one document: its ``kind`` (which plug-in sends), what it subscribes to (audiences, whose
entries and exits it receives as diffs; event names, forwarded as they arrive), how delivery behaves (attempts,
backoff, concurrency, timeout, the broad-sync threshold) and the plug-in's own settings. docs/destinations.md
explains each field with examples.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, field_validator, model_validator

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise ValueError("credentials in a URL are not accepted; use the destination's secret or token fields")
    return url


class DestinationBase(BaseModel):
    """What every destination has, whatever its kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """Lower-case letters, digits, ``-`` and ``_``; the destination's id in the CLI, the API and the outbox."""
    enabled: bool = True
    audiences: tuple[str, ...] = ()
    """Audiences whose entries and exits this destination receives (the first sync sends the current members)."""
    events: tuple[str, ...] = ()
    """Event names (``track`` calls) forwarded as they arrive."""
    traits: tuple[str, ...] | None = None
    """Profile traits (columns of the ``profiles`` view) sent with each delivery; None: every trait."""
    max_attempts: int = Field(default=8, ge=1, le=100)
    """A delivery still failing after this many attempts goes to the dead letters."""
    backoff_base_seconds: float = Field(default=1.0, gt=0, le=3600)
    """The first retry waits up to this long; each further one up to twice as long (full jitter)."""
    backoff_cap_seconds: float = Field(default=300.0, gt=0, le=86_400)
    """No retry waits longer than this (a Retry-After from the peer may ask for longer, and is honoured)."""
    concurrency: int = Field(default=4, ge=1, le=64)
    """Batches of this destination in flight at once (each destination has its own workers)."""
    batch_size: int = Field(default=1, ge=1, le=10_000)
    """Deliveries sent together in one request, file or transaction."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """One attempt (connect, send, answer) longer than this is a timeout: a transient error."""
    allow_private: bool = False
    """Allow loopback, private, link-local and other non-public addresses (the SSRF guard refuses them
    otherwise). For peers on the same machine or network, e.g. tests on 127.0.0.1."""
    confirm_above: int | None = Field(default=10_000, ge=1)
    """A sync that would add or remove more than this many profiles at once is held until confirmed."""
    confirm_above_share: float | None = Field(default=0.5, gt=0, le=1)
    """... or more than this share of all profiles (when there are at least 100)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(
                "a destination name is 1-63 lower-case letters, digits, '-' or '_', starting with a letter"
            )
        return value

    @field_validator("traits")
    @classmethod
    def _traits(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for trait in value or ():
            if not IDENTIFIER.match(trait):
                raise ValueError(f"{trait!r} is not a trait name")
        return value

    @model_validator(mode="after")
    def _subscribes(self) -> DestinationBase:
        if len(set(self.audiences)) != len(self.audiences) or len(set(self.events)) != len(self.events):
            raise ValueError("an audience or event is listed twice")
        return self

    def public(self) -> dict[str, Any]:
        """The document without its secrets (what ``list`` shows)."""
        return self.model_dump(mode="json")


class WebhookDestination(DestinationBase):
    """A JSON POST per delivery (or per batch), signed with HMAC-SHA256 over ``timestamp.body``."""

    kind: Literal["webhook"] = "webhook"
    url: str
    secret: SecretStr
    """Signs each request: ``X-OpenCDP-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    headers: dict[str, str] = Field(default_factory=dict)

    _check_url = field_validator("url")(classmethod(lambda cls, v: _http_url(v)))

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("the webhook secret needs at least 16 characters")
        return value

    def public(self) -> dict[str, Any]:
        return {**super().public(), "secret": "**********"}


class FilesDestination(DestinationBase):
    """A CSV or Parquet file per sync (one batch) into a directory, written atomically."""

    kind: Literal["files"] = "files"
    directory: str
    format: Literal["csv", "parquet"] = "csv"
    batch_size: int = Field(default=1000, ge=1, le=1_000_000)


class AudienceOnly(DestinationBase):
    """A destination that mirrors audience membership: events cannot be forwarded to it."""

    @model_validator(mode="after")
    def _no_events(self) -> AudienceOnly:
        if self.events:
            raise ValueError(f"a {getattr(self, 'kind', '')} destination syncs audiences; it cannot forward events")
        return self


class PostgresDestination(AudienceOnly):
    """Audience members and chosen traits in a PostgreSQL table: upserts on entry, deletes on exit."""

    kind: Literal["postgres"] = "postgres"
    dsn: SecretStr
    """libpq connection string of the target database (its host is checked by the SSRF guard)."""
    table: str
    """Created if missing: ``(audience, profile_id, <traits>..., synced_at)``, key (audience, profile_id)."""
    batch_size: int = Field(default=500, ge=1, le=100_000)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not all(IDENTIFIER.match(part) for part in value.split(".")) or value.count(".") > 1:
            raise ValueError("the table is a name or schema.name of lower-case letters, digits and '_'")
        return value

    def public(self) -> dict[str, Any]:
        return {**super().public(), "dsn": "**********"}


class EmailDestination(DestinationBase):
    """An email per delivery over SMTP, templated (sandboxed Jinja2) with the delivery: its traits, its event or
    a journey's message (e.g. the items of an abandoned cart)."""

    kind: Literal["email"] = "email"
    smtp_host: str
    smtp_port: int = Field(default=25, ge=1, le=65_535)
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    from_address: str
    to_trait: str = "email"
    """The trait (or journey message field) that holds the recipient."""
    subject: str
    body: str
    """Templates: ``{{ traits.first_name }}``, ``{% for item in message.items %}...{% endfor %}``."""

    def public(self) -> dict[str, Any]:
        return {**super().public(), "password": "**********" if self.password else None}


class CustomerMatchDestination(AudienceOnly):
    """An ad audience kept in step with an OpenCDP audience, in the wire format of Google Ads Customer Match
    (OfflineUserDataJobService over REST: create a job, add operations, run it), emails and phones normalised
    and SHA-256 hashed as Google documents."""

    kind: Literal["customer_match"] = "customer_match"
    endpoint: str = "https://googleads.googleapis.com"
    api_version: str = "v21"
    customer_id: str
    user_list_id: str
    developer_token: SecretStr
    access_token: SecretStr | None = None
    """A fixed OAuth 2.0 access token (kept fresh by someone else), or:"""
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    """OAuth 2.0 client credentials and a refresh token: access tokens are fetched from ``token_endpoint`` and
    fetched again before they expire or when the API no longer takes one."""
    token_endpoint: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
    default_region: str = "US"
    """Phone numbers written without a country code are read as this region's."""
    batch_size: int = Field(default=1000, ge=1, le=100_000)

    _check_url = field_validator("endpoint", "token_endpoint")(classmethod(lambda cls, v: _http_url(v)))

    @model_validator(mode="after")
    def _credentials(self) -> CustomerMatchDestination:
        refreshing = (self.client_id, self.client_secret, self.refresh_token)
        if any(refreshing) and not all(refreshing):
            raise ValueError("client_id, client_secret and refresh_token go together")
        if self.access_token is None and not all(refreshing):
            raise ValueError("give an access_token, or client_id, client_secret and refresh_token to fetch them")
        return self

    @field_validator("customer_id", "user_list_id")
    @classmethod
    def _digits(cls, value: str) -> str:
        value = value.replace("-", "")
        if not value.isdigit():
            raise ValueError("Google Ads ids are digits (dashes allowed)")
        return value

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"v\d{1,3}", value):
            raise ValueError("api_version is like 'v21'")
        return value

    def public(self) -> dict[str, Any]:
        hidden = {k: "**********" for k in ("access_token", "client_secret", "refresh_token") if getattr(self, k)}
        return {**super().public(), "developer_token": "**********", **hidden}


Destination = Annotated[
    WebhookDestination | FilesDestination | PostgresDestination | EmailDestination | CustomerMatchDestination,
    Field(discriminator="kind"),
]
DESTINATION: TypeAdapter[Destination] = TypeAdapter(Destination)
KINDS = ("webhook", "files", "postgres", "email", "customer_match")


def parse_destination(doc: object) -> Destination:
    """A destination document checked (raises pydantic's ValidationError)."""
    return DESTINATION.validate_python(doc)


def dump_destination(destination: DestinationBase, seal: Callable[[str], str]) -> str:
    """The document as stored in the ``destinations`` table: its secrets as ``seal`` makes them."""
    doc = destination.model_dump(mode="json")
    for name, value in destination:
        if isinstance(value, SecretStr):
            doc[name] = seal(value.get_secret_value())
    return json.dumps(doc, sort_keys=True)
