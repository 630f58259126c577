"""HTTP for one REST source: a keep-alive client with TLS, rate limit, retries and clear errors.

Status codes are sorted once, here: 401/403/404 and other client errors fail at once with
a `PermanentSourceError` (retrying cannot fix a bad key or URL); 408, 429, 5xx, connection
errors and timeouts are retried with exponential backoff and jitter, honouring `Retry-After`,
and end in a `TransientSourceError` when the attempts run out. Errors are raised outside
the `except` blocks and every message goes through `redact`, so neither the httpx exception
(whose request holds the URL with its query string) nor a secret reaches a log or an alert.
"""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter

from pull_pipeline.config.models import RestSource, TlsConfig
from pull_pipeline.connectors.rest.auth import build_auth
from pull_pipeline.connectors.rest.pagination import Page
from pull_pipeline.connectors.rest.ratelimit import limiter_for
from pull_pipeline.errors import ConfigError, PermanentSourceError, TransientSourceError
from pull_pipeline.redaction import redact, register_if_sensitive

logger = logging.getLogger("pull_pipeline.rest")


class RedactingFilter(logging.Filter):
    """Masks secrets in httpx's own log lines, which show each URL with its query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


logging.getLogger("httpx").addFilter(RedactingFilter())

DEFAULT_HEADERS = {"Accept": "application/json", "User-Agent": "pull_pipeline"}


class RetryableFailure(Exception):
    """A failure worth another attempt; `retry_after` is the server's requested wait (s)."""

    def __init__(self, description: str, retry_after: float | None = None) -> None:
        super().__init__(redact(description))
        self.retry_after = retry_after


class RestClient:
    """Sends a source's page requests over one reused connection, within its limits."""

    def __init__(self, name: str, source: RestSource) -> None:
        self.name = name
        self.source = source
        for key, value in {**source.headers, **source.params}.items():
            register_if_sensitive(key, str(value))
        url = httpx.URL(source.url)
        if url.scheme not in ("http", "https"):
            raise ConfigError(f"{name}: url must start with http:// or https://")
        self._client = httpx.Client(
            auth=build_auth(source.auth),
            headers={**DEFAULT_HEADERS, **source.headers},
            timeout=source.timeout.total_seconds(),
            proxy=source.proxy,
            verify=ssl_context(name, source.tls),
            follow_redirects=False,
        )
        rate = source.max_requests_per_second
        self._limiter = limiter_for(name, rate) if rate else None

    def send(self, page: Page, attempts: int | None = None) -> httpx.Response:
        """Return the 2xx answer to `page`, retrying transient failures up to `attempts` times."""
        if self.source.method == "GET":
            # Merged into the URL's own query: httpx's `params=` would drop a next link's query.
            url = httpx.URL(page.url).copy_merge_params(page.params)
            request = self._client.build_request("GET", url)
        else:
            request = self._client.build_request("POST", page.url, json=page.params)
        retries = self.source.retries
        attempts = attempts or retries.attempts
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=Backoff(retries.backoff.total_seconds(), retries.max_backoff.total_seconds()),
            retry=retry_if_exception_type(RetryableFailure),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._send_once(request)
        except RetryableFailure as failure:
            last = failure
        raise TransientSourceError(
            f"{self.name}: no usable answer after {attempts} attempt(s); last: {last}. "
            "The source may be down or overloaded; the window can be retried later"
        )

    def close(self) -> None:
        self._client.close()

    def _send_once(self, request: httpx.Request) -> httpx.Response:
        if self._limiter is not None:
            self._limiter.try_acquire(self.name, blocking=True)
        try:
            response = self._client.send(request)
        except httpx.TimeoutException as exc:
            problem: Exception = RetryableFailure(
                f"timed out after {self.source.timeout.total_seconds():g} s "
                f"({type(exc).__name__}) at {where(request.url)}"
            )
        except httpx.RequestError as exc:
            problem = self._transport_problem(request.url, exc)
        else:
            check_status(self.name, response, has_auth=self.source.auth is not None)
            return response
        raise problem

    def _transport_problem(self, url: httpx.URL, exc: httpx.RequestError) -> Exception:
        tls = _ssl_cause(exc)
        if isinstance(tls, ssl.SSLCertVerificationError):
            return PermanentSourceError(
                f"{self.name}: TLS certificate verification failed for {where(url)} "
                f"({tls.verify_message}); if the server uses a private CA, set tls.ca_bundle "
                "to that CA's certificate"
            )
        if tls is not None:
            return PermanentSourceError(
                f"{self.name}: TLS handshake with {where(url)} failed ({tls.reason or tls}); "
                "check tls.client_cert / tls.client_key, and the url's scheme and port"
            )
        return RetryableFailure(
            f"could not reach {url.scheme}://{url.netloc.decode()} ({type(exc).__name__}: {exc})"
        )

    def _log_retry(self, state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            redact(
                f"{self.name}: attempt {state.attempt_number} failed ({failure}); "
                f"retrying in {wait:.2f} s"
            )
        )


