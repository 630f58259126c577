"""HTTP for one REST source: a keep-alive client with TLS, rate limit, retries and clear errors.

Status codes are sorted once, here: 401/403/404 and other client errors fail at once with
a `PermanentSourceError` (retrying cannot fix a bad key or URL); 408, 429, 5xx, connection
errors and timeouts are retried with exponential backoff and jitter, honouring `Retry-After`,
and end in a `TransientSourceError` when the attempts or the window's time run out.

Every answer is bounded: `request_deadline` covers a request's connect, headers and whole
body, `window_deadline` all pages and retries of a window (`deadline.py` makes both hold for
every socket operation), and `max_response_bytes` caps a body after decompression. A
deadline hit is transient (a slow or stuck source may recover); an oversized body is
permanent (the same request gets the same answer). Errors are raised outside
the `except` blocks and every message goes through `redact`, so neither the httpx exception
(whose request holds the URL with its query string) nor a secret reaches a log or an alert.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter

from pull_pipeline.config.models import RestSource, TlsConfig
from pull_pipeline.connectors.rest.auth import build_auth
from pull_pipeline.connectors.rest.deadline import Bound, Deadline, bound_sockets
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
ERROR_EXCERPT_BYTES = 4096  # of a non-2xx body: enough to quote, never the whole of it


class RetryableFailure(Exception):
    """A failure worth another attempt; `retry_after` is the server's requested wait (s)."""

    def __init__(self, description: str, retry_after: float | None = None) -> None:
        super().__init__(redact(description))
        self.retry_after = retry_after


@dataclass(frozen=True)
class Answer:
    """A 2xx answer read whole within the source's bounds.

    `response` gives the status, headers, links and request (it is closed); `content` is
    its body, decompressed.
    """

    response: httpx.Response
    content: bytes


