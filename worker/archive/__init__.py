"""The archive: the user's own S3 bucket. Only this module, ``s3`` and ``source_bucket`` speak
boto3.

The bucket's concerns, one module each (``Archive`` joins them):

* ``bucket``: what every write carries and every read does; thaws of cold objects;
* ``upload``: streaming a body in, in parts within a memory budget;
* ``verify``: proving what was stored, and never overwriting;
* ``copies``: server-side copies from the user's own buckets;
* ``probe``: what the server supports, for `retention check`.

Storage classes
Archived files take ``storage_class`` (GLACIER and DEEP_ARCHIVE included); manifests and
receipts take ``manifest_storage_class``, which must be readable at once (`retention restore`
reads manifests back, and so does the delete gate for a job archived before the ledger kept
its manifest's ETag). The gate checks files by a listing or a HEAD, never a GET: both work on
cold objects.
``thaw`` starts a RestoreObject for `retention restore`.
"""

from __future__ import annotations

from worker.archive.bucket import (
    COPY_MULTIPART_THRESHOLD,
    MAX_JSON_BYTES,
    MAX_PART_SIZE,
    MAX_PARTS,
    PROBE_FOLDER,
    GiB,
    MiB,
    ObjectState,
    StoredObject,
    Thaw,
    Verified,
)
from worker.archive.copies import _Copies
from worker.archive.probe import Capabilities, _Probe
from worker.archive.upload import part_size_for, parts_in_flight
from worker.archive.verify import _SAID, _Expected
from worker.s3 import make_s3_client, s3_errors


class Archive(_Copies, _Probe):
    """The user's archive bucket: stream in, copy in, verify, read back, probe."""


__all__ = [
    "COPY_MULTIPART_THRESHOLD",
    "MAX_JSON_BYTES",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "PROBE_FOLDER",
    "_SAID",
    "Archive",
    "Capabilities",
    "GiB",
    "MiB",
    "ObjectState",
    "StoredObject",
    "Thaw",
    "Verified",
    "_Expected",
    "make_s3_client",
    "part_size_for",
    "parts_in_flight",
    "s3_errors",
]
