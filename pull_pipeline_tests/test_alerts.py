"""Alerts without Dagster: what they say, both channels on real servers, throttle, failures."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from pull_pipeline.alerts import Alert, Alerter, Throttle, channels_from_config, wording
from pull_pipeline.alerts.channels import EmailChannel, WebhookChannel
from pull_pipeline.config.models import AlertsConfig, EmailConfig, WebhookConfig
from pull_pipeline.redaction import register_secret
from pull_pipeline_tests.alert_receivers import SMTP_PASSWORD, wait_until
from pull_pipeline_tests.servers import free_port

SECRET = "tok-3b9f-do-not-leak"


class MemoryStore:
    """A throttle store for tests (production keeps it in the Dagster instance)."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}

    def last_sent(self, key: str) -> float | None:
        return self.sent.get(key)

    def mark_sent(self, key: str, when: float) -> None:
        self.sent[key] = when


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def failure(error: str = "plant_a: no usable answer after 3 attempt(s); last: HTTP 503",
            **overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "kind": "failed", "source": "plant_a", "summary": "plant_a: run of pull_plant_a failed",
        "error": error + "\nTraceback (most recent call last):\n  ...",
        "partitions": ["2024-01-01-02:00"], "link": "http://dagster.example:3000/runs/abc-123"}
    return Alert(**{**fields, **overrides})


def alerter(channels: list[Any], clock: Clock | None = None) -> Alerter:
    return Alerter(channels, Throttle(MemoryStore(), timedelta(minutes=30), clock or Clock()))


def test_message_names_source_partitions_first_line_and_link() -> None:
    alert = failure(partitions=[f"2024-01-01-{h:02d}:00" for h in range(2, 8)])
    text = alert.text()
    assert "plant_a" in text
    assert "2024-01-01-02:00 … 2024-01-01-07:00 (6 windows)" in text
    assert "Error: plant_a: no usable answer after 3 attempt(s); last: HTTP 503" in text
    assert "Traceback" not in text  # the first line only
    assert "http://dagster.example:3000/runs/abc-123" in text
    blocks = alert.slack_payload()["blocks"]
    assert "<http://dagster.example:3000/runs/abc-123|open in Dagster>" in blocks[1]["text"]["text"]


def test_failed_run_says_what_happens_next() -> None:
    def next_step(maintenance: str | None, transient: bool, recovers: bool) -> str:
        return wording.failure_next_step(maintenance, transient, recovers)

    assert next_step("replay", False, True).startswith("replay runs are not retried")
    assert next_step(None, False, True).startswith("permanent, not retried automatically: fix")
    assert next_step(None, True, True).startswith("transient: recovery pulls these windows")
    assert next_step(None, True, False).startswith("transient, and automatic recovery is off")
    alert = wording.run_failed("plant", "pull_plant", "HTTP 401", ["2024-01-01"], "http://ui/r",
                               next_step(None, False, True))
    assert alert.kind == "failed" and alert.summary == "plant: run of pull_plant failed"
    assert dict(alert.lines())["Next"].startswith("permanent")


def test_recovery_alerts_count_the_windows_and_send_held_ones_to_a_person() -> None:
    back = wording.recovered("plant", ["a", "b"], after_outage=True, link="http://ui/a")
    assert back.kind == "recovered" and back.summary == "plant is back; 2 windows backfilled"
    caught_up = wording.recovered("plant", ["a"], after_outage=False, link="http://ui/a")
    assert caught_up.summary == "plant caught up; 1 missing windows backfilled"
    held = wording.held("plant", ["a"], "HTTP 401", "http://ui/r")
    assert held.kind == "attention" and dict(held.lines())["Next"] == wording.RERUN_HINT
    refused = wording.probe_refused("plant", 3, "HTTP 403", "http://ui/a")
    assert refused.summary == "plant: the source refuses the recovery probe; 3 window(s) wait"
    stale = wording.stale("plant", "window 01:00 is 3h late", ["01:00"], "http://ui/a")
    assert stale.kind == "stale" and stale.error == "window 01:00 is 3h late"


def test_webhook_posts_slack_json_without_secrets(webhook_receiver: Any) -> None:
    register_secret(SECRET)
    send = alerter([WebhookChannel(WebhookConfig(url=webhook_receiver.url))])
    delivery = send.send(failure(error=f"GET https://api.example/readings?api_key={SECRET} failed"))
    assert delivery.delivered == ("webhook",)
    (payload,) = webhook_receiver.payloads
    assert set(payload) == {"text", "blocks"}
    assert "plant_a" in payload["text"] and "2024-01-01-02:00" in payload["text"]
    assert SECRET not in repr(payload)
    assert "***" in payload["text"]


