"""Send an alert to every channel, at most once per throttle period, never raising."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pull_pipeline.alerts.channels import Channel
from pull_pipeline.alerts.message import Alert
from pull_pipeline.alerts.throttle import Throttle
from pull_pipeline.redaction import redact

log = logging.getLogger("pull_pipeline.alerts")


@dataclass(frozen=True)
class Delivery:
    """What happened to one alert: throttled, or which channels took it and which failed."""

    throttled: bool = False
    delivered: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


class Alerter:
    """Fans an alert out to the channels; a failing channel is logged, never raised.

    With no channel configured the alert is still logged, so it is visible in the sensor's
    logs. The throttle records an alert once any channel took it (or when there are none), so
    a broken channel does not silence the next attempt on a working one.
    """

    def __init__(self, channels: Sequence[Channel], throttle: Throttle) -> None:
        self.channels = list(channels)
        self.throttle = throttle

    def send(self, alert: Alert) -> Delivery:
        key = alert.throttle_key()
        if not self.throttle.allows(key):
            log.info(redact(f"alert throttled (sent recently): {alert.summary}"))
            return Delivery(throttled=True)
        log.warning(redact(f"ALERT {alert.text()}"))
        delivered: list[str] = []
        failed: list[str] = []
        for channel in self.channels:
            try:
                channel.send(alert)
            except Exception as exc:  # noqa: BLE001 - a broken channel must not stop the others
                failed.append(channel.name)
                log.error(redact(f"alert channel {channel.name} failed: {type(exc).__name__}: {exc}"))
            else:
                delivered.append(channel.name)
        if delivered or not self.channels:
            self.throttle.record(key)
        return Delivery(delivered=tuple(delivered), failed=tuple(failed))
