"""The output options the commands share, and the form of output they choose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from worker.render.view import Format, interactive

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


def output_format(*, as_json: bool = False, as_jsonl: bool = False) -> Format:
    """--json, --jsonl, or else tables for a person at a terminal and plain lines for a pipe.
    Whether a person watches is asked only here, so scripts and pipes never import rich."""
    if as_json and as_jsonl:
        raise click.UsageError("give --json or --jsonl, not both")
    if as_json:
        return Format.JSON
    if as_jsonl:
        return Format.JSONL
    return Format.RICH if interactive() else Format.TEXT
