"""Reading a JSON document the tests know the shape of, without a check at every step."""

from __future__ import annotations

from worker.json_types import JSONValue


def at(value: JSONValue, *path: str | int) -> JSONValue:
    """The value at ``path`` (keys and list indexes) in ``value``; KeyError, IndexError or
    TypeError, as plain indexing would raise, when it is not there."""
    for step in path:
        if isinstance(value, dict) and isinstance(step, str):
            value = value[step]
            continue
        if isinstance(value, list) and isinstance(step, int):
            value = value[step]
            continue
        raise TypeError(f"{type(value).__name__} cannot be indexed by {step!r}")
    return value
