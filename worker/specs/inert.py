"""The language of a provider's ``INERT`` table: path patterns over its job record, each with
the reason the provider's delete destroys nothing there.

``output.*[*].format`` is the ``format`` of every item of every ``output`` section; ``*`` is
any key, ``[*]`` any index. A spec declares its table with ``inert()``, which checks it; the
whole-record walk (``worker/providers/outputs.py``) passes over what the table names.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from types import MappingProxyType

# A provider's declaration: path pattern -> why its delete destroys nothing there.
Inert = Mapping[str, str]

# In a pattern: any key at that level, and any index.
ANY_KEY = "*"
ANY_INDEX = -1
_PATTERN_PART = re.compile(r"\[(\*|[0-9]+)\]|(?:^|\.)([^.\[\]]+)")

PatternPart = str | int


@functools.cache
def pattern(text: str) -> tuple[PatternPart, ...]:
    """``output.*[*].format`` as its parts: ``("output", "*", -1, "format")``. ``*`` is any
    key, ``[*]`` any index. ValueError for a pattern that is not one."""
    parts: list[PatternPart] = []
    position = 0
    for match in _PATTERN_PART.finditer(text):
        if match.start() != position:
            break
        index, key = match.groups()
        if index is not None:
            parts.append(ANY_INDEX if index == "*" else int(index))
        else:
            parts.append(key)
        position = match.end()
    if not parts or position != len(text):
        raise ValueError(f"{text!r} is not a path pattern (like output.*[*].format)")
    return tuple(parts)


def inert(table: Mapping[str, str]) -> Inert:
    """An adapter's ``INERT`` table, checked: each pattern parses and starts with a named
    field (a leading wildcard would declare whole records inert), and each has a reason."""
    for text, reason in table.items():
        parts = pattern(text)
        if not isinstance(parts[0], str) or parts[0] == ANY_KEY:
            raise ValueError(f"inert pattern {text!r} must start with a field name")
        if not reason.strip():
            raise ValueError(f"inert pattern {text!r} needs a reason")
    return MappingProxyType(dict(table))
