"""What an alert says, rendered once for chat (Slack-compatible JSON) and once for e-mail.

Every rendered string passes through `redact` here, at the last moment: whatever a caller
put into an `Alert` (an error line, a partition key, a link), no secret leaves the process.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pull_pipeline.redaction import redact

MAX_LINE = 300
MAX_LISTED_PARTITIONS = 5
_ICONS = {"failed": ":red_circle:", "stale": ":hourglass:", "attention": ":warning:",
          "recovered": ":large_green_circle:"}


@dataclass(frozen=True)
class Alert:
    """One thing on-call should know about a source.

    `kind` is one of `failed`, `stale`, `attention` (will not be retried automatically) or
    `recovered`; `error` is the first line of the error, if any; `link` points into the UI.
    """

    kind: str
    source: str
    summary: str
    error: str = ""
    partitions: Sequence[str] = ()
    link: str | None = None
    details: Sequence[tuple[str, str]] = field(default_factory=tuple)

    def throttle_key(self) -> str:
        """Same kind, same source, same error (numbers ignored): the same failure."""
        error = re.sub(r"\d+", "#", first_line(self.error))
        return f"{self.kind}|{self.source}|{error}"

    def subject(self) -> str:
        return redact(f"[pull_pipeline] {self.summary}")

    def lines(self) -> list[tuple[str, str]]:
        """The labelled facts of the alert, in display order, redacted."""
        facts = [("Source", self.source)]
        if self.partitions:
            facts.append(("Partitions", describe_partitions(self.partitions)))
        if self.error:
            facts.append(("Error", first_line(self.error)))
        facts.extend(self.details)
        if self.link:
            facts.append(("Link", self.link))
        return [(label, redact(value)) for label, value in facts]

    def text(self) -> str:
        """Plain text: the e-mail body and the chat fallback."""
        body = "\n".join(f"{label}: {value}" for label, value in self.lines())
        return f"{redact(self.summary)}\n{body}"

    def slack_payload(self) -> dict[str, Any]:
        """Slack-compatible `{"text", "blocks"}` (Teams and most chat webhooks accept it too)."""
        icon = _ICONS.get(self.kind, ":bell:")
        facts = "\n".join(
            f"*{label}:* {_link(value) if label == 'Link' else _escape(value)}"
            for label, value in self.lines()
        )
        return {
            "text": self.text(),
            "blocks": [
                {"type": "section",
                 "text": {"type": "mrkdwn", "text": f"{icon} *{_escape(redact(self.summary))}*"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": facts}},
            ],
        }


def first_line(text: str) -> str:
    """The first non-empty line of an error message, shortened for a chat line."""
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"
    return ""


def describe_partitions(keys: Sequence[str]) -> str:
    """`k1`, `k1, k2`, or `k1 … kN (N windows)` for long lists."""
    keys = list(keys)
    if len(keys) <= MAX_LISTED_PARTITIONS:
        return ", ".join(keys)
    return f"{keys[0]} … {keys[-1]} ({len(keys)} windows)"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str) -> str:
    return f"<{_escape(url)}|open in Dagster>"
