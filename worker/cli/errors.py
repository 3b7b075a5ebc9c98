"""How a command ends, in one place: the exit code it returned, or its error as one or two
lines on stderr (one JSON object when it was asked for JSON) with the exit code
``worker.exits`` documents for it; never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from worker import exits

F = TypeVar("F", bound=Callable[..., Any])

# The keyword arguments by which a command asks for machine-readable output.
_JSON_MODES = ("as_json", "as_jsonl")


class CommandFailed(Exception):
    """What was asked was not done, for a reason that is no error of ours (a job to retry
    that is not failed): the message, and the exit code."""

    def __init__(self, message: str, code: int = exits.INCOMPLETE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int, *, as_json: bool = False) -> None:
    """One error on stderr, and exit with ``code``."""
    from worker.render.errors import ErrorView
    from worker.render.view import Format, show

    show(ErrorView(message, code), Format.JSON if as_json else Format.TEXT, err=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., int | None]) -> Callable[..., None]:
    """Run a command and exit with the code it returns (None: 0); turn our errors into one
    or two lines and their documented exit code, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        from worker.errors import ConfigError, WorkerError

        as_json = any(kwargs.get(mode) for mode in _JSON_MODES) or kwargs.get("fmt") == "json"
        try:
            code = fn(*args, **kwargs)
        except CommandFailed as exc:
            fail(exc.message, exc.code, as_json=as_json)
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
        else:
            if code is not None:
                sys.exit(code)

    return wrapper


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
