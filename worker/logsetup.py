"""Logging as the entry point asks for it: the level, the format and the stream.

Each entry point sets its process's logging up here before it works: the `retention` command
(JSON lines, or text for reading at a terminal, on stderr, moved by -v and -q), the Celery
worker (on its ``setup_logging`` signal, on stdout) and the demo (into its log file). No
module sets logging up by being imported.

``configure_logging`` puts one handler on the root logger. Every record, structlog's
(``worker.logging``) and the libraries' (httpx, botocore, celery), passes through it, so
every line has the same format and is scrubbed the same way. The handler builds its
formatter, and with it structlog, when the first record arrives: a command that logs
nothing (``retention status``, ``config show``) never loads structlog, and none of its lines
is lost or written in another format.

``RETENTION_LOG_LEVEL`` sets the level (default INFO; for the command at a terminal,
WARNING), and the command's ``-v``/``-q`` move it a step at a time from there.

This module loads nothing heavy until a record arrives. It sits above the modules that log,
which never import it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

LEVEL_ENV = "RETENTION_LOG_LEVEL"

# The libraries' INFO and DEBUG lines are noise in production; at DEBUG they pass, scrubbed.
THIRD_PARTY = ("httpx", "httpcore", "botocore", "boto3", "s3transfer", "urllib3")

# A payload longer than this, in a library's DEBUG record, is logged as its length only.
MAX_PAYLOAD = 1024


def level_from_env(default: int = logging.INFO) -> int:
    name = os.environ.get(LEVEL_ENV, "").upper()
    level = logging.getLevelName(name) if name else default
    return level if isinstance(level, int) else default


_STEPS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


def cli_level(verbosity: int, *, at_terminal: bool) -> int:
    """The command's level: RETENTION_LOG_LEVEL, else INFO (WARNING when a person reads the
    log at a terminal), then one step down per ``-v`` and up per ``-q``."""
    base = level_from_env(logging.WARNING if at_terminal else logging.INFO)
    index = min(range(len(_STEPS)), key=lambda i: abs(_STEPS[i] - base))
    return _STEPS[max(0, min(len(_STEPS) - 1, index - verbosity))]


class _CurrentStderr:
    """``sys.stderr`` as it is when a line is written, not when logging was set up: rich's
    live progress display swaps it for a proxy that prints above the bar."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


STDERR: Any = _CurrentStderr()


def set_levels(level: int) -> None:
    """The root's level, and the libraries' (WARNING unless ``level`` is DEBUG)."""
    logging.getLogger().setLevel(level)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else logging.WARNING)


class _ElidePayloads(logging.Filter):
    """Replace request and response bodies in a record's arguments by their length.

    At DEBUG, botocore logs every request's parameters, the body included: for a multipart
    upload that is an 8 MiB part per line. Formatting and scrubbing it would cost more than
    the upload, hold several copies of the part in memory, and write the customer's own data
    into the logs. This runs before the record is formatted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = _elide(record.args, depth=0)
        return True


def _elide(value: Any, *, depth: int) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return value if len(value) <= MAX_PAYLOAD else f"<{len(value)} bytes>"
    if isinstance(value, str):
        return value if len(value) <= 64 * MAX_PAYLOAD else f"<{len(value)} characters>"
    if depth >= 4:
        return value
    if isinstance(value, dict):
        return {k: _elide(v, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, tuple | list):
        items = [_elide(v, depth=depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


class _ExpectedInOneLine(logging.Filter):
    """Drop the traceback Celery attaches to a task's expected error (one its ``throws``
    names, such as ``retention.track``'s ``TrackRefused``): Celery logs those at INFO without
    ``exc_info``, but still puts the formatted traceback in the record's ``data``. A refusal
    is the caller's to correct, and its message says everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, dict) and data.get("description") == "raised expected":
            data = {k: v for k, v in data.items() if k != "traceback"}
            record.data = data  # Celery passes extra={"data": ...}
            if isinstance(record.args, dict):
                record.args = data
        return True


class _StructuredHandler(logging.StreamHandler[Any]):
    """Writes every record as a scrubbed structured line; the formatter (structlog's) is
    built when the first record arrives, under the handler's lock."""

    def __init__(self, stream: Any, *, json: bool) -> None:
        super().__init__(stream)
        self.json = json
        self.addFilter(_ElidePayloads())
        self.addFilter(_ExpectedInOneLine())

    def format(self, record: logging.LogRecord) -> str:
        if self.formatter is None:
            # Here, not at the top: a command that logs nothing never loads structlog.
            from worker.logging import formatter

            self.setFormatter(formatter(json=self.json))
        return super().format(record)


def configure_logging(
    *, level: int | None = None, json: bool | None = None, stream: Any = None
) -> None:
    """Send this process's log records to ``stream`` (stdout unless given), as JSON lines
    (unless ``stream`` is a terminal, or ``json`` says otherwise), at ``level``
    (RETENTION_LOG_LEVEL, else INFO). Replaces whatever was set before: safe to call again."""
    level = level_from_env() if level is None else level
    stream = sys.stdout if stream is None else stream
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_StructuredHandler(stream, json=json))
    set_levels(level)
