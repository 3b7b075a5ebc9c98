"""The command's logging, asked for before structlog is imported.

A command that logs nothing (``retention status``, ``config show``) should not pay for
structlog. The command line asks here for the logging it wants (``defer``); structlog is set
up only when the first record arrives, or when a module that logs through structlog imports
``worker.logging``, which applies what was asked before any of its loggers can write. Until
then the root logger holds the level and a handler that does the set-up on first use, so
no record is lost and none is written in another format.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

LEVEL_ENV = "RETENTION_LOG_LEVEL"

# The libraries' INFO and DEBUG lines are noise in production; at DEBUG they pass, scrubbed.
THIRD_PARTY = ("httpx", "httpcore", "botocore", "boto3", "s3transfer", "urllib3")

# What the command asked for (configure_logging's arguments), not yet applied; empty when
# nothing is pending.
PENDING: dict[str, Any] = {}


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


class _SetUpOnFirstRecord(logging.Handler):
    """Sets structured logging up when the first record arrives, then hands it on."""

    def emit(self, record: logging.LogRecord) -> None:
        import worker.logging  # noqa: F401  # applies ``PENDING``: the root's handlers change

        for handler in logging.getLogger().handlers:
            if handler is not self and record.levelno >= handler.level:
                handler.handle(record)


def defer(*, level: int, json: bool, stream: Any) -> None:
    """Ask for ``configure_logging(level=, json=, stream=)``; applied at once if structlog is
    already imported, else on the first record or when ``worker.logging`` is imported."""
    PENDING.clear()
    PENDING.update(level=level, json=json, stream=stream)
    if "worker.logging" in sys.modules:
        sys.modules["worker.logging"].apply_pending()
        return
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_SetUpOnFirstRecord())
    set_levels(level)
