"""Secrets out of every line: the redactor shared by the logs, error messages and manifests.

It knows the configured credentials (``register_secrets``) and removes them wherever they
appear, along with anything shaped like one: a URL's query string (signed links), bearer
tokens, AWS and SDK-HMAC signatures, credential headers in a dump, a password in a URL or in
its query string (``?password=``, ``?sslpassword=``, ``?token=``...), libpq's
``password=...``. It imports nothing heavy, so commands that do not log still scrub what they
print.

``mask_url`` is how a URL of the configuration is shown (``config show``, ``check``): whole,
but for every credential a driver would read from it. ``url_credentials`` gives those
credentials, as written and as decoded, so that the redactor also knows them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote, unquote_plus

REDACTED = "[redacted]"
# What stands for a credential in a URL that is shown.
URL_MASK = "********"

# Query parameters that carry a credential, by name: the ones psycopg/libpq read (password,
# sslpassword), redis-py (password, ssl_password), and the usual names of tokens and keys.
# A user name, a key's file (ssl_keyfile, sslkey) or a TLS setting is not one.
_CREDENTIAL_PARAM = re.compile(
    r"(?i)pass|pwd|secret|token|credential|signature|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"^(key|sig|authorization)$"
)

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
    # A credential in the query string of a URL of any scheme (redis://, postgresql://...).
    (
        re.compile(
            r"(?i)([?&](?:[\w.%-]*(?:pass|pwd|secret|token|credential|signature|api[_-]?key|"
            r"access[_-]?key|private[_-]?key)[\w.%-]*|key|sig|authorization)=)"
            r"[^&#\s\"'<>\\]+"
        ),
        r"\1" + REDACTED,
    ),
    # libpq's keyword form, which a driver's message may echo (password=x, sslpassword='x y'),
    # and a console log line's db_password=x.
    # A value ends at a quote or a backslash too, so that a JSON line stays one.
    (
        re.compile(
            r"(?i)(?<![\w.-])([\w.-]*(?:password|passwd|pwd)\s*=\s*)"
            r"('[^'\\\"]*'|[^\s'\"&,;<>\\]+)"
        ),
        r"\1" + REDACTED,
    ),
)
# Every pattern above needs one of these words: a string without any of them (most log
# values) is left alone after one search instead of seven substitutions.
_MAYBE_SECRET = re.compile(
    r"(?i)://|bearer|token|basic|signature|credential|access|authorization|x-api-key|cookie|"
    r"pass|pwd|secret|[?&](?:key|sig)="
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


# -- credentials in URLs ----------------------------------------------------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Where the userinfo ends, as each parser reads it: urlsplit (redis-py, kombu) takes the last
# '@' of the netloc, which ends at the first '/', '?' or '#'; SQLAlchemy's make_url takes a
# user without ':' or '/', then a password up to the first '@', a '/' or '?' in it included.
_NETLOC = re.compile(r"[^/?#]*")
_SQLALCHEMY_USERINFO = re.compile(r"[^:/]*:[^@]*@")


def _userinfo_ends(rest: str) -> set[int]:
    """The index of the '@' that ends the userinfo of ``rest`` (the URL after ``scheme://``)
    for each parser that finds one."""
    ends = set()
    netloc = _NETLOC.match(rest)
    if netloc is not None and "@" in netloc.group():
        ends.add(netloc.group().rfind("@"))
    alchemy = _SQLALCHEMY_USERINFO.match(rest)
    if alchemy is not None:
        ends.add(alchemy.end() - 1)
    return ends


def _is_credential(param: str) -> bool:
    name, _, value = param.partition("=")
    return bool(value) and _CREDENTIAL_PARAM.search(unquote_plus(name)) is not None


def mask_url(url: str, mask: str = URL_MASK) -> str:
    """The URL as it is, but for every credential a driver would read from it: the userinfo's
    password, and the value of each query parameter whose name is a credential's (password,
    sslpassword, token, api_key...), each replaced by ``mask``. A value is masked up to the
    next '&', a '#' in it included, as SQLAlchemy reads it."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return url
    head, rest = url[: scheme.end()], url[scheme.end() :]
    ends = _userinfo_ends(rest)
    if ends:
        # The userinfo that ends furthest holds whatever password either parser reads.
        end = max(ends)
        user, _, password = rest[:end].partition(":")
        head += f"{user}:{mask}@" if password else rest[: end + 1]
        rest = rest[end + 1 :]
    before, question, query = rest.partition("?")
    if not question:
        return head + rest
    shown = (f"{p.partition('=')[0]}={mask}" if _is_credential(p) else p for p in query.split("&"))
    return f"{head}{before}?{'&'.join(shown)}"


def url_credentials(url: str) -> set[str]:
    """Every credential ``mask_url`` hides, as written and as a driver decodes it (percent
    escapes, and '+' as a space in a query), for the redactor to remove from any line."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return set()
    rest = url[scheme.end() :]
    ends = _userinfo_ends(rest)
    found = {rest[:end].partition(":")[2] for end in ends}
    query = rest[max(ends) + 1 :] if ends else rest
    for param in query.partition("?")[2].split("&"):
        if _is_credential(param):
            value = param.partition("=")[2]
            found |= {value, value.partition("#")[0]}
    decoded = {form(value) for value in found for form in (unquote, unquote_plus)}
    return {value for value in found | decoded if value}
