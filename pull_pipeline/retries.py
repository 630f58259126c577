"""Retries of transient failures, per a source's `retries:` block, for every kind and the sink.

REST retries each request itself (it honours `Retry-After`, see `connectors/rest/client`);
every other kind is retried a whole window at a time here, and so is a window's load when the
sink is briefly unreachable. Only errors marked `transient` are retried: a refused
credential or a bad query fails at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from pull_pipeline.config.models import RetryConfig
from pull_pipeline.redaction import redact

log = logging.getLogger("pull_pipeline")
T = TypeVar("T")


def is_transient(error: BaseException) -> bool:
    """Whether an error says that the same call may succeed later."""
    return bool(getattr(error, "transient", False))


def with_retries(
    what: str, retries: RetryConfig, call: Callable[[], T],
    progress: Callable[[str], None] = log.warning, attempts: int | None = None,
) -> T:
    """`call()`, again after a backoff with jitter while it raises a transient error."""
    backoff = retries.backoff.total_seconds()

    def tell(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        progress(redact(f"{what}: attempt {state.attempt_number} failed ({failure}); "
                        f"retrying in {wait:.2f} s"))

    retrying = Retrying(
        stop=stop_after_attempt(attempts or retries.attempts),
        wait=wait_exponential_jitter(multiplier=backoff, max=retries.max_backoff.total_seconds(),
                                     jitter=backoff),
        retry=retry_if_exception(is_transient),
        before_sleep=tell,
        reraise=True,
    )
    return retrying(call)
