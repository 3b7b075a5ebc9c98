"""What every view is, how one reaches stdout, and the feeds a long command shows as it runs.

A view is one result type as a reader sees it, in four forms:

    form    for                                              chosen by
    text    a pipe, a log file, a CI job: plain lines        the default
    rich    a person at a terminal: tables                   stdout is a terminal
    json    a script: one document on stdout, nothing else   --json
    jsonl   a script following a long run: a line per item   --jsonl

A view without tables shows its plain lines at a terminal too. Every JSON object a command
prints says what it is in ``message_type``, restic's convention: ``"job"`` and ``"summary"``
for a long run's items and totals (a sweep's, a scrub's), ``"exit_error"`` for an error on
stderr, and for a command that prints one document, the command's name (``"status"``,
``"report"``, ``"config_show"`` for ``config show``; ``"hold"`` for hold and release).

A long command also shows something while it runs: a *feed*, called with each item (a job's
result) as it arrives, from whichever of the run's threads finished it: a line per job, a
JSON line per job, or a live progress bar at a terminal. Views and feeds are apart, so a new
live display (bytes, rate and time left per provider, say) is one more feed for the same
run, and a new command is one more view; neither touches the commands that exist.

Only this module's callers choose a form; nothing here imports rich, which the ``rich`` forms
import when they are shown, so scripts and pipes never load it.
"""

from __future__ import annotations

import abc
import enum
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar, Generic, ParamSpec

import click

P = ParamSpec("P")


class Format(enum.Enum):
    TEXT = "text"
    RICH = "rich"
    JSON = "json"
    JSONL = "jsonl"


def interactive() -> bool:
    """A person is watching: stdout is a terminal, and not a dumb one or a CI log."""
    return sys.stdout.isatty() and _a_person()


def interactive_stderr() -> bool:
    """A person is watching stderr, where a long run's progress goes (rclone's and curl's
    choice): a sweep piped into jq still shows its progress at the terminal."""
    return sys.stderr.isatty() and _a_person()


def _a_person() -> bool:
    return os.environ.get("TERM") != "dumb" and not os.environ.get("CI")


def json_line(record: dict[str, object]) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"  # pragma: no cover


class View(abc.ABC):
    """One result, in each form a reader may ask for. ``lines`` may stream (a check, a
    restored file at a time, as the command gets them); ``fields`` is the whole result."""

    message_type: ClassVar[str]

    @abc.abstractmethod
    def lines(self) -> Iterator[str]:
        """Plain text, a line at a time."""

    def rich(self) -> None:
        """At a terminal: the plain lines, unless the view has tables to show."""
        for line in self.lines():
            click.echo(line)

    @abc.abstractmethod
    def fields(self) -> dict[str, object]:
        """The JSON document's content, ``message_type`` aside."""

    def document(self) -> dict[str, object]:
        return {"message_type": self.message_type, **self.fields()}

    def json(self) -> Iterator[str]:
        """The document as text, in pieces a view may stream (a long report)."""
        yield json_line(self.document()) + "\n"

    def records(self) -> Iterator[dict[str, object]]:
        """JSON Lines: after the feed's lines, the result (its totals, for a long run)."""
        yield self.document()


def show(view: View, fmt: Format, *, err: bool = False) -> None:
    """Print ``view`` in ``fmt``, on stdout (or stderr, for an error)."""
    if fmt is Format.TEXT:
        for line in view.lines():
            click.echo(line, err=err)
    elif fmt is Format.RICH:
        view.rich()
    elif fmt is Format.JSON:
        for text in view.json():
            click.echo(text, nl=False, err=err)
    else:
        for record in view.records():
            click.echo(json_line(record), err=err)


class Feed(Generic[P]):
    """What a run shows as it goes, called once per item; this one shows nothing (``--json``,
    where only the result is printed, or ``-q``). Used as a context manager around the run,
    so a live display starts before the first item and stops after the last."""

    def __enter__(self) -> Feed[P]:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        return None


class Lines(Feed[P]):
    """Each item's lines, printed as it arrives from the run's threads.

    ``past_a_gone_reader``: once the reader has gone (``| head``), print nothing more and let
    the run go on to its end (a sweep finishes the jobs it started); the result printed at
    the end hands the broken pipe to click, which exits quietly. Otherwise the broken pipe
    stops the run where it is (a scrub, which changes nothing)."""

    def __init__(
        self, lines_of: Callable[P, Iterable[str]], *, past_a_gone_reader: bool = False
    ) -> None:
        self._lines_of = lines_of
        self._past_a_gone_reader = past_a_gone_reader
        self._lock = threading.Lock()
        self._gone = False

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        lines = list(self._lines_of(*args, **kwargs))
        with self._lock:
            if self._gone:
                return
            try:
                for line in lines:
                    click.echo(line)
            except BrokenPipeError:
                if not self._past_a_gone_reader:
                    raise
                self._gone = True
