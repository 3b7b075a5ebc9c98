"""A provider's JSON answer, parsed within bounds: nesting depth, and the memory parsing
one may take, counted on the raw bytes before anything is parsed.

Parsed, JSON costs up to 50 times its bytes (``[{},{},...]``: a dict of 64 bytes for every
3), so ``parse_cost`` bounds it first and ``parse_json`` refuses an answer over the
provider's ``max_parse_mib`` unparsed, a ``BadResponse`` (the job stays at the provider).
``HttpApi`` parses every answer with it; the tests in tests/unit/test_json_memory.py measure
the bound.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from worker.errors import BadResponse

MIB = 1024 * 1024
MAX_JSON_DEPTH = 64
# The memory parsing one answer's JSON may take (``parse_cost``), unless a provider's
# ``max_parse_mib`` says otherwise.
MAX_PARSE_BYTES = 256 * MIB

# What one key or value may cost once parsed, in bytes, beside its characters: a dict with
# its first keys' table is 192, a list with its first slots 96, a short string 64 to 80, plus
# the slot that holds it and the decoder's memo of keys. Each is counted against one
# character of the raw body (``parse_cost``), and such characters outnumber them, so less
# than the largest holds. Measured in RSS on CPython 3.11, 64-bit, the costliest shapes
# known (one-key objects with distinct two-character keys and values) take up to 85% of the
# cost counted with 144; tests/unit/test_json_memory.py measures them against it.
JSON_VALUE_COST = 144
# Lead bytes of UTF-8 characters from U+0100 to U+FFFF, stored at two bytes a character,
# and of characters past U+FFFF, stored at four (with the bytes UTF-8 never holds). Each is
# looked for on its own: a search for one byte runs at memory speed, a character class not.
_WIDE = tuple(bytes([b]) for b in range(0xC4, 0xF0))
_ASTRAL = tuple(bytes([b]) for b in range(0xF0, 0x100))


@dataclass(frozen=True, slots=True)
class ParseCost:
    """What parsing a JSON body could take, counted on its raw bytes before it is parsed."""

    values: int  # at most this many keys and values, each a Python object
    bytes: int  # at most this much memory while it is parsed and after, beside the body


def parse_cost(body: bytes | bytearray) -> ParseCost:
    """An upper bound on the memory ``json.loads(body)`` takes, in a few passes over the
    bytes at C speed.

    Every key and every value but the outermost is introduced by ``{``, ``[``, ``:`` or ``,``
    (counted inside strings too, which only raises the bound), and each costs at most
    ``JSON_VALUE_COST``. Characters cost what CPython stores them at: the text ``json.loads``
    decodes the body into lives while it is parsed, its strings after, each at one, two or
    four bytes a character by its widest (never more characters than bytes). An escape
    (``\\u...``) may widen a string beyond the text, so with escapes strings count four.
    """
    values = 1 + body.count(b"{") + body.count(b"[") + body.count(b":") + body.count(b",")
    width = _char_width(body)
    strings = 4 if b"\\u" in body else width
    return ParseCost(values, JSON_VALUE_COST * values + (width + strings) * len(body))


def _char_width(body: bytes | bytearray) -> int:
    """The bytes a character of the text ``json.loads`` decodes ``body`` into: 1, 2 or 4."""
    if b"\x00" in body:
        return 4  # UTF-16 or UTF-32, which json.loads accepts too
    if body.isascii():
        return 1
    if any(lead in body for lead in _ASTRAL):
        return 4
    return 2 if any(lead in body for lead in _WIDE) else 1


def _depth_ok(value: Any, limit: int) -> bool:
    """Whether ``value`` nests no deeper than ``limit`` (the outermost value is level 1, its
    members level 2). It holds one iterator a level: memory grows with the depth, never with
    the size of the document."""
    levels: list[Iterator[Any]] = []  # the members left to visit, one iterator a level
    item: Any = value
    while True:
        if isinstance(item, dict | list) and item:
            if len(levels) + 1 >= limit:
                return False  # its members would sit deeper than the limit
            levels.append(iter(item.values() if isinstance(item, dict) else item))
        while levels and (item := next(levels[-1], _DONE)) is _DONE:
            levels.pop()
        if not levels:
            return True


_DONE = object()


def parse_json(
    body: bytes | bytearray,
    *,
    what: str,
    max_parse: int = MAX_PARSE_BYTES,
    provider: str | None = None,
) -> Any:
    """``body`` parsed, or BadResponse: not JSON, nested deeper than ``MAX_JSON_DEPTH``, or
    one whose ``parse_cost`` is over ``max_parse`` bytes, refused before it is parsed."""
    cost = parse_cost(body)
    if cost.bytes > max_parse:
        where = f" for provider {provider}" if provider else " for this provider"
        raise BadResponse(
            f"{what} holds up to {cost.values:,} JSON keys and values in {_mib(len(body))}, which "
            f"could take {_mib(cost.bytes)} to parse, more than max_parse_mib allows "
            f"({_mib(max_parse)}): it was not parsed",
            hint=f"If the answer is genuine, raise max_parse_mib{where} to at least "
            f"{math.ceil(cost.bytes / MIB)} (the worker must have that much memory to spare); "
            "until then the job stays at the provider and is read again on a later sweep",
        )
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise BadResponse(f"{what} is not valid JSON") from None
    if not _depth_ok(value, MAX_JSON_DEPTH):
        raise BadResponse(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _mib(size: int) -> str:
    return f"{size / MIB:,.1f} MiB" if size >= MIB else f"{size / 1024:,.1f} KiB"
