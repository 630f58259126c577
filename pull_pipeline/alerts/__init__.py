"""Alerts for on-call: message building, webhook and e-mail channels, and throttling.

Plain Python with no Dagster import: the sensors in `pull_pipeline.defs` decide *when* to
alert; this package decides *what* is said (`wording`: one function per situation, `message`:
rendering), *where* it goes (`channels`) and *how often* (`throttle`).
"""

from pull_pipeline.alerts.alerter import Alerter, Delivery
from pull_pipeline.alerts.channels import (
    Channel,
    EmailChannel,
    WebhookChannel,
    channels_from_config,
)
from pull_pipeline.alerts.message import Alert, describe_partitions, first_line
from pull_pipeline.alerts.throttle import Throttle, ThrottleStore

__all__ = [
    "Alert",
    "Alerter",
    "Channel",
    "Delivery",
    "EmailChannel",
    "Throttle",
    "ThrottleStore",
    "WebhookChannel",
    "channels_from_config",
    "describe_partitions",
    "first_line",
]
