"""The archive bucket's common ground: what every write carries (storage class, encryption,
retention, the expected owner, ``IfNoneMatch``) and every read (HEAD, a JSON document, a
hashed read-back, a thaw for cold objects)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from botocore.exceptions import BotoCoreError, ClientError

from worker.archive.buffers import PartBudget
from worker.errors import ArchiveError
from worker.logging import get_logger
from worker.s3 import (
    MISSING,
    UNSUPPORTED,
    error_code,
    etag_of,
    full_object_sha256,
    s3_errors,
)
from worker.settings import COLD_STORAGE_CLASSES, ArchiveSettings

if TYPE_CHECKING:
    from hashlib import _Hash

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import (
        GetObjectRequestTypeDef,
        HeadObjectOutputTypeDef,
        HeadObjectRequestTypeDef,
        ListObjectsV2RequestPaginateTypeDef,
        ListObjectVersionsRequestPaginateTypeDef,
        RestoreObjectRequestTypeDef,
        RestoreRequestTypeDef,
    )

    from worker.json_types import JSONValue


log = get_logger("worker.archive")


MiB = 1024 * 1024


GiB = 1024 * MiB


MAX_PARTS = 10_000


MAX_PART_SIZE = 5 * GiB


# S3's single CopyObject limit; above it the managed copy switches to UploadPartCopy.
COPY_MULTIPART_THRESHOLD = 5 * GiB


# A manifest or receipt larger than this is not ours.
MAX_JSON_BYTES = 64 * MiB


# Where `retention check` writes its probe objects, under the prefix. Provider names start
# with a letter, so this folder never meets a job's.
PROBE_FOLDER = ".retention-probe/"


# Intelligent-Tiering's archive tiers also need a RestoreObject before a GET.
_ARCHIVE_ACCESS = ("ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS")


_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")


Proof = Literal["checksum", "ETag", "read-back"]


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    etag: str | None
    version_id: str | None
    # What proved the stored bytes are the ones streamed (or copied).
    proof: Proof | None = None


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _md5() -> _Hash:
    # MD5 here is S3's integrity check (Content-MD5, ETags), not a security measure.
    return hashlib.md5(usedforsecurity=False)


class Owner(TypedDict, total=False):
    """The expected owner every call to the archive bucket names, when one is configured."""

    ExpectedBucketOwner: str


@dataclass(frozen=True, slots=True)
class Thaw:
    """Whether an archived object can be read now (`retention restore`)."""

    state: Literal["readable", "started", "in_progress"]
    storage_class: str | None = None
    tier: str | None = None


def _cold(head: Mapping[str, object]) -> bool:
    """True when a GET of this object fails until a RestoreObject has finished."""
    restore = str(head.get("Restore") or "")
    if 'ongoing-request="false"' in restore:
        return False
    return head.get("StorageClass") in COLD_STORAGE_CLASSES or (
        head.get("ArchiveStatus") in _ARCHIVE_ACCESS
    )


@dataclass(frozen=True, slots=True)
class ObjectState:
    """What the server says of a stored object (a HEAD): for `retention scrub`."""

    size: int
    etag: str
    # The whole object's SHA-256 (hex), when the server stores one (not a composite).
    sha256: str | None
    version_id: str | None
    # A GET fails until a RestoreObject has finished (GLACIER, DEEP_ARCHIVE...).
    cold: bool


@dataclass(frozen=True, slots=True)
class Verified:
    """An archived object as it was verified: what the delete gate expects to find."""

    key: str
    # None: not compared (a manifest is known by its ETag and version).
    size: int | None
    etag: str | None
    version_id: str | None = None

    @property
    def pinned(self) -> bool:
        """True when a particular version was verified (a versioned bucket)."""
        return bool(self.version_id) and self.version_id != "null"

    def held_by(self, size: int, etag: str) -> bool:
        return (self.size is None or size == self.size) and (self.etag is None or etag == self.etag)


def _folder_of(keys: Sequence[str]) -> str:
    """The deepest folder ("a/b/") holding every key: what one listing must cover."""
    # By character, then cut at the last "/": S3 keys are not paths (commonpath would
    # collapse a "//" a key may hold).
    common = os.path.commonprefix(list(keys))  # noqa: RUF071
    return common[: common.rfind("/") + 1]


class _Bucket:
    """The archive bucket and the settings every call to it carries."""

    def __init__(self, client: S3Client, settings: ArchiveSettings) -> None:
        self.client = client
        self.settings = settings
        self.bucket = settings.bucket
        self.part_size = settings.part_size_mib * MiB
        self.max_buffer = settings.max_buffer_mib * MiB
        # Every upload of this archive together: see worker/archive/buffers.py.
        self.budget = PartBudget(self.max_buffer)
        self.checksums = settings.checksum_mode == "when_supported"

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _owner(self) -> Owner:
        """ExpectedBucketOwner, on every call to the archive bucket when configured."""
        owner = self.settings.expected_bucket_owner
        return {"ExpectedBucketOwner": owner} if owner else {}

    def _object_args(self, storage_class: str | None) -> dict[str, Any]:
        """What every new archived object carries: storage class, encryption, retention.

        STANDARD is every S3 server's default class, so it is never sent: some servers (and
        S3 Express directory buckets) refuse or do not know the header.
        """
        s = self.settings
        args: dict[str, Any] = {**self._owner()}
        if storage_class and storage_class != "STANDARD":
            args["StorageClass"] = storage_class
        if s.sse_kms_key_id:
            args.update(
                ServerSideEncryption="aws:kms", SSEKMSKeyId=s.sse_kms_key_id, BucketKeyEnabled=True
            )
        if s.object_lock_mode and s.object_lock_days:
            args.update(
                ObjectLockMode=s.object_lock_mode, ObjectLockRetainUntilDate=self._retain_until()
            )
        return args

    def _retain_until(self) -> datetime:
        days = self.settings.object_lock_days or 0
        return datetime.now(UTC) + timedelta(days=days)

    def _conditional(self) -> dict[str, Any]:
        return {"IfNoneMatch": "*"} if self.settings.if_none_match else {}

    def check_bucket(self) -> str:
        """Reach the bucket and describe its Object Lock; ArchiveError names what is wrong.

        A server without an Object Lock API (NotImplemented, MethodNotAllowed) lacks a
        feature: that fails only when ``object_lock_mode`` asks for it.
        """
        with s3_errors("reaching", self.bucket):
            self.client.head_bucket(Bucket=self.bucket, **self._owner())
        wanted = self.settings.object_lock_mode
        try:
            answer = self.client.get_object_lock_configuration(Bucket=self.bucket, **self._owner())
        except ClientError as exc:
            code = error_code(exc)
            if code in UNSUPPORTED:
                if wanted:
                    raise ArchiveError(
                        f"s3://{self.bucket}: the server does not implement Object Lock "
                        f"(it answered {code}), but [archive] object_lock_mode is {wanted}",
                        hint="Use a server with Object Lock, or remove object_lock_mode and "
                        "object_lock_days",
                        permanent=True,
                    ) from None
                return "Object Lock: not supported by this server"
            if code not in ("ObjectLockConfigurationNotFoundError", "404"):
                with s3_errors("reading the Object Lock configuration of", self.bucket):
                    raise
            lock = None
        else:
            lock = answer.get("ObjectLockConfiguration", {})
        if not lock or lock.get("ObjectLockEnabled") != "Enabled":
            if wanted:
                raise ArchiveError(
                    f"s3://{self.bucket} has no Object Lock, but [archive] object_lock_mode is "
                    f"{wanted}",
                    hint="Create the bucket with Object Lock enabled, or remove the setting",
                    permanent=True,
                )
            return "Object Lock: off"
        default = lock.get("Rule", {}).get("DefaultRetention")
        text = "Object Lock: on"
        if default:
            period = (
                f"{default['Days']} days" if "Days" in default else f"{default.get('Years')} years"
            )
            text += f", default {default.get('Mode')} for {period}"
        if wanted:
            text += f"; the worker sets {wanted} for {self.settings.object_lock_days} days"
        return text

    def versioning(self) -> str:
        """The bucket's versioning: "Enabled", "Suspended", "off" or "not supported"."""
        try:
            answer = self.client.get_bucket_versioning(Bucket=self.bucket, **self._owner())
        except ClientError as exc:
            if error_code(exc) in UNSUPPORTED:
                return "not supported"
            with s3_errors("reading the versioning of", self.bucket):
                raise
        except BotoCoreError:
            with s3_errors("reading the versioning of", self.bucket):
                raise
        return str(answer.get("Status") or "off")

    def _head(
        self, key: str, *, version_id: str | None = None, checksums: bool = False
    ) -> HeadObjectOutputTypeDef | None:
        args: HeadObjectRequestTypeDef = {"Bucket": self.bucket, "Key": key}
        if owner := self.settings.expected_bucket_owner:
            args["ExpectedBucketOwner"] = owner
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        # Asked for only in when_supported mode: some servers refuse the header itself.
        if checksums and self.checksums:
            args["ChecksumMode"] = "ENABLED"
        try:
            return self.client.head_object(**args)
        except ClientError as exc:
            if error_code(exc) in MISSING:
                return None
            with s3_errors("reading the metadata of", self.bucket, key):
                raise
        except BotoCoreError:
            with s3_errors("reading the metadata of", self.bucket, key):
                raise
        return None  # pragma: no cover - s3_errors always raises

    def stat(self, key: str, *, version_id: str | None = None) -> ObjectState | None:
        """The stored object at ``key`` (that version), or None when there is none."""
        head = self._head(key, version_id=version_id, checksums=True)
        if head is None:
            return None
        return ObjectState(
            size=int(head["ContentLength"]),
            etag=etag_of(head),
            sha256=full_object_sha256(head),
            version_id=head.get("VersionId"),
            cold=_cold(head),
        )

    def exists_unchanged(
        self, key: str, *, size: int, etag: str | None, version_id: str | None = None
    ) -> bool:
        """True when ``key`` still holds the object we verified (same size and ETag).

        A HEAD, never a GET: it answers for objects in GLACIER or DEEP_ARCHIVE too, which is
        what lets the delete gate pass for files archived in a cold class.
        """
        return self._holds(Verified(key, size, etag, version_id))

    def _holds(self, expected: Verified) -> bool:
        head = self._head(expected.key, version_id=expected.version_id)
        return head is not None and expected.held_by(int(head["ContentLength"]), etag_of(head))

    def missing(self, objects: Sequence[Verified]) -> list[str]:
        """The keys of ``objects`` the server no longer holds as verified: the same size and
        ETag, at the verified version (the current one when none was recorded).

        With ``gate_check = "list"``, one listing of the folder that holds them all (a page
        per 1,000 keys) answers for every object; ListObjectVersions when a version was
        recorded, which also sees a verified version behind a newer one or a delete marker,
        as a HEAD of that version does. With ``"head"``, one HEAD per object. Either works
        for objects in GLACIER or DEEP_ARCHIVE: neither reads the bytes.
        """
        if not objects:
            return []
        if self.settings.gate_check == "head":
            return [o.key for o in objects if not self._holds(o)]
        folder = _folder_of([o.key for o in objects])
        versions = any(o.pinned for o in objects)
        held = self._listing(folder, versions=versions)
        missing = []
        for o in objects:
            found = held.get((o.key, o.version_id if o.pinned else None))
            if found is None or not o.held_by(*found):
                missing.append(o.key)
        return missing

    def _listing(
        self, folder: str, *, versions: bool
    ) -> dict[tuple[str, str | None], tuple[int, str]]:
        """Every object under ``folder``: (key, version id) -> (size, ETag); (key, None) is
        the key's current version (absent when that is a delete marker)."""
        held: dict[tuple[str, str | None], tuple[int, str]] = {}
        with s3_errors("listing", self.bucket, folder):
            if versions:
                by_version: ListObjectVersionsRequestPaginateTypeDef = {
                    "Bucket": self.bucket,
                    "Prefix": folder,
                }
                if owner := self.settings.expected_bucket_owner:
                    by_version["ExpectedBucketOwner"] = owner
                pages = self.client.get_paginator("list_object_versions").paginate(**by_version)
                for page in pages:
                    for v in page.get("Versions", []):
                        entry = (int(v["Size"]), etag_of(v))
                        held[(v["Key"], v.get("VersionId"))] = entry
                        if v.get("IsLatest"):
                            held[(v["Key"], None)] = entry
            else:
                current: ListObjectsV2RequestPaginateTypeDef = {
                    "Bucket": self.bucket,
                    "Prefix": folder,
                }
                if owner := self.settings.expected_bucket_owner:
                    current["ExpectedBucketOwner"] = owner
                for listed in self.client.get_paginator("list_objects_v2").paginate(**current):
                    for o in listed.get("Contents", []):
                        held[(o["Key"], None)] = (int(o["Size"]), etag_of(o))
        return held

    def superseded(self, key: str, version_id: str | None) -> str | None:
        """Why the object at ``key`` is no longer the version that was verified, or None.

        Only a versioned bucket can say: there a newer version or a delete marker at the key
        is worth a person's look (the verified version itself is still readable).
        """
        if not version_id or version_id == "null":
            return None
        head = self._head(key)
        if head is None:
            return "the key's current version is a delete marker (or it was deleted)"
        current = head.get("VersionId")
        if current and current != version_id:
            return f"a newer version ({current}) is at the key; the verified one was read"
        return None

    def get_json(self, key: str, *, version_id: str | None = None) -> JSONValue:
        """The JSON document at ``key`` (at ``version_id``); None when there is no such
        object."""
        args: GetObjectRequestTypeDef = {"Bucket": self.bucket, "Key": key}
        if owner := self.settings.expected_bucket_owner:
            args["ExpectedBucketOwner"] = owner
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        with s3_errors("reading", self.bucket, key):
            try:
                answer = self.client.get_object(**args)
            except ClientError as exc:
                if error_code(exc) in MISSING:
                    return None
                raise
            if answer["ContentLength"] > MAX_JSON_BYTES:
                raise ArchiveError(f"{self._where(key)} is too large to be a manifest")
            body = answer["Body"].read()
        try:
            document: JSONValue = json.loads(body)
        except ValueError:
            raise ArchiveError(f"{self._where(key)} is not valid JSON") from None
        return document

    def read_back_sha256(
        self,
        key: str,
        version_id: str | None = None,
        *,
        sink: Callable[[bytes], object] | None = None,
    ) -> tuple[int, str]:
        """Read a stored object once and hash it, handing each chunk to ``sink`` if given:
        verification where no checksum or ETag proves an object, and how `retention restore`
        writes and verifies."""
        args: GetObjectRequestTypeDef = {"Bucket": self.bucket, "Key": key}
        if owner := self.settings.expected_bucket_owner:
            args["ExpectedBucketOwner"] = owner
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        sha = hashlib.sha256()
        size = 0
        with s3_errors("reading back", self.bucket, key):
            body = self.client.get_object(**args)["Body"]
            for chunk in body.iter_chunks(chunk_size=MiB):
                sha.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink(chunk)
        return size, sha.hexdigest()

    def thaw(self, key: str, version_id: str | None = None, *, start: bool = True) -> Thaw | None:
        """Whether ``key`` (at ``version_id``) can be read now; None when there is no such
        object. A cold object (GLACIER, DEEP_ARCHIVE, an Intelligent-Tiering archive tier)
        gets a RestoreObject at ``restore_tier`` for ``restore_days`` unless one is running
        (or ``start`` is False)."""
        head = self._head(key, version_id=version_id)
        if head is None:
            return None
        storage_class = head.get("StorageClass")
        if not _cold(head):
            return Thaw("readable", storage_class)
        tier = self.settings.restore_tier
        if storage_class == "DEEP_ARCHIVE" and tier == "Expedited":
            tier = "Standard"  # DEEP_ARCHIVE has no Expedited tier
        if 'ongoing-request="true"' in str(head.get("Restore") or "") or not start:
            return Thaw("in_progress", storage_class, tier)
        request: RestoreRequestTypeDef = {"GlacierJobParameters": {"Tier": tier}}
        if head.get("ArchiveStatus") not in _ARCHIVE_ACCESS:
            # An Intelligent-Tiering restore takes no Days: the object moves back to a
            # frequent-access tier instead of getting a temporary copy.
            request["Days"] = self.settings.restore_days
        args: RestoreObjectRequestTypeDef = {"Bucket": self.bucket, "Key": key}
        if owner := self.settings.expected_bucket_owner:
            args["ExpectedBucketOwner"] = owner
        args["RestoreRequest"] = request
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        try:
            self.client.restore_object(**args)
        except ClientError as exc:
            if error_code(exc) == "RestoreAlreadyInProgress":
                return Thaw("in_progress", storage_class, tier)
            with s3_errors("starting a restore of", self.bucket, key):
                raise
        return Thaw("started", storage_class, tier)