def test_email_uses_starttls_and_login_and_holds_no_secret(smtp_receiver: Any) -> None:
    register_secret(SECRET)
    channel = EmailChannel(EmailConfig(**smtp_receiver.config()), smtp_receiver.client_context)
    delivery = alerter([channel]).send(failure(error=f"bearer {SECRET} refused (HTTP 401)"))
    assert delivery.delivered == ("email",)
    assert wait_until(lambda: len(smtp_receiver.messages) == 1)
    message = smtp_receiver.messages[0]
    assert message["Subject"] == "[pull_pipeline] plant_a: run of pull_plant_a failed"
    body = message.get_payload()
    assert "Source: plant_a" in body and "http://dagster.example:3000/runs/abc-123" in body
    assert SECRET not in message.as_string() and SMTP_PASSWORD not in message.as_string()


def test_email_login_is_refused_without_starttls(smtp_receiver: Any) -> None:
    channel = EmailChannel(EmailConfig(**smtp_receiver.config(starttls=False)))
    delivery = alerter([channel]).send(failure())
    assert delivery.failed == ("email",)  # the server demands STARTTLS before AUTH
    assert smtp_receiver.messages == []


def test_repeats_are_throttled_per_source_and_error(webhook_receiver: Any) -> None:
    clock = Clock()
    send = alerter([WebhookChannel(WebhookConfig(url=webhook_receiver.url))], clock)
    assert send.send(failure(partitions=["2024-01-01-02:00"])).delivered
    # the same failure for the next window (numbers differ) within 30 minutes: throttled
    assert send.send(failure(partitions=["2024-01-01-03:00"])).throttled
    assert send.send(failure(error="plant_a: attempt 4 of 4 failed")).delivered  # another error
    assert send.send(failure(source="plant_b")).delivered  # another source
    clock.now += 31 * 60
    assert send.send(failure()).delivered
    assert len(webhook_receiver.payloads) == 4


def test_failing_channel_is_logged_and_others_still_deliver(
    webhook_receiver: Any, smtp_receiver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    webhook_receiver.status = 500
    refused = WebhookChannel(WebhookConfig(url=f"http://127.0.0.1:{free_port()}/hook"))
    email = EmailChannel(EmailConfig(**smtp_receiver.config()), smtp_receiver.client_context)
    send = alerter([WebhookChannel(WebhookConfig(url=webhook_receiver.url)), refused, email])
    with caplog.at_level(logging.ERROR, logger="pull_pipeline.alerts"):
        delivery = send.send(failure())
    assert delivery.failed == ("webhook", "webhook") and delivery.delivered == ("email",)
    assert wait_until(lambda: len(smtp_receiver.messages) == 1)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "alert channel webhook failed" in logged and "500" in logged
    assert "/hooks/T0/B1/xyz" not in logged  # a chat webhook URL is a secret


def test_all_channels_failing_does_not_throttle_the_next_try(webhook_receiver: Any) -> None:
    webhook_receiver.status = 503
    send = alerter([WebhookChannel(WebhookConfig(url=webhook_receiver.url))])
    assert send.send(failure()).failed == ("webhook",)
    webhook_receiver.status = 200
    assert send.send(failure()).delivered == ("webhook",)


def test_channels_resolve_env_late_and_a_missing_variable_breaks_only_that_channel(
    webhook_receiver: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ALERT_HOOK", webhook_receiver.url)
    monkeypatch.delenv("SMTP_PASSWORD_NOT_SET", raising=False)
    config = AlertsConfig.model_validate({
        "webhooks": [{"url": "${ALERT_HOOK}"}],
        "email": {"smtp_host": "127.0.0.1", "smtp_port": free_port(), "sender": "a@example.com",
                  "to": ["b@example.com"], "password": "${SMTP_PASSWORD_NOT_SET}"},
    })
    channels = channels_from_config(config)
    with caplog.at_level(logging.ERROR, logger="pull_pipeline.alerts"):
        delivery = alerter(list(channels)).send(failure())
    assert delivery.delivered == ("webhook",) and delivery.failed == ("alerts.email",)
    assert "SMTP_PASSWORD_NOT_SET" in caplog.text
    assert len(webhook_receiver.payloads) == 1
