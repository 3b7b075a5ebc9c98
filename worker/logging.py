"""Structured logs: JSON lines (readable on a terminal), with secrets scrubbed.

Where they go: the Celery worker, a service, logs to stdout; the `retention` command logs to
stderr, so that its stdout holds only results (one JSON document with ``--json``), as
rclone and restic do.

Every record, ours and the libraries' (httpx, botocore, celery), passes through one stdlib
handler whose formatter runs the same chain. Redaction happens twice, on purpose:

1. by key, on the event dict, as the last processor before rendering (``Authorization``,
   ``api_key``, ``*_token``... become ``[redacted]``);
2. by value, on the rendered line: every credential from the configuration, bearer tokens,
   AWS signatures and the query string of every URL are replaced. This catches secrets that
   reach a line some other way: an exception message, a repr, botocore's DEBUG dump of a
   signed request.

``RETENTION_LOG_LEVEL`` sets the level (default INFO; for the command at a terminal,
WARNING), and the command's ``-v``/``-q`` move it a step at a time from there.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from worker import logsetup
from worker.logsetup import LEVEL_ENV, STDERR, cli_level, set_levels
from worker.redact import REDACTED, REDACTOR, Redactor, register_secrets, scrubbed


def _import_structlog() -> None:
    """Import structlog with rich hidden from it.

    structlog imports rich, when it is installed, for console tracebacks this worker never
    uses (it renders its own, ``_plain_exception``): about 5 MiB of resident memory and
    10 ms in every process, a sweep or a Celery child included. rich stays importable
    afterwards, for the CLI's tables.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # import rich -> ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog()

import structlog  # noqa: E402
from structlog.typing import EventDict, Processor, WrappedLogger  # noqa: E402

__all__ = [
    "LEVEL_ENV",
    "REDACTED",
    "REDACTOR",
    "STDERR",
    "Redactor",
    "apply_pending",
    "bind",
    "clear",
    "cli_level",
    "configure_logging",
    "get_logger",
    "register_secrets",
    "scrubbed",
]


class _ScrubbingRenderer:
    """Render, then scrub the finished line: the last defence, after every processor."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        rendered = self._renderer(logger, method, event_dict)
        return REDACTOR.scrub(rendered if isinstance(rendered, str) else str(rendered))


# A payload longer than this, in a library's DEBUG record, is logged as its length only.
MAX_PAYLOAD = 1024


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


def configure_logging(
    *, level: int | None = None, json: bool | None = None, stream: Any = None
) -> None:
    """Set up structlog and stdlib logging for this process. Safe to call more than once."""
    level = logsetup.level_from_env() if level is None else level
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
    handler.addFilter(_ElidePayloads())
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_levels(level)

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


def apply_pending() -> None:
    """Apply the logging the command asked for before structlog was imported (logsetup)."""
    asked = dict(logsetup.PENDING)
    logsetup.PENDING.clear()
    if asked:
        configure_logging(**asked)


# A command that asked for its logging before this module was imported gets it now, before
# any logger of this module can write in structlog's default format.
apply_pending()