class RestClient:
    """Sends a source's page requests over one reused connection, within its limits."""

    def __init__(self, name: str, config: RestSource) -> None:
        self.name = name
        self.config = config
        for key, value in {**config.headers, **config.params}.items():
            register_if_sensitive(key, str(value))
        url = httpx.URL(config.url)
        if url.scheme not in ("http", "https"):
            raise ConfigError(f"{name}: url must start with http:// or https://")
        self._client = httpx.Client(
            auth=build_auth(config.auth),
            headers={**DEFAULT_HEADERS, **config.headers},
            timeout=config.timeout.total_seconds(),
            proxy=config.proxy,
            verify=ssl_context(name, config.tls),
            follow_redirects=False,
        )
        self._deadline = Deadline()
        bound_sockets(self._client, self._deadline)
        rate = config.max_requests_per_second
        self._limiter = limiter_for(name, rate) if rate else None

    def window(self) -> Bound:
        """The bound of one window's fetch, from now: its pages and retries must fit in it."""
        return Bound.starting_now("window_deadline", self.config.window_deadline.total_seconds())

    def send(self, page: Page, window: Bound, attempts: int | None = None) -> Answer:
        """Return the 2xx answer to `page`, retrying transient failures up to `attempts` times.

        A retry happens only when its wait fits in what is left of `window` and the server
        asks for no longer than `retries.max_retry_after`; otherwise the window fails at once
        as transient, for recovery to pull it again later.
        """
        if self.config.method == "GET":
            # Merged into the URL's own query: httpx's `params=` would drop a next link's query.
            url = httpx.URL(page.url).copy_merge_params(page.params)
            request = self._client.build_request("GET", url)
        else:
            request = self._client.build_request("POST", page.url, json=page.params)
        retries = self.config.retries
        attempts = attempts or retries.attempts
        out_of_attempts = stop_after_attempt(attempts)
        retrying = Retrying(
            stop=lambda state: out_of_attempts(state) or self._no_wait(state, window),
            wait=Backoff(retries.backoff.total_seconds(), retries.max_backoff.total_seconds()),
            retry=retry_if_exception_type(RetryableFailure),
            before_sleep=self._log_retry,
            reraise=True,
        )
        tried = 0
        try:
            for attempt in retrying:
                with attempt:
                    tried = attempt.retry_state.attempt_number
                    return self._send_once(request, window)
        except RetryableFailure as failure:
            last = failure
        raise TransientSourceError(self._given_up(last, tried, attempts, window))

    def close(self) -> None:
        self._client.close()

    def _no_wait(self, state: RetryCallState, window: Bound) -> bool:
        """Whether the next wait is longer than the window has left or the server may ask."""
        failure = state.outcome.exception() if state.outcome else None
        asked = failure.retry_after if isinstance(failure, RetryableFailure) else None
        too_long = asked is not None and asked > self.config.retries.max_retry_after.total_seconds()
        return too_long or state.upcoming_sleep >= window.left()

    def _given_up(
        self, last: RetryableFailure, tried: int, attempts: int, window: Bound
    ) -> str:
        """Why no more attempts are made, and what happens next."""
        asked, limit = last.retry_after, self.config.retries.max_retry_after.total_seconds()
        if asked is not None and asked > limit:
            return (f"{self.name}: the server asked to wait {asked:g} s ({last}, Retry-After), "
                    f"more than retries.max_retry_after={limit:g}s; not waiting: recovery will "
                    "retry the window later")
        if asked and asked >= window.left():
            return (f"{self.name}: the server asked to wait {asked:g} s ({last}, Retry-After), "
                    f"more than the {max(window.left(), 0):.0f} s left of {window.describe()}; "
                    "not waiting: recovery will retry the window later")
        if tried < attempts:
            return (f"{self.name}: no usable answer after {tried} attempt(s) within "
                    f"{window.describe()}; last: {last}. The window can be retried later; if "
                    "the source is just slow, raise window_deadline for this source, or use a "
                    "shorter partition cadence")
        return (f"{self.name}: no usable answer after {tried} attempt(s); last: {last}. "
                "The source may be down or overloaded; the window can be retried later")

    def _send_once(self, request: httpx.Request, window: Bound) -> Answer:
        if self._limiter is not None:
            self._limiter.try_acquire(self.name, blocking=True)
        own = Bound.starting_now("request_deadline", self.config.request_deadline.total_seconds())
        bound = min(own, window, key=lambda b: b.at)
        self._deadline.at = bound.at
        try:
            response = self._client.send(request, stream=True)
            try:
                check_status(self.name, response, has_auth=self.config.auth is not None)
                content = self._body(response)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            problem: Exception = self._timed_out(request.url, bound, exc)
        except httpx.RequestError as exc:
            problem = self._transport_problem(request.url, exc)
        else:
            return Answer(response, content)
        finally:
            self._deadline.at = None
        raise problem

    def _body(self, response: httpx.Response) -> bytes:
        """The decompressed body, refused beyond `max_response_bytes` as the bytes arrive."""
        cap = self.config.max_response_bytes
        codings = [c for c in response.headers.get("content-encoding", "").lower().split(",")
                   if c.strip() not in ("", "identity")]
        if len(codings) > 1:  # each layer multiplies: one read could inflate past any memory
            raise PermanentSourceError(
                f"{self.name}: the answer at {where(response.url)} is compressed "
                f"{len(codings)} times over (Content-Encoding: "
                f"{response.headers['content-encoding']}); its size cannot be bounded while "
                "it is decompressed, so it is refused; ask the source to compress once"
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise PermanentSourceError(
                    f"{self.name}: the answer exceeded max_response_bytes={cap} after "
                    f"decompression at {where(response.url)}; raise max_response_bytes for this "
                    "source or use a smaller page size"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _timed_out(
        self, url: httpx.URL, bound: Bound, exc: httpx.TimeoutException
    ) -> RetryableFailure:
        """What a timeout means: one read too slow, or a deadline that ran out."""
        if bound.left() > 0:
            return RetryableFailure(
                f"timed out after {self.config.timeout.total_seconds():g} s "
                f"({type(exc).__name__}) at {where(url)}"
            )
        if bound.key == "window_deadline":  # `_given_up` says what to do
            return RetryableFailure(f"{bound.describe()} ran out at {where(url)}")
        return RetryableFailure(
            f"no complete answer within {bound.describe()} at {where(url)} (raise "
            "request_deadline for this source, or use a smaller page size)"
        )

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
    """Exponential backoff with jitter, but never shorter than the server's `Retry-After`.

    `max_backoff` caps only the backoff: a longer `Retry-After` is waited in full, or, when
    it is too long (`RestClient._no_wait`), not at all.
    """

    def __init__(self, base: float, cap: float) -> None:
        self._exponential = wait_exponential_jitter(multiplier=base, max=cap, jitter=base)

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = self._exponential(retry_state)
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(failure, RetryableFailure) and failure.retry_after:
            delay = max(delay, failure.retry_after)
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
        f"{name}: the source rejected the request ({what}): {excerpt(head(response))!r}; "
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


def head(response: httpx.Response) -> str:
    """The start of a streamed body as text (an error page may be huge, or never end)."""
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= ERROR_EXCERPT_BYTES:
            break
    return data[:ERROR_EXCERPT_BYTES].decode("utf-8", "replace")


def excerpt(text: str, limit: int = 100) -> str:
    """The start of a body, on one line and redacted, to show what the source said."""
    # Redacted whole first: cutting or folding white space first could split a secret (or
    # change its spaces) so that the mask no longer matches and its start shows.
    flat = " ".join(redact(text[:65536]).split())
    return flat[:limit] + ("…" if len(flat) > limit else "")


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
