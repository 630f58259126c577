"""The one place secrets are masked.

Every log line, metadata value, alert and error message that could carry a secret passes
through `redact`. Secrets are registered when `${NAME}` placeholders are resolved and when a
config value sits under a key that holds credentials, so they are known before any I/O.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
_SENSITIVE_KEYS = re.compile(
    r"(password|passwd|secret|token|api[_-]?key|access[_-]?key|authorization|dsn|credential)",
    re.IGNORECASE,
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:api[_-]?key|apikey|key|token|access_token|password|secret|sig|signature)=)"
    r"(?P<value>[^&#\s'\"]+)",
    re.IGNORECASE,
)

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` masks it from now on (values < 4 chars are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def is_sensitive_key(key: str) -> bool:
    """True for config keys whose values are credentials (password, token, api key, ...)."""
    return bool(_SENSITIVE_KEYS.search(key))


def register_if_sensitive(key: str, value: str) -> None:
    """Register `value` as a secret when `key` names a credential (see `is_sensitive_key`)."""
    if is_sensitive_key(key):
        register_secret(value)


def redact(text: object) -> str:
    """Mask every registered secret, URL password and credential-like query parameter."""
    result = str(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in result:
            result = result.replace(secret, MASK)
    result = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", result)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", result)
