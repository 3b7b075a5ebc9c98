"""Every reference to stored data in a provider's JSON record: the walk that makes adapters
fail closed.

An adapter's ``artifacts()`` must account for everything the provider's delete would destroy.
Reading only the fields an adapter knows is how a new vendor field, naming a file nobody
archived, ends up deleted. So each adapter walks the provider's whole record with
``references``, and hands what it found to ``unclaimed``.

The rule, the same for every provider. Each reference must be

* claimed: it is, or lies inside, a field that maps to an ``Artifact`` the adapter returns;
* inert: it lies in a field the adapter declares, from the provider's own documents, as
  naming nothing the delete destroys (an id, a status, a format, what the user submitted, an
  object in the user's own bucket). Each provider declares these once, in its spec's
  ``INERT`` table (``worker/specs/``): a path pattern (``output.*[*].format``) and a one-line
  reason for each (``inert()``); or
* in a section the operator named in ``ignore_outputs``, accepting its loss.

Anything else stops the delete: ``unrecognised`` builds the ``Kept`` error naming each field by
its JSON path (``output.recording[0]``), never by its value (a value may be a signed link).
Nothing here does I/O.

What could name stored data. A walk that recognises a fixed list of fields meets the next
shape in production, so the test is "could this name stored data", and when unsure it is a
reference: a false alarm keeps a job, which an ``INERT`` entry or ``ignore_outputs`` settles;
a miss loses data.

* By its value, wherever it is: a string that is a URI of any scheme (``https://``, ``s3://``,
  ``gs://``, ``az://``, ``x-vendor://``...) or protocol-relative (``//cdn/x``), an absolute
  path (``/files/a.mp3``), or a relative one (``acme/j/a.mp3``, ``recordings/r1``: a ``/``
  and no spaces), but not a date, a media type (``video/mp4``) or an abbreviation (``N/A``).
  Text that only mentions one ("Failed to download https://...") is not.
* By its name: any non-empty value under a field whose name ends in a word that names a
  place for data: ``url``, ``uri``, ``link``, ``href``, ``src``, ``key``, ``file``, ``path``,
  ``location``, ``download``, ``bucket``, or their plurals. Names are read as words, so casing
  and separators do not matter: ``audio_file``, ``audioFile`` and ``audio-file``;
  ``recording_s3_key`` and ``s3Key``; ``downloadURL``. A whole word, so ``profile`` and
  ``allocation`` are not. A string is one reference; a list is each of its items; an object
  is represented by the references inside it, or is one itself when it holds none (an object
  under a plural, ``output_files``, is a container: its fields are judged one by one).
* Storage pairs: in an object with a bucket (``bucket``, ``Bucket``, ``bucket_name``,
  ``s3Bucket``), the bucket and each field that locates an object in it (``key``, ``Key``,
  ``object_key``, ``object``, ``name``, ``prefix``...). So ``{"Bucket", "Key"}`` is two
  references, ``{"name", "key"}`` items are one each (their ``key``), and a lone ``{"key"}``
  is one. An ``s3Config`` is one reference, whatever it holds.
* A list of files: each item of a list under a name ending in ``file_name(s)`` or
  ``filename(s)``.

Numbers, booleans and empty values (null, "", [], {}) are never references, nor is a list or
an object holding nothing else.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from worker.errors import Kept
from worker.json_types import JSONValue
from worker.specs.inert import ANY_INDEX, ANY_KEY, Inert, PatternPart, pattern

Segment = str | int
Path = tuple[Segment, ...]

# A URI of any scheme, or protocol-relative. A string is a reference only when it *is* one,
# not when it mentions one ("Failed to download https://...").
_URI = re.compile(r"^\s*(?:[A-Za-z][A-Za-z0-9+.-]*:)?//\S")
_ABSOLUTE_PATH = re.compile(r"^/[^\s/]")
# Slashes that are not paths: dates and fractions ("2024/05/01", "1/2"), media types
# ("video/mp4", "application/vnd.api+json"), abbreviations ("N/A", "and/or").
_NUMERIC = re.compile(r"^[0-9./:-]+$")
_MEDIA_TYPE = re.compile(
    r"^(?:application|audio|font|image|message|model|multipart|text|video)/[\w.+-]+$",
    re.IGNORECASE,
)
_ABBREVIATION = re.compile(r"^[A-Za-z]{1,3}/[A-Za-z]{1,3}$")
# Words of a field name: "downloadURLs" -> download, URLs; "s3Key" -> s, 3, Key.
_WORD = re.compile(r"[A-Z]+s?(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# The last word of a name that marks its value as naming a place for data.
_PLACES = ("url", "uri", "link", "href", "src", "key", "file", "path", "location", "download")
_PLURAL_PLACE_WORDS = frozenset(word + "s" for word in _PLACES)
_PLACE_WORDS = frozenset((*_PLACES, *_PLURAL_PLACE_WORDS))
_BUCKET_WORDS = (("bucket",), ("buckets",), ("bucket", "name"), ("bucket", "id"))
# Beside a bucket, the last word of a field that locates an object in it.
_LOCATOR_WORDS = frozenset(("object", "objects", "name", "names", "prefix", "blob", "filename"))
_FILE_LIST_WORDS = frozenset(("filename", "filenames"))
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]{0,63}$")
# Paths shown in one message; the rest are counted.
MAX_SHOWN = 5


def words(name: str) -> tuple[str, ...]:
    """A field name as lowercase words, whatever its casing and separators."""
    return tuple(word.lower() for word in _WORD.findall(name))


@dataclass(frozen=True, slots=True)
class _Name:
    """What a field's name says about its value."""

    s3config: bool  # an s3Config: one reference, whatever it holds
    place: bool  # its last word names a place for data: audio_file, s3Key, downloadURL
    collection: bool  # a plural of one (output_files, urls): an object under it is a container
    bucket: bool  # bucket, Bucket, bucket_name, s3Bucket
    locator: bool  # beside a bucket, locates an object in it: object, name, prefix
    file_list: bool  # a list under it is a list of files: output_file_name, filenames


