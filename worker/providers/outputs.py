"""Every file reference in a provider's JSON record: the walk that makes adapters fail closed.

An adapter's ``artifacts()`` must account for every file the provider's delete would destroy.
Reading only the fields an adapter knows is how a new vendor field, a link to a file nobody
archived, ends up deleted. So each adapter walks the provider's whole record with
``references``, and every reference it finds must be either

* claimed: it maps to an ``Artifact`` the adapter returns;
* known not to be destroyed by the delete (Daily's ``input.uri``, MPC's OBS objects), which
  the adapter's docstring justifies; or
* in a section the operator named in ``ignore_outputs``, accepting its loss.

Anything else stops the delete: ``unrecognised`` builds the ``Kept`` error naming each field by
its JSON path (``output.recording[0]``). Nothing here does I/O; the adapters decide which
paths they claim.

What counts as a file reference (fail closed: a false alarm keeps a job, a miss loses data):

* a string that is a URL of a scheme that serves bytes (``https://``, ``s3://``...);
* a field named like a link: ``url``, ``uri``, ``link``, ``href``, or ending in one of them
  (``download_url``, ``extracted_fields_url``, ``downloadUrl``, ``file_link``), when it holds
  a string, a list or an object;
* an ``s3Config`` object, and any object naming a storage ``bucket`` with a ``key`` or an
  ``object`` (Huawei OBS);
* a list of files: a list under a name ending in ``files``, ``paths`` or ``file_name(s)``.
  Each item is a reference; an item that holds references of its own is represented by them.
* a string under a name ending in ``path`` (``file_path``).

Empty values (null, "", [], {}) are never references, and neither are numbers and booleans.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from worker.errors import Kept

Segment = str | int
Path = tuple[Segment, ...]

# Schemes that name bytes somewhere. A string is a reference only when it *is* such a URL,
# not when it mentions one ("Failed to download https://...").
_URL = re.compile(r"^\s*(?:https?|s3|gs|obs|oss|ftps?|sftp)://\S", re.IGNORECASE)
_LINK_ENDINGS = ("url", "uri", "link", "href", "urls", "uris", "links", "hrefs")
_LIST_ENDINGS = ("files", "paths", "filenames", "filename")
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]{0,63}$")
# Paths shown in one message; the rest are counted.
MAX_SHOWN = 5


def _normal(name: str) -> str:
    """``download_url``, ``downloadUrl`` and ``download-url`` all read ``downloadurl``."""
    return name.lower().replace("_", "").replace("-", "")


def _is_link_name(name: str) -> bool:
    return _normal(name).endswith(_LINK_ENDINGS)


def _is_empty(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, str | list | dict) and not value)
        or (isinstance(value, str) and not value.strip())
    )


def _is_storage_object(value: dict[str, Any]) -> bool:
    bucket = value.get("bucket")
    where = value.get("key", value.get("object"))
    return isinstance(bucket, str) and bool(bucket) and isinstance(where, str)


def is_url(value: Any) -> bool:
    return isinstance(value, str) and bool(_URL.match(value))


def references(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """``(path, value)`` for every file reference in a JSON value, in document order.

    A reference is not walked into: an ``s3Config`` is one reference, not its ``key``.
    """
    if isinstance(value, str):
        if is_url(value):
            yield path, value
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from references(item, (*path, index))
        return
    if not isinstance(value, dict):
        return
    if _is_storage_object(value):
        yield path, value
        return
    for key, item in value.items():
        name = str(key)
        here = (*path, name)
        if _is_empty(item) or isinstance(item, bool | int | float):
            continue
        normal = _normal(name)
        if normal == "s3config":
            yield here, item
        elif _is_link_name(name):
            if isinstance(item, list):
                for index, entry in enumerate(item):
                    if not _is_empty(entry) and not isinstance(entry, bool | int | float):
                        yield (*here, index), entry
            else:
                yield here, item
        elif normal.endswith(_LIST_ENDINGS) and isinstance(item, list):
            yield from _file_list(item, here)
        elif normal.endswith("path") and isinstance(item, str):
            yield here, item
        else:
            yield from references(item, here)


def _file_list(items: list[Any], path: Path) -> Iterator[tuple[Path, Any]]:
    for index, item in enumerate(items):
        here = (*path, index)
        inner = list(references(item, here))
        if inner:
            yield from inner
        elif not _is_empty(item) and not isinstance(item, bool | int | float):
            yield here, item


def within(path: Path, prefix: Path) -> bool:
    """Whether ``path`` is ``prefix`` or lies under it."""
    return path[: len(prefix)] == prefix


def dotted(path: Path) -> str:
    """A JSON path as people write it: ``output.transcription[1].s3Config``."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        elif _IDENTIFIER.match(segment):
            text += f".{segment}" if text else segment
        else:
            text += f"[{json.dumps(segment[:64])}]"
    return text or "(the whole record)"


def section_of(path: Path, containers: Sequence[Path] = ()) -> str:
    """The name ``ignore_outputs`` uses for the section a reference is in: the key just under
    the deepest of ``containers`` that holds it (Daily's ``output``, Loom's ``output_files``),
    else the record's top-level key."""
    for container in sorted(containers, key=len, reverse=True):
        if len(path) > len(container) and within(path, container):
            return str(path[len(container)])
    return str(path[0]) if path else ""


def unclaimed(
    record: Any,
    *,
    claimed: Collection[Path] = (),
    known: Sequence[Path] = (),
    ignored: Collection[str] = (),
    containers: Sequence[Path] = (),
) -> list[Path]:
    """The references in ``record`` that are neither ``claimed`` (exact paths that map to an
    artifact), under a ``known`` prefix (not destroyed by the delete), nor in an ``ignored``
    section."""
    return [
        path
        for path, _value in references(record)
        if path not in claimed
        and not any(within(path, prefix) for prefix in known)
        and section_of(path, containers) not in ignored
    ]


def unrecognised(paths: Sequence[Path], *, containers: Sequence[Path] = ()) -> Kept:
    """The ``Kept`` error for references nobody claimed. The caller attaches the provider and
    the job (``for_job``). Only paths are shown: a value may be a signed link."""
    shown = ", ".join(f"`{dotted(p)}`" for p in paths[:MAX_SHOWN])
    more = f" and {len(paths) - MAX_SHOWN} more" if len(paths) > MAX_SHOWN else ""
    noun = "output" if len(paths) == 1 else "outputs"
    sections = ", ".join(
        json.dumps(s[:64]) for s in dict.fromkeys(section_of(p, containers) for p in paths)
    )
    return Kept(
        f"unrecognised {noun} {shown}{more}: nothing deleted",
        reason="unrecognised_output",
        hint="The worker does not know what this file is, so it cannot archive it and will "
        "not let the delete destroy it. Archive it by hand and add "
        f"{sections} to ignore_outputs for this provider to accept losing it, or hold the "
        "job; it is looked at again on a later sweep",
    )
