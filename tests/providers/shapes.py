"""Shapes in which a provider's record can name stored data, shared by the walk's own tests
and the five adapters' (``test_outputs.py``, ``test_reference_shapes.py``).

Each ``Shape`` is a set of fields merged into some object of a record, and the paths, relative
to that object, the walk must report for them. They are the shapes seen in real APIs (the S3,
GCS, OSS, OBS and Azure SDKs, and the vendors' own fields): AWS casing, ``bucket_name`` and
``object_key``, ``s3Bucket`` and ``s3Key``, URIs of any scheme, presigned and virtual-hosted
URLs, bare keys under names ending in ``_key``, ``_file``, ``_path``, ``_uri``, ``_url``,
``_location``, ``href``, lists of ``{name, key}``, a ``{key}`` without a bucket, and download
paths. Values are fake, and one carries a signature that no message may echo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

SIGNED = "https://bucket.s3.amazonaws.com/out.mp4?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA"
# Text inside the signed URL that a message showing it would contain.
SIGNATURE = "deadbeef"


@dataclass(frozen=True)
class Shape:
    label: str
    fields: dict[str, Any] = field(hash=False)
    paths: tuple[str, ...]

    def steps(self) -> list[tuple[str | int, ...]]:
        """The paths as tuples: ``artifacts[0].key`` -> ``("artifacts", 0, "key")``."""
        return [
            tuple(int(index) if index else key for index, key in _STEP.findall(path))
            for path in self.paths
        ]

    def under(self, prefix: str) -> list[str]:
        """The paths as seen from ``prefix``, the dotted path of the object they are in."""
        if not prefix:
            return list(self.paths)
        return [prefix + p if p.startswith("[") else f"{prefix}.{p}" for p in self.paths]


_STEP = re.compile(r"\[([0-9]+)\]|([^.\[\]]+)")


def shape(label: str, fields: dict[str, Any], *paths: str) -> Shape:
    return Shape(label, fields, paths)


SHAPES = [
    shape("aws-casing pair", {"Bucket": "b", "Key": "acme/j/a.mp3"}, "Bucket", "Key"),
    shape(
        "aws pair in a field",
        {"recording": {"Bucket": "b", "Key": "k"}},
        "recording.Bucket",
        "recording.Key",
    ),
    shape("lower-case pair", {"bucket": "b", "key": "acme/j/a.mp3"}, "bucket", "key"),
    shape(
        "bucket_name and object_key",
        {"media": {"bucket_name": "b", "object_key": "k"}},
        "media.bucket_name",
        "media.object_key",
    ),
    shape("s3Bucket and s3Key", {"s3Bucket": "b", "s3Key": "k"}, "s3Bucket", "s3Key"),
    shape(
        "bucket and object (OBS)",
        {"copy": {"bucket": "b", "object": "out/a.mp4"}},
        "copy.bucket",
        "copy.object",
    ),
    shape(
        "bucket and name (GCS)",
        {"copy": {"bucket": "b", "name": "a.mp4"}},
        "copy.bucket",
        "copy.name",
    ),
    shape("a lone bucket", {"bucket": "b"}, "bucket"),
    shape("lower-case s3 object", {"s3": {"bucket": "b", "key": "k"}}, "s3.bucket", "s3.key"),
    shape("snake _file", {"audio_file": "acme/j/a.mp3"}, "audio_file"),
    shape("camel File", {"audioFile": "a.mp3"}, "audioFile"),
    shape("kebab -file", {"audio-file": "a"}, "audio-file"),
    shape("_s3_key", {"recording_s3_key": "acme/j/r.mp4"}, "recording_s3_key"),
    shape("s3Key alone", {"s3Key": "0f3a"}, "s3Key"),
    shape("a lone key", {"key": "acme/j/out.txt"}, "key"),
    shape("a lone Key", {"Key": "out.txt"}, "Key"),
    shape("a lone object_key", {"object_key": "x"}, "object_key"),
    shape("{key} without a bucket", {"export": {"key": "acme/j/out.txt"}}, "export.key"),
    shape(
        "list of {name, key}",
        {"artifacts": [{"name": "a", "key": "acme/j/a.mp3"}, {"name": "b", "key": "b.mp3"}]},
        "artifacts[0].key",
        "artifacts[1].key",
    ),
    shape("list of {path}", {"pages": [{"path": "out/p1.png"}]}, "pages[0].path"),
    shape("list of {url}", {"pages": [{"url": "https://x.example/p1.png"}]}, "pages[0].url"),
    shape("_path", {"export_path": "exports/1"}, "export_path"),
    shape("_uri", {"transcript_uri": "t-1"}, "transcript_uri"),
    shape("_url", {"preview_url": "p-1"}, "preview_url"),
    shape("_location", {"archive_location": "acme/j"}, "archive_location"),
    shape("href", {"href": "a"}, "href"),
    shape("HREF", {"HREF": "a"}, "HREF"),
    shape("downloadURL", {"downloadURL": "d"}, "downloadURL"),
    shape("a relative download path", {"download": "/v1/batch-processor/j/download"}, "download"),
    shape("an absolute path anywhere", {"recording": "/files/acme/j/a.mp3"}, "recording"),
    shape("a relative key with an extension", {"transcript": "acme/j/out.txt"}, "transcript"),
    shape("a relative key of many parts", {"transcript": "acme/j/transcript/out"}, "transcript"),
    shape("a relative key of two parts", {"recording": "recordings/r1"}, "recording"),
    shape("s3 URI", {"copy": "s3://b/k"}, "copy"),
    shape("gs URI", {"copy": "gs://b/k"}, "copy"),
    shape("oss URI", {"copy": "oss://b/k"}, "copy"),
    shape("obs URI", {"copy": "obs://b/k"}, "copy"),
    shape("az URI", {"copy": "az://account/container/blob"}, "copy"),
    shape("a URI of a scheme nobody listed", {"copy": "x-vendor+store://v/k"}, "copy"),
    shape("a protocol-relative URL", {"copy": "//cdn.example/a.mp3"}, "copy"),
    shape("a virtual-hosted S3 URL", {"copy": "https://bucket.s3.amazonaws.com/key"}, "copy"),
    shape("a presigned URL", {"copy": SIGNED}, "copy"),
]
SHAPE_IDS = [s.label for s in SHAPES]


# -- generated variants, for properties ------------------------------------------------------

_PREFIXES = (("audio",), ("recording", "s3"), ("s3",), ("transcript",), ("export",), ("media",))
_SUFFIXES = ("key", "file", "path", "uri", "url", "location", "href", "link", "src")
_BUCKETS = ("bucket", "Bucket", "bucket_name", "BucketName", "s3Bucket", "s3_bucket")
_LOCATORS = ("key", "Key", "object_key", "ObjectKey", "s3Key", "object", "name", "prefix")
_VALUES = ("acme/j/a.mp3", "a.mp3", "0f3a", "j", SIGNED, "/files/a.mp3")
_NEUTRAL = ("recording", "backup", "extra", "copy", "media", "outputFile2")


def _styled(words: tuple[str, ...], style: str) -> str:
    if style == "snake":
        return "_".join(words)
    if style == "kebab":
        return "-".join(words)
    if style == "upper":
        return "_".join(words).upper()
    first, *rest = words
    head = first.capitalize() if style == "pascal" else first
    return head + "".join(word.capitalize() for word in rest)


_styles = st.sampled_from(("snake", "kebab", "upper", "camel", "pascal"))


@st.composite
def _named(draw: st.DrawFn) -> Shape:
    """A bare key or path under a name ending in a place word, in any casing."""
    words = (*draw(st.sampled_from(_PREFIXES)), draw(st.sampled_from(_SUFFIXES)))
    name = _styled(words, draw(_styles))
    return shape(f"named {name}", {name: draw(st.sampled_from(_VALUES))}, name)


@st.composite
def _pair(draw: st.DrawFn) -> Shape:
    """A bucket and a locator, merged into the object or under a field of its own."""
    bucket, locator = draw(st.sampled_from(_BUCKETS)), draw(st.sampled_from(_LOCATORS))
    pair = {bucket: "b", locator: draw(st.sampled_from(_VALUES))}
    if draw(st.booleans()):
        return shape(f"pair {bucket}/{locator}", pair, bucket, locator)
    holder = draw(st.sampled_from(_NEUTRAL))
    return shape(f"pair in {holder}", {holder: pair}, f"{holder}.{bucket}", f"{holder}.{locator}")


@st.composite
def _uri(draw: st.DrawFn) -> Shape:
    """A URI of any scheme under a name that says nothing."""
    scheme = draw(st.from_regex(r"[a-z][a-z0-9+.-]{0,7}", fullmatch=True))
    holder = draw(st.sampled_from(_NEUTRAL))
    return shape(f"{scheme} URI", {holder: f"{scheme}://store/acme/j/a.mp3"}, holder)


@st.composite
def _listed(draw: st.DrawFn) -> Shape:
    """A list of objects each locating a file by ``key``, ``path`` or ``url``."""
    locator = draw(st.sampled_from(("key", "Key", "path", "url", "object_key")))
    count = draw(st.integers(1, 3))
    items = [{"name": f"n{i}", locator: f"acme/j/{i}.bin"} for i in range(count)]
    paths = [f"artifacts[{i}].{locator}" for i in range(count)]
    return shape(f"list of {{name, {locator}}}", {"artifacts": items}, *paths)


any_shape = st.one_of(st.sampled_from(SHAPES), _named(), _pair(), _uri(), _listed())
