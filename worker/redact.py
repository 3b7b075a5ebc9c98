"""Secrets out of every line: the redactor shared by the logs, error messages and manifests.

It knows the configured credentials (``register_secrets``) and removes them wherever they
appear, along with anything shaped like one: a URL's query string (signed links), bearer
tokens, AWS and SDK-HMAC signatures, credential headers in a dump, a password in a URL. It
imports nothing heavy, so commands that do not log still scrub what they print.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

REDACTED = "[redacted]"

_SECRET_KEY = re.compile(
    r"(?i)^(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api[_-]?key|apikey|"
    r".*token|.*secret.*|password|passwd|signature|credentials?|x-amz-security-token|"
    r"x-amz-signature|x-sdk-signature|sk|secret_key|access_key)$"
)
# Patterns that mark a credential whatever the key: a URL's query string (signed links),
# bearer and SDK signatures, AWS SigV4 pieces, and header dumps such as botocore's.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(https?://[^\s?#\"'<>]+)\?[^\s\"'<>]*"), r"\1?" + REDACTED),
    (re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + REDACTED),
    (re.compile(r"(?i)\b(signature|credential|access)=[^\s,\"'&]+"), r"\1=" + REDACTED),
    (
        re.compile(
            r"(?i)(['\"]?(?:authorization|x-api-key|x-auth-token|x-amz-security-token|"
            r"cookie|x-sdk-date-signature)['\"]?\s*[:=]\s*b?['\"]?)[^'\"\r\n,}]+"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)(://[^/\s:@]*:)[^@/\s]+@"), r"\1" + REDACTED + "@"),
)
# Every pattern above needs one of these words: a string without any of them (most log
# values) is left alone after one search instead of five substitutions.
_MAYBE_SECRET = re.compile(
    r"(?i)://|bearer|token|basic|signature|credential|access|authorization|x-api-key|cookie"
)


class Redactor:
    """Knows the configured secrets and removes them, and anything shaped like one."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Short strings would scrub ordinary words; a real credential is longer than 3.
        new = {s for s in secrets if s and len(s) >= 4}
        with self._lock:
            merged = set(self._secrets) | new
            # Longest first, so a secret that contains another is removed whole.
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if _MAYBE_SECRET.search(text) is None:
            return text
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def scrub_value(self, value: Any, key: str | None = None) -> Any:
        if key is not None and _SECRET_KEY.match(key) and value not in (None, "", REDACTED):
            return REDACTED
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {k: self.scrub_value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub_value(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.scrub(repr(value))

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        """As the structlog processor: every value of the event, scrubbed by key and value."""
        return {k: self.scrub_value(v, k) for k, v in event_dict.items()}


# One redactor per process: secrets registered by any part of the worker apply to every line.
REDACTOR = Redactor()


def register_secrets(secrets: Iterable[str]) -> None:
    REDACTOR.add(secrets)


def scrubbed(mapping: MutableMapping[str, Any] | Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a provider record fit to store: credentials and signed query strings removed."""
    result = REDACTOR.scrub_value(dict(mapping))
    assert isinstance(result, dict)
    return result
