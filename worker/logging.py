"""Structured logs: JSON lines on stdout (readable on a terminal), with secrets scrubbed.

Every record, ours and the libraries' (httpx, botocore, celery), passes through one stdlib
handler whose formatter runs the same chain. Redaction happens twice, on purpose:

1. by key, on the event dict, as the last processor before rendering (``Authorization``,
   ``api_key``, ``*_token``... become ``[redacted]``);
2. by value, on the rendered line: every credential from the configuration, bearer tokens,
   AWS signatures and the query string of every URL are replaced. This catches secrets that
   reach a line some other way: an exception message, a repr, botocore's DEBUG dump of a
   signed request.

``RETENTION_LOG_LEVEL`` sets the level (default INFO).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
LEVEL_ENV = "RETENTION_LOG_LEVEL"

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

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        return {k: self.scrub_value(v, k) for k, v in event_dict.items()}


# One redactor per process: secrets registered by any part of the worker apply to every line.
REDACTOR = Redactor()


def register_secrets(secrets: Iterable[str]) -> None:
    REDACTOR.add(secrets)


class _ScrubbingRenderer:
    """Render, then scrub the finished line: the last defence, after every processor."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        rendered = self._renderer(logger, method, event_dict)
        return REDACTOR.scrub(rendered if isinstance(rendered, str) else str(rendered))


_THIRD_PARTY = ("httpx", "httpcore", "botocore", "boto3", "s3transfer", "urllib3")


def _level_from_env() -> int:
    name = os.environ.get(LEVEL_ENV, "INFO").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


def configure_logging(
    *, level: int | None = None, json: bool | None = None, stream: Any = None
) -> None:
    """Set up structlog and stdlib logging for this process. Safe to call more than once."""
    level = _level_from_env() if level is None else level
    stream = sys.stdout if stream is None else stream
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=repr)
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_plain_exception)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            REDACTOR,
            _ScrubbingRenderer(renderer),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The libraries' INFO and DEBUG lines are noise in production; at DEBUG they pass, scrubbed.
    for name in _THIRD_PARTY:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _plain_exception(sio: Any, exc_info: Any) -> None:
    import traceback

    traceback.print_exception(*exc_info, file=sio)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


def bind(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**values)


def clear() -> None:
    structlog.contextvars.clear_contextvars()


def scrubbed(mapping: MutableMapping[str, Any] | Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a provider record fit to store: credentials and signed query strings removed."""
    result = REDACTOR.scrub_value(dict(mapping))
    assert isinstance(result, dict)
    return result
