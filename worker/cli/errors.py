"""How a command ends: our errors as one or two lines on stderr (or one JSON object when the
command was asked for JSON) and the exit code ``worker.exits`` documents, never a traceback."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from worker import exits

F = TypeVar("F", bound=Callable[..., Any])

# The keyword arguments by which a command asks for machine-readable output.
_JSON_MODES = ("as_json", "as_jsonl")


def fail(message: str, code: int, *, as_json: bool = False) -> None:
    """One error on stderr: a line or two for a person, or one JSON object (restic's
    ``exit_error``) when the command was asked for JSON."""
    if as_json:
        error = {"message_type": "exit_error", "code": code, "message": message}
        click.echo(json.dumps(error, sort_keys=True), err=True)
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn our errors into one or two lines and the documented exit code, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from worker.errors import ConfigError, WorkerError

        as_json = any(kwargs.get(mode) for mode in _JSON_MODES) or kwargs.get("fmt") == "json"
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc), exits.USAGE, as_json=as_json)
        except WorkerError as exc:
            code = exits.UNREACHABLE if exits.is_unreachable(exc) else exits.INCOMPLETE
            fail(str(exc), code, as_json=as_json)
        except KeyboardInterrupt:
            fail(
                "interrupted; jobs in flight resume on the next sweep",
                exits.INTERRUPTED,
                as_json=as_json,
            )
        except click.ClickException:
            raise  # click prints usage errors itself and exits with 2
        except BrokenPipeError as exc:
            if _stdout_gone():
                # The reader went away (`retention status | head -1`): click silences
                # stdout and exits with 1, as git does, instead of an "unexpected" error.
                raise
            _unexpected(exc, as_json=as_json)
        except Exception as exc:
            _unexpected(exc, as_json=as_json)
        return None

    return wrapper  # type: ignore[return-value]


def _unexpected(exc: Exception, *, as_json: bool) -> None:
    from worker.logging import get_logger
    from worker.redact import REDACTOR

    get_logger("worker.cli").debug("command_crashed", exc_info=True)
    fail(
        REDACTOR.scrub(f"unexpected {type(exc).__name__}: {exc}")
        + "\n(run again with -v, or RETENTION_LOG_LEVEL=DEBUG, for details)",
        exits.INCOMPLETE,
        as_json=as_json,
    )


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone: its write end polls POLLERR. A broken
    pipe anywhere else is an error to report, not a reader that stopped reading."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (io.UnsupportedOperation)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _fd, events in poller.poll(0))
