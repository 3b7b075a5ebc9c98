"""The user's own buckets that a provider writes outputs to (Daily's
``batch_processor_bucket``): read from them, and after the provider's delete remove exactly
what was archived.

The provider's delete leaves these objects; the user asked the worker to archive them and
then remove them. Cleanup deletes the version that was archived (versioned buckets), or the
object only while its ETag is still the archived one (``If-Match``, after a HEAD that checks
the same): an object written at that key since the archive is left alone and reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from worker.errors import ArchiveError
from worker.s3 import MISSING, TAKEN, encrypted, error_code, etag_of, s3_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import GetObjectOutputTypeDef, HeadObjectOutputTypeDef

    from worker.manifest import CustomObject

CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SourceObject:
    """One object in a source bucket, as it stood when it was read."""

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None = None
    content_type: str | None = None
    # SSE-KMS or SSE-C: its ETag is not an MD5 of its bytes, and is never compared as one.
    encrypted: bool = False


@dataclass(frozen=True, slots=True)
class Removal:
    """What cleanup did with one archived source object, for the receipt."""

    bucket: str
    key: str
    removed: bool
    version_id: str | None = None
    delete_marker: bool = False
    # Why it was left: it changed since it was archived, or it was already gone.
    left_because: str | None = None

    def receipt_entry(self) -> CustomObject:
        entry: CustomObject = {"bucket": self.bucket, "key": self.key}
        if self.removed:
            entry |= {"version_id": self.version_id, "delete_marker": self.delete_marker}
        else:
            entry["left_because"] = self.left_because
        return entry


def _missing(bucket: str, key: str) -> ArchiveError:
    return ArchiveError(
        f"s3://{bucket}/{key} does not exist",
        permanent=True,
        hint="The provider lists an output that is not in your bucket; check it, then run "
        "`retention retry`",
    )


class SourceBucket:
    """The user's buckets on one endpoint. ``same_endpoint``: the archive's own endpoint, so
    objects are copied server-side instead of streamed through the worker."""

    def __init__(self, client: S3Client, *, same_endpoint: bool) -> None:
        self.client = client
        self.same_endpoint = same_endpoint

    def head(self, bucket: str, key: str) -> SourceObject:
        with s3_errors("reading the metadata of", bucket, key):
            try:
                answer = self.client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in MISSING:
                    raise _missing(bucket, key) from None
                raise
        return _object_of(bucket, key, answer)

    @contextlib.contextmanager
    def open(self, bucket: str, key: str) -> Iterator[tuple[Iterator[bytes], SourceObject]]:
        """Stream an object: its chunks, and what it is (size, ETag, version)."""
        with s3_errors("reading", bucket, key):
            try:
                answer = self.client.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in MISSING:
                    raise _missing(bucket, key) from None
                raise
        body = answer["Body"]
        try:
            yield body.iter_chunks(chunk_size=CHUNK), _object_of(bucket, key, answer)
        finally:
            body.close()

    def remove(self, bucket: str, key: str, *, etag: str | None, version_id: str | None) -> Removal:
        """Delete the archived object, never one written at its key since."""
        if version_id and version_id != "null":
            with s3_errors("deleting", bucket, key):
                answer = self.client.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
            return Removal(bucket, key, True, version_id, bool(answer.get("DeleteMarker")))
        current = self._current(bucket, key)
        if current is None:
            return Removal(bucket, key, False, left_because="already gone")
        if etag is None or etag_of(current) != etag:
            return Removal(
                bucket, key, False, left_because="changed since it was archived (ETag differs)"
            )
        try:
            with s3_errors("deleting", bucket, key):
                answer = self.client.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        except ArchiveError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and error_code(cause) in TAKEN:
                return Removal(
                    bucket, key, False, left_because="changed since it was archived (If-Match)"
                )
            raise
        return Removal(bucket, key, True, answer.get("VersionId"), bool(answer.get("DeleteMarker")))

    def _current(self, bucket: str, key: str) -> HeadObjectOutputTypeDef | None:
        with s3_errors("reading the metadata of", bucket, key):
            try:
                return self.client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in MISSING:
                    return None
                raise


def _object_of(
    bucket: str, key: str, answer: HeadObjectOutputTypeDef | GetObjectOutputTypeDef
) -> SourceObject:
    return SourceObject(
        bucket=bucket,
        key=key,
        size=int(answer["ContentLength"]),
        etag=etag_of(answer),
        version_id=answer.get("VersionId"),
        content_type=answer.get("ContentType"),
        encrypted=encrypted(answer),
    )
