"""The one place secrets are masked.

Every log line, metadata value, alert and error message that could carry a secret passes
through `redact`. Secrets are registered when `${NAME}` placeholders are resolved and when a
config value sits under a key that holds credentials, so they are known before any I/O.

A secret also leaks in the forms other code gives it: percent-encoded in a URL a server
echoes, JSON- or Python-escaped in an error body or a repr, base64 in a header. Registering
a secret rebuilds one pattern that matches all of these, so `redact` is a single regex pass.
"""

from __future__ import annotations

import base64
import json
import re
import string
import threading

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words and numbers
_SENSITIVE_KEYS = re.compile(
    r"(password|passwd|secret|token|api[_-]?key|access[_-]?key|authorization|dsn|credential)",
    re.IGNORECASE,
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_PLACEHOLDER_ONLY = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:api[_-]?key|apikey|key|token|access_token|password|secret|sig|signature)=)"
    r"(?P<value>[^&#\s'\"]+)",
    re.IGNORECASE,
)
# No encoder escapes these; matching them literally keeps the pattern fast.
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "_.~-")
_HEX_DIGITS = re.compile(r"(?<=%)[0-9A-Fa-f]{2}|(?<=\\[xuU])[0-9A-Fa-f]+")

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None  # every form of every secret, longest secret first


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` masks it, in any encoding, from now on.

    Values shorter than `MIN_SECRET_LENGTH` are ignored.
    """
    global _pattern
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(_forms(secret) for secret in ordered))


def is_sensitive_key(key: str) -> bool:
    """True for config keys whose values are credentials (password, token, api key, ...)."""
    return bool(_SENSITIVE_KEYS.search(key))


def register_if_sensitive(key: str, value: str) -> None:
    """Register `value` as a secret when `key` names a credential (see `is_sensitive_key`)."""
    if is_sensitive_key(key):
        register_secret(value)


def shown_settings(settings: object) -> object:
    """`settings` (mappings, lists, values) fit to show: a value under a credential key is
    masked unless it is only a `${NAME}` placeholder, and registered as a secret."""
    if isinstance(settings, dict):
        return {key: _shown_value(str(key), value) for key, value in settings.items()}
    if isinstance(settings, list):
        return [shown_settings(value) for value in settings]
    return settings


def _shown_value(key: str, value: object) -> object:
    if not (is_sensitive_key(key) and isinstance(value, str)):
        return shown_settings(value)
    if _PLACEHOLDER_ONLY.fullmatch(value):
        return value
    register_secret(value)
    return MASK


def redact(text: object) -> str:
    """Mask every registered secret, URL password and credential-like query parameter."""
    result = str(text)
    pattern = _pattern
    if pattern is not None:
        result = pattern.sub(MASK, result)
    result = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", result)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", result)


def _forms(secret: str) -> str:
    """A regex for `secret` as written, escaped or encoded character by character, or base64.

    Character by character covers percent-encoding with any safe set (`quote`, `quote_plus`,
    httpx's query encoding), JSON with or without `ensure_ascii` (also escaped twice, as in
    a JSON request body quoted by a JSON error), and Python's repr/ascii, also when an
    encoder mixes them; the base64 forms are whole-value encodings.
    """
    data = _utf8(secret)
    encoded = (base64.b64encode(data), base64.urlsafe_b64encode(data))
    whole = sorted({text.decode().rstrip("=") for text in encoded}, key=len, reverse=True)
    return "|".join(["".join(_char_forms(char) for char in secret), *map(re.escape, whole)])


def _char_forms(char: str) -> str:
    """One character, raw or in any escape an encoder may write for it (hex in either case)."""
    if char in _UNRESERVED:
        return re.escape(char)
    data = _utf8(char)
    escapes = {
        "".join(f"%{byte:02X}" for byte in data),
        json.dumps(char)[1:-1],
        ascii(char)[1:-1],
        "".join(f"\\x{byte:02x}" for byte in data),  # a bytes repr of UTF-8 text
        {" ": "+", "/": "\\/", "'": "\\'"}.get(char, char),
    } - {char}
    escapes |= {json.dumps(escape)[1:-1] for escape in escapes}  # JSON text quoted in JSON
    patterns = [_escape_pattern(escape) for escape in sorted(escapes, key=len, reverse=True)]
    return "(?:" + "|".join([*patterns, re.escape(char)]) + ")"


def _utf8(text: str) -> bytes:
    """The bytes an encoder sends: os.environ keeps undecodable bytes as surrogates."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate made in code, not read from the OS
        return text.encode("utf-8", "surrogatepass")


def _escape_pattern(escape: str) -> str:
    """`escape` as a regex in which the hex digits of `%XX`, `\\xXX`, `\\uXXXX` match either case."""
    parts, last = [], 0
    for match in _HEX_DIGITS.finditer(escape):
        parts.append(re.escape(escape[last:match.start()]))
        parts.append("".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in match[0]))
        last = match.end()
    parts.append(re.escape(escape[last:]))
    return "".join(parts)
