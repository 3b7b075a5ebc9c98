"""JSON as the worker meets it: what a provider answers, what the archive stores and reads
back, what the ledger keeps in its JSON columns.

A parsed document is a ``JSONValue`` until code has checked its shape; then it is one of the
``TypedDict`` shapes its module declares (the manifest's, a vendor's record's). Reading a
``JSONValue`` takes an ``isinstance`` check at each step, which is the point: a provider's
answer is data from outside, and a field of the wrong type must be refused, not assumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

JSONScalar: TypeAlias = str | int | float | bool | None
JSONValue: TypeAlias = JSONScalar | list["JSONValue"] | dict[str, "JSONValue"]
JSONObject: TypeAlias = dict[str, JSONValue]
# What a function that only reads an object accepts (a TypedDict, a dict of narrower values).
JSONMapping: TypeAlias = Mapping[str, object]
