"""Structured logs: JSON lines (readable on a terminal), with secrets scrubbed.

Every module logs through ``get_logger``. Where the lines go, at which level and in which
format is the entry point's choice (``worker.logsetup``): the Celery worker, a service, logs
to stdout; the `retention` command logs to stderr, so that its stdout holds only results
(one JSON document with ``--json``), as rclone and restic do.

structlog's loggers hand their records to the standard library's, so that every record, ours
and the libraries' (httpx, botocore, celery), passes through the one handler the entry point
installed, whose ``formatter`` runs the same chain. That hand-over is the same whatever the
entry point chose, so it is made once, when this module is first imported; the choices are
not. Redaction happens twice, on purpose:

1. by key, on the event dict, as the last processor before rendering (``Authorization``,
   ``api_key``, ``*_token``... become ``[redacted]``);
2. by value, on the rendered line: every credential from the configuration, bearer tokens,
   AWS signatures and the query string of every URL are replaced. This catches secrets that
   reach a line some other way: an exception message, a repr, botocore's DEBUG dump of a
   signed request.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from worker.redact import REDACTOR


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

# What every record gets before it is rendered, structlog's and the libraries' alike.
_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
]

structlog.configure(
    processors=[
        structlog.stdlib.filter_by_level,
        *_SHARED,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=False,
)


class _ScrubbingRenderer:
    """Render, then scrub the finished line: the last defence, after every processor."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        rendered = self._renderer(logger, method, event_dict)
        return REDACTOR.scrub(rendered if isinstance(rendered, str) else str(rendered))


def formatter(*, json: bool) -> logging.Formatter:
    """The formatter of the entry point's handler: one JSON object a line, or text for
    reading at a terminal, scrubbed by key and then by value."""
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=repr)
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_plain_exception)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            REDACTOR,
            _ScrubbingRenderer(renderer),
        ],
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