class Backoff(wait_base):
    """Exponential backoff with jitter, but never shorter than the server's `Retry-After`."""

    def __init__(self, base: float, cap: float) -> None:
        self._exponential = wait_exponential_jitter(multiplier=base, max=cap, jitter=base)
        self._cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = self._exponential(retry_state)
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(failure, RetryableFailure) and failure.retry_after:
            delay = max(delay, min(failure.retry_after, self._cap))
        return delay


def check_status(name: str, response: httpx.Response, has_auth: bool) -> None:
    """Raise the right error for a non-2xx answer; return quietly for a 2xx one."""
    status = response.status_code
    if status < 300:
        return
    what = f"HTTP {status} {response.reason_phrase}".rstrip()
    if status in (408, 429) or status >= 500:
        raise RetryableFailure(what, retry_after(response))
    if status in (401, 403):
        fix = (
            "check the auth block and the environment variable it uses"
            if has_auth
            else "this source has no auth block; add one"
        )
        raise PermanentSourceError(f"{name}: the source refused the credentials ({what}); {fix}")
    if status == 404:
        raise PermanentSourceError(
            f"{name}: not found ({what}) at {where(response.url)}; check url"
        )
    if status < 400:
        location = response.headers.get("location", "")
        target = where(response.url.join(location)) if location else "nowhere"
        raise PermanentSourceError(
            f"{name}: the source redirects ({what}) to {target}; set url to the final address "
            "(redirects are not followed, so credentials never go to another host)"
        )
    raise PermanentSourceError(
        f"{name}: the source rejected the request ({what}): {excerpt(response.text)!r}; "
        "check params, window_params, window_format and pagination"
    )


def retry_after(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds (it may be a number or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def ssl_context(name: str, tls: TlsConfig) -> ssl.SSLContext:
    """The TLS settings as one context (httpx 0.28 deprecates `verify=<path>` and `cert=`)."""
    try:
        if not tls.verify:
            context = httpx.create_ssl_context(verify=False)
        elif tls.ca_bundle:
            context = ssl.create_default_context(cafile=tls.ca_bundle)
        else:
            context = httpx.create_ssl_context()
        if tls.client_cert:
            context.load_cert_chain(tls.client_cert, tls.client_key)
    except OSError as exc:
        problem = ConfigError(
            f"{name}: cannot load the files in tls (ca_bundle={tls.ca_bundle}, "
            f"client_cert={tls.client_cert}, client_key={tls.client_key}): {exc}"
        )
    else:
        return context
    raise problem


def where(url: httpx.URL) -> str:
    """A URL fit for messages: scheme, host, port and path, never the query string."""
    return f"{url.scheme}://{url.netloc.decode()}{url.path}"


def excerpt(text: str, limit: int = 100) -> str:
    """The start of a body, on one line and redacted, to show what the source said."""
    flat = " ".join(text[: limit * 2].split())
    return redact(flat[:limit] + ("…" if len(flat) > limit else ""))


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
