"""The options and output helpers the commands share."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def json_option(fn: F) -> F:
    option = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document on stdout, and nothing else there.",
    )
    return option(fn)


def jsonl_option(fn: F) -> F:
    option = click.option(
        "--jsonl",
        "as_jsonl",
        is_flag=True,
        help="Print a JSON line per job as it finishes, then one with the totals.",
    )
    return option(fn)


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, sort_keys=True, default=str))


def one_format(as_json: bool, as_jsonl: bool) -> None:
    if as_json and as_jsonl:
        raise click.UsageError("give --json or --jsonl, not both")


def interactive() -> bool:
    """A person is watching: stdout is a terminal, and not a dumb one or a CI log. Checked
    here, so scripts and pipes never import rich."""
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and not os.environ.get("CI")