@functools.lru_cache(maxsize=4096)
def _name(name: str) -> _Name:
    # Cached: a large answer repeats the same few names many times over.
    parts = words(name)
    last = parts[-1] if parts else ""
    return _Name(
        s3config="".join(parts) == "s3config",
        place=last in _PLACE_WORDS,
        collection=last in _PLURAL_PLACE_WORDS,
        bucket=any(parts[-len(bucket) :] == bucket for bucket in _BUCKET_WORDS),
        locator=last in _LOCATOR_WORDS,
        file_list=last in _FILE_LIST_WORDS or parts[-2:] in (("file", "name"), ("file", "names")),
    )


def _is_nothing(value: JSONValue) -> bool:
    """Null, blank, empty, a number or a boolean."""
    if isinstance(value, str):
        return not value.strip()
    return not isinstance(value, list | dict) or not value


def _holds_nothing(value: JSONValue) -> bool:
    """Nothing, or lists and objects of nothing else: no text that could name anything
    (``{"expires": 3600}``). Only asked of what a field that names data holds, so a large
    answer is not searched once per level."""
    if isinstance(value, list):
        return all(_holds_nothing(item) for item in value)
    if isinstance(value, dict):
        return all(_holds_nothing(item) for item in value.values())
    return _is_nothing(value)


def _has_bucket(value: Mapping[str, JSONValue]) -> bool:
    return any(isinstance(v, str) and v.strip() and _name(str(k)).bucket for k, v in value.items())


def is_url(value: object) -> bool:
    """Whether a string is a URI of some scheme, or protocol-relative."""
    return isinstance(value, str) and bool(_URI.match(value))


def looks_like_a_place(text: str) -> bool:
    """Whether a string, wherever it is, could name stored data by its value alone."""
    if is_url(text) or _ABSOLUTE_PATH.match(text):
        return True
    if "/" not in text or any(c.isspace() for c in text):
        return False
    return not (_NUMERIC.match(text) or _MEDIA_TYPE.match(text) or _ABBREVIATION.match(text))


def references(value: JSONValue, path: Path = ()) -> Iterator[tuple[Path, JSONValue]]:
    """``(path, value)`` for every reference to stored data in a JSON value, in document
    order. No reference lies inside another: a field is either one, or is represented by
    the ones inside it."""
    if isinstance(value, str):
        if looks_like_a_place(value):
            yield path, value
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from references(item, (*path, index))
        return
    if not isinstance(value, dict):
        return
    in_a_bucket = _has_bucket(value)
    for key, item in value.items():
        name = str(key)
        here = (*path, name)
        if _is_nothing(item):
            continue
        says = _name(name)
        if says.s3config:
            yield here, item
        elif isinstance(item, dict) and says.collection:
            yield from references(item, here)
        elif (
            says.place
            or says.bucket
            or (in_a_bucket and says.locator)
            or (says.file_list and isinstance(item, list))
        ):
            yield from _held(item, here)
        else:
            yield from references(item, here)


def _held(value: JSONValue, path: Path) -> Iterator[tuple[Path, JSONValue]]:
    """The references a field that names data holds: a string is one; each item of a list is
    one, or the ones inside it; an object is the ones inside it, or one itself when it has
    none but holds some text (``{"id": "f-1"}``)."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not _is_nothing(item):
                yield from _held(item, (*path, index))
        return
    inner = list(references(value, path)) if isinstance(value, dict) else []
    if inner:
        yield from inner
    elif not _holds_nothing(value):
        yield path, value


# -- the declarations (worker/specs/inert.py) -----------------------------------------------


def _matches(path: Path, parts: tuple[PatternPart, ...]) -> bool:
    if len(path) < len(parts):
        return False
    for segment, part in zip(path, parts, strict=False):
        if part == ANY_KEY:
            if not isinstance(segment, str):
                return False
        elif part == ANY_INDEX:
            if not isinstance(segment, int):
                return False
        elif segment != part or type(segment) is not type(part):
            return False
    return True


def is_inert(path: Path, table: Inert) -> bool:
    """Whether ``path`` is, or lies in, a field ``table`` declares inert."""
    return any(_matches(path, pattern(text)) for text in table)


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
    record: JSONValue,
    *,
    claimed: Collection[Path] = (),
    inert: Inert = MappingProxyType({}),
    ignored: Collection[str] = (),
    containers: Sequence[Path] = (),
) -> list[Path]:
    """The references in ``record`` that are neither ``claimed`` (at or under a path that
    maps to an artifact), ``inert`` (declared by the adapter as naming nothing the delete
    destroys), nor in an ``ignored`` section."""
    return [
        path
        for path, _value in references(record)
        if not any(within(path, field) for field in claimed)
        and not is_inert(path, inert)
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
