"""The manifest and the deletion receipt: the two documents written next to a job's files.

``manifest.json`` is written after every file is stored and verified, and before any delete.
It lists each file's key, size, SHA-256 and source, and carries the provider's job record.
``deletion.json`` is written after the provider confirmed the delete. Both are meant to be
read by people (a compliance officer) and by ``retention restore``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NotRequired, TypedDict

from worker import __version__
from worker.errors import VerifyError
from worker.json_types import JSONValue

FORMAT = 1


class FileEntry(TypedDict):
    """One archived file, as ``manifest.json`` lists it."""

    key: str
    size: int
    sha256: str
    # Where it came from: the provider's link or its object in the user's own bucket.
    source: str
    # The verified object version, in a versioned bucket.
    version_id: NotRequired[str]


class Manifest(TypedDict):
    """``manifest.json``: every file of a job's archive, and the provider's record of it."""

    format: int
    revision: int
    provider: str
    provider_type: str
    job_id: str
    archived_at: str
    # The provider's job record, signed query strings removed.
    job: Mapping[str, JSONValue]
    files: list[FileEntry]
    bytes: int
    worker_version: str


class CustomObject(TypedDict):
    """An object in the user's own bucket that the delete concerned: removed (at its
    version, or leaving a delete marker), or left there, and why."""

    bucket: str
    key: str
    version_id: NotRequired[str | None]
    delete_marker: NotRequired[bool | None]
    left_because: NotRequired[str | None]


class PartialDelete(TypedDict):
    """A delete the provider answered in part: when, and what it said was not deleted."""

    at: str
    error: JSONValue


class ReceiptPolicy(TypedDict, total=False):
    """The policy in force when the job was archived (empty for a job archived before it was
    recorded)."""

    retain_days: int | None
    due_at: str | None
    due_reason: str | None


class Receipt(TypedDict):
    """``deletion.json``: the provider's delete, confirmed, and what it left behind."""

    format: int
    provider: str
    provider_type: str
    job_id: str
    manifest_key: str
    delete_requested_at: str | None
    deleted_at: str
    provider_answer: JSONValue
    custom_bucket_objects_deleted: list[CustomObject]
    custom_bucket_objects_left: list[CustomObject]
    partial_deletes: list[PartialDelete]
    outputs_may_remain_at_provider: bool
    policy: ReceiptPolicy
    worker_version: str


@dataclass(frozen=True, slots=True)
class ManifestFile:
    key: str
    size: int
    sha256: str
    source: str
    # The object version that was verified, in a versioned bucket (restore reads that one).
    version_id: str | None = None


def build_manifest(
    *,
    provider: str,
    provider_type: str,
    job_id: str,
    archived_at: datetime,
    job: Mapping[str, JSONValue],
    files: Sequence[ManifestFile],
    revision: int = 1,
) -> Manifest:
    """A job's manifest. ``revision`` counts its archives: a job archived again after it
    changed at the provider gets a new manifest (``keys.manifest_key_for``) listing every file
    archived for it, earlier copies included."""
    return {
        "format": FORMAT,
        "revision": revision,
        "provider": provider,
        "provider_type": provider_type,
        "job_id": job_id,
        "archived_at": archived_at.isoformat(),
        "job": job,
        "files": [_file_entry(f) for f in files],
        "bytes": sum(f.size for f in files),
        "worker_version": __version__,
    }


def _file_entry(f: ManifestFile) -> FileEntry:
    entry: FileEntry = {"key": f.key, "size": f.size, "sha256": f.sha256, "source": f.source}
    if f.version_id and f.version_id != "null":
        entry["version_id"] = f.version_id
    return entry


def parse_manifest(
    document: JSONValue, *, provider: str, job_id: str, key: str
) -> list[ManifestFile]:
    """The files a manifest lists, after checking it is the manifest of this job."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise VerifyError(f"{key} is not a manifest this worker wrote")
    if document.get("provider") != provider or document.get("job_id") != job_id:
        raise VerifyError(
            f"{key} belongs to {document.get('provider')} job {document.get('job_id')}, "
            f"not {provider} job {job_id}"
        )
    files = document.get("files")
    if not isinstance(files, list):
        raise VerifyError(f"{key} has no list of files")
    parsed: list[ManifestFile] = []
    for entry in files:
        if not isinstance(entry, dict):
            raise VerifyError(f"{key} has a malformed file entry")
        name, size, sha256 = entry.get("key"), entry.get("size"), entry.get("sha256")
        if not (
            isinstance(name, str)
            and isinstance(size, int)
            and isinstance(sha256, str)
            and len(sha256) == 64
        ):
            raise VerifyError(f"{key} has a malformed file entry")
        version = entry.get("version_id")
        parsed.append(
            ManifestFile(
                name,
                size,
                sha256,
                str(entry.get("source")),
                version if isinstance(version, str) and version else None,
            )
        )
    return parsed


def build_receipt(
    *,
    provider: str,
    provider_type: str,
    job_id: str,
    manifest_key: str,
    delete_requested_at: datetime | None,
    deleted_at: datetime,
    answer: JSONValue,
    custom_objects_deleted: Sequence[CustomObject],
    custom_objects_left: Sequence[CustomObject] = (),
    policy: ReceiptPolicy | None = None,
    partial_deletes: Sequence[PartialDelete] = (),
) -> Receipt:
    return {
        "format": FORMAT,
        "provider": provider,
        "provider_type": provider_type,
        "job_id": job_id,
        "manifest_key": manifest_key,
        "delete_requested_at": delete_requested_at.isoformat() if delete_requested_at else None,
        "deleted_at": deleted_at.isoformat(),
        "provider_answer": answer,
        "custom_bucket_objects_deleted": list(custom_objects_deleted),
        # Objects in the user's own bucket that changed after they were archived: left there.
        "custom_bucket_objects_left": list(custom_objects_left),
        # Deletes the provider answered in part ({at, error}) before it answered that the
        # job was gone: what they left may remain at the provider.
        "partial_deletes": list(partial_deletes),
        "outputs_may_remain_at_provider": bool(partial_deletes),
        # The policy in force when the job was archived: retain_days, due_at, due_reason.
        "policy": policy or {},
        "worker_version": __version__,
    }


def same_job(existing: object, ours: Manifest | Receipt) -> bool:
    """Whether a document found at a key this job writes (``existing``, parsed) is this job's:
    the same provider and job id as ``ours``. Archived objects are never overwritten, so one
    an interrupted attempt left is kept only if it is."""
    return (
        isinstance(existing, dict)
        and existing.get("provider") == ours["provider"]
        and existing.get("job_id") == ours["job_id"]
    )
