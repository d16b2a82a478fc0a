"""Email over SMTP: one message per delivery, its subject and body rendered from the delivery's payload with a
sandboxed Jinja2 environment (no attribute tricks, no code from the payload is ever run; a template is only
ever the destination's own configuration).

A template sees the whole payload: ``traits`` (``{{ traits.first_name }}``), ``message`` (a journey's message,
e.g. ``{% for item in message.items %}``), ``event``, ``audience``, ``change``, ``profile_id``. The recipient
is the ``to_trait`` field of a journey's message, else that trait of the profile.

Each email carries a ``Message-ID`` derived from the delivery's idempotency key (and the key itself in
``X-OpenCDP-Idempotency-Key``), so a resend after a crash is recognisable as the same message.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate

from jinja2 import ChainableUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from opencdp.activation.network import resolve
from opencdp.activation.plugins.base import Delivery, DeliveryFailed, DeliveryRefused
from opencdp.model.destinations import EmailDestination

TEMPORARY = range(400, 500)


class Email:
    def __init__(self, config: EmailDestination) -> None:
        self.config = config
        # a missing trait or message field renders empty (and chains: ``message.cart.items``), never fails
        env = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True, undefined=ChainableUndefined)
        try:
            self.subject = env.from_string(config.subject)
            self.body = env.from_string(config.body)
        except TemplateError as exc:
            raise DeliveryRefused(f"email {config.name}: the template does not parse: {exc}") from None

    def _recipient(self, payload: dict[str, object]) -> str:
        message = payload.get("message")
        traits = payload.get("traits")
        for source in (message, traits):
            if isinstance(source, dict) and isinstance(source.get(self.config.to_trait), str):
                return str(source[self.config.to_trait])
        raise DeliveryRefused(f"email {self.config.name}: the delivery has no {self.config.to_trait!r} to send to")

    def prepare(self, batch: Sequence[Delivery]) -> list[EmailMessage]:
        out = []
        for d in batch:
            msg = EmailMessage()
            try:
                subject = self.subject.render(d.payload).strip().replace("\n", " ")
                body = self.body.render(d.payload)
            except TemplateError as exc:
                raise DeliveryRefused(f"email {self.config.name}: rendering failed: {exc}") from None
            msg["From"] = self.config.from_address
            msg["To"] = self._recipient(d.payload)
            msg["Subject"] = subject
            msg["Date"] = formatdate(usegmt=True)
            msg["Message-ID"] = f"<{hashlib.sha256(d.key.encode()).hexdigest()[:40]}@opencdp>"
            msg["X-OpenCDP-Idempotency-Key"] = d.key
            msg.set_content(body)
            out.append(msg)
        return out

    def send(self, prepared: object) -> None:
        assert isinstance(prepared, list)
        what = f"email {self.config.name}"
        address = resolve(self.config.smtp_host, self.config.smtp_port, allow_private=self.config.allow_private)
        try:
            with smtplib.SMTP(timeout=self.config.timeout_seconds) as smtp:
                smtp.connect(str(address), self.config.smtp_port)
                if self.config.starttls:
                    # connected to the checked address; TLS must still check the certificate against the host name
                    setattr(smtp, "_host", self.config.smtp_host)  # noqa: B010
                    smtp.starttls(context=ssl.create_default_context())
                if self.config.username and self.config.password:
                    smtp.login(self.config.username, self.config.password.get_secret_value())
                for msg in prepared:
                    smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(code in TEMPORARY for code in codes):
                raise DeliveryFailed(f"{what}: the server deferred the recipient ({codes[0]})") from None
            raise DeliveryRefused(f"{what}: the server refused the recipient ({codes[0]})") from None
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code in TEMPORARY or exc.smtp_code < 0:
                raise DeliveryFailed(f"{what}: the server answered {exc.smtp_code}") from None
            raise DeliveryRefused(f"{what}: the server answered {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"{what}: {type(exc).__name__}: {exc}") from None

    def check(self) -> None:
        resolve(self.config.smtp_host, self.config.smtp_port, allow_private=self.config.allow_private)

    def close(self) -> None:
        pass
