"""Where alerts go: webhooks (Slack-compatible JSON) and e-mail over SMTP.

Channels are built from the `alerts:` config when an alert is sent, so `${NAME}` values
are resolved late (a missing variable breaks that channel, not the code location) and
registered as secrets. A channel raises on failure; `Alerter` logs it and carries on.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Protocol

import httpx

from pull_pipeline.alerts.message import Alert
from pull_pipeline.config.env import resolve_env
from pull_pipeline.config.models import AlertsConfig, EmailConfig, WebhookConfig
from pull_pipeline.errors import ConfigError
from pull_pipeline.redaction import register_secret

TIMEOUT_SECONDS = 10.0


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None:
        """Deliver the alert or raise."""


class WebhookChannel:
    """POST `{"text", "blocks"}` to a chat webhook. The URL itself is treated as a secret."""

    def __init__(self, config: WebhookConfig, timeout: float = TIMEOUT_SECONDS) -> None:
        self.config = config
        self.timeout = timeout
        self.name = "webhook"
        register_secret(config.url)  # chat webhook URLs carry their token in the path
        for value in config.headers.values():
            register_secret(value)

    def send(self, alert: Alert) -> None:
        response = httpx.post(
            self.config.url,
            json=alert.slack_payload(),
            headers=self.config.headers,
            timeout=self.timeout,
        )
        response.raise_for_status()


class EmailChannel:
    """Plain-text mail over SMTP, with STARTTLS (default) or implicit TLS, and optional login."""

    def __init__(
        self,
        config: EmailConfig,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self.config = config
        self.tls_context = tls_context or ssl.create_default_context()
        self.timeout = timeout
        self.name = "email"
        register_secret(config.password)

    def send(self, alert: Alert) -> None:
        config = self.config
        message = EmailMessage()
        message["Subject"] = alert.subject()
        message["From"] = config.sender
        message["To"] = ", ".join(config.to)
        message.set_content(alert.text())
        if config.ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                config.smtp_host, config.smtp_port, timeout=self.timeout, context=self.tls_context
            )
        else:
            smtp = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=self.timeout)
        with smtp:
            if config.starttls and not config.ssl:
                smtp.starttls(context=self.tls_context)
            if config.username:
                smtp.login(config.username, config.password or "")
            smtp.send_message(message)


class BrokenChannel:
    """A channel whose config could not be resolved: every send reports why."""

    def __init__(self, name: str, problem: ConfigError) -> None:
        self.name = name
        self.problem = problem

    def send(self, alert: Alert) -> None:
        raise self.problem


def channels_from_config(
    config: AlertsConfig, tls_context: ssl.SSLContext | None = None
) -> Sequence[Channel]:
    """One channel per webhook plus the e-mail channel, with `${NAME}` resolved now."""
    channels: list[Channel] = []
    for index, webhook in enumerate(config.webhooks):
        where = f"alerts.webhooks[{index}]"
        try:
            channels.append(WebhookChannel(resolve_env(webhook, where)))
        except ConfigError as problem:
            channels.append(BrokenChannel(where, problem))
    if config.email is not None:
        try:
            channels.append(EmailChannel(resolve_env(config.email, "alerts.email"), tls_context))
        except ConfigError as problem:
            channels.append(BrokenChannel("alerts.email", problem))
    return channels
