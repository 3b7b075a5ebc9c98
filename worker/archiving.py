"""The archive step: every file the provider's delete would destroy, stored, verified and
listed in a manifest.

``archive_job`` is what the real run does (``job.JobRun``); ``archive_plan``, the keys it
would store each file at, is shared with the dry run, which reports them. A file kept from an
earlier archive is not fetched again; one the provider changed since is stored under
``rev-N/``, never over the earlier copy, and each manifest lists every file archived for the
job. Nothing here calls a provider's delete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from worker.domain import (
    Artifact,
    BucketOrigin,
    FreshRead,
    JobRow,
    JobSnapshot,
    LinkOrigin,
    OutputCheck,
    ProviderOrigin,
    Step,
    outputs_of,
)
from worker.errors import DownloadError, Kept, UnsafeInput, VerifyError
from worker.fetch import Download, check_response
from worker.keys import archive_keys, job_folder, manifest_key_for, revision_key
from worker.leases import Claim
from worker.ledger import FileRecord
from worker.logging import get_logger
from worker.manifest import ManifestFile, build_manifest, same_job
from worker.outputs import Output, Recorded, archived_outputs_json, recorded_outputs
from worker.providers.base import Provider
from worker.redact import scrubbed
from worker.settings import ProviderPolicy
from worker.source_bucket import SourceObject

if TYPE_CHECKING:
    from worker.bootstrap import Runtime

log = get_logger(__name__)


def listed(rt: Runtime, provider: Provider, job_id: str, read: FreshRead) -> FreshRead:
    """``read`` with what it lists worked out: the files the delete would destroy now, with
    fresh links, and each one's name and what the provider declares of it."""
    assert isinstance(read.answer, JobSnapshot)
    artifacts = tuple(provider.artifacts(read.answer))
    folder = job_folder(rt.settings.archive.prefix, provider.name, job_id)
    keys = archive_keys(folder, [a.name for a in artifacts])
    names = [key[len(folder) :] for key in keys]
    return dataclasses.replace(read, outputs=outputs_of(artifacts, names), artifacts=artifacts)


def archive_job(
    rt: Runtime,
    provider: Provider,
    claim: Claim,
    read: FreshRead,
    step: Step,
    policy: ProviderPolicy,
) -> FreshRead:
    """Store and verify every file the delete would destroy, then write the manifest, and
    record the policy that made the job due (``step``'s due time and reason).

    The job's first archive writes ``manifest.json``; a job archived again after it changed
    at the provider writes ``manifest.N.json`` beside the earlier ones, which stay. A file
    kept from an earlier archive is not fetched again; a file the provider changed since
    (another declared size, digest, ETag or version, or the job ran again) is stored under
    ``rev-N/`` and never over the earlier copy. Each manifest lists every file archived for
    the job. Returns ``read`` with what it lists, for the delete that may follow.
    """
    row = claim.current
    name = provider.name
    read, plan = archive_plan(rt, provider, row, read)
    assert read.outputs is not None
    folder = job_folder(rt.settings.archive.prefix, name, row.job_id)
    revision = row.archive_revision + 1
    known = rt.ledger.query.files(row.pk)
    records = _store_files(rt, provider, claim, plan, known)
    keys = {output.name: key for _, output, key in plan}
    # Files of an earlier archive that this read no longer lists (or lists changed) stay in
    # the bucket, and every manifest lists all of the job's files.
    every = [*records.values(), *(r for k, r in known.items() if k not in records)]
    claim.check()
    now = rt.clock()
    manifest_key = manifest_key_for(folder, revision)
    manifest = build_manifest(
        provider=name,
        provider_type=provider.type,
        job_id=row.job_id,
        archived_at=now,
        job=scrubbed(dict(read.answer.record)),  # type: ignore[union-attr]
        files=[ManifestFile(r.key, r.size, r.sha256, r.source, r.version_id) for r in every],
        revision=revision,
    )
    # A manifest this job wrote in an interrupted earlier attempt is kept if it lists the same
    # files (archived objects are never overwritten).
    stored = rt.archive.put_json(
        manifest_key,
        manifest,
        same=lambda existing: (
            same_job(existing, manifest) and existing.get("files") == manifest["files"]
        ),
    )
    outputs = archived_outputs_json(read.outputs, keys)
    claim.row = rt.ledger.jobs.mark_archived(
        row,
        owner=claim.owner,
        manifest_key=manifest_key,
        manifest_etag=stored.etag,
        manifest_version_id=stored.version_id,
        files=every,
        outputs=outputs,
        now=now,
        retain_days=policy.retain_days,
        due_at=step.due_at or row.due_at,
        due_reason=step.due_reason or row.due_reason,
    )
    log.info(
        "manifest_written",
        provider=name,
        job_id=row.job_id,
        key=manifest_key,
        revision=revision,
        files=len(every),
        bytes=sum(r.size for r in every),
    )
    return read


def _store_files(
    rt: Runtime,
    provider: Provider,
    claim: Claim,
    plan: list[tuple[Artifact, Output, str]],
    known: dict[str, FileRecord],
) -> dict[str, FileRecord]:
    """Store and verify each file of ``plan`` not already archived unchanged (``known``,
    the ledger's records by key), recording each in the ledger as it is verified."""
    row = claim.current
    name = provider.name
    records: dict[str, FileRecord] = {}
    for artifact, _output, key in plan:
        claim.check()
        record = known.get(key)
        if record is not None and _still_archived(rt, record, artifact):
            records[key] = record
            log.info(
                "file_already_archived",
                provider=name,
                job_id=row.job_id,
                key=key,
                bytes=record.size,
            )
            continue
        started = time.monotonic()
        record = store_artifact(rt, provider, artifact, key)
        rt.ledger.jobs.record_file(row, record, owner=claim.owner, now=rt.clock())
        log.info(
            "file_archived",
            provider=name,
            job_id=row.job_id,
            key=key,
            bytes=record.size,
            sha256=record.sha256,
            source=record.source,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        records[key] = record
    return records


def archive_plan(
    rt: Runtime, provider: Provider, row: JobRow | None, read: FreshRead
) -> tuple[FreshRead, list[tuple[Artifact, Output, str]]]:
    """Each file the read lists and the key it is archived at (``_key_for``): what the real
    run stores, and what the dry run reports. ``read`` is returned with what it lists."""
    job_id = row.job_id if row is not None else read.answer.job_id
    if read.outputs is None or read.artifacts is None:
        read = listed(rt, provider, job_id, read)
    assert read.outputs is not None
    assert read.artifacts is not None
    folder = job_folder(rt.settings.archive.prefix, provider.name, job_id)
    revision = (row.archive_revision if row is not None else 0) + 1
    previous = recorded_outputs(row.archived_outputs) if row is not None else None
    plan = [
        (artifact, output, _key_for(folder, output, (previous or {}).get(output.name), revision))
        for artifact, output in zip(read.artifacts, read.outputs, strict=True)
    ]
    return read, plan


def _key_for(folder: str, output: Output, earlier: Recorded | None, revision: int) -> str:
    """Where ``output`` is archived: its own key the first time, the earlier archive's key
    while the provider declares it unchanged, and a key of this revision once it changed."""
    if earlier is None:
        return folder + output.name
    if earlier.rerun or earlier.output.declared() != output.declared():
        return revision_key(folder, revision, output.name)
    return earlier.key


def _still_archived(rt: Runtime, record: FileRecord, artifact: Artifact) -> bool:
    if artifact.size is not None and artifact.size != record.size:
        return False
    if artifact.sha256 is not None and artifact.sha256 != record.sha256:
        return False
    return rt.archive.exists_unchanged(
        record.key, size=record.size, etag=record.etag, version_id=record.version_id
    )


def store_artifact(rt: Runtime, provider: Provider, artifact: Artifact, key: str) -> FileRecord:
    """Stream (or copy) one artifact into ``key``; the archive verifies what it stored."""
    origin = artifact.origin
    archive = rt.archive
    found: SourceObject | None = None
    if isinstance(origin, BucketOrigin):
        source = rt.source_bucket(provider.name)
        if source.same_endpoint:
            found = source.head(origin.bucket, origin.key)
            stored = archive.copy_from(found, key)
        else:
            with source.open(origin.bucket, origin.key) as (chunks, found):
                stored = archive.store_stream(
                    key, chunks, size_hint=found.size, content_type=found.content_type
                )
    else:
        if isinstance(origin, LinkOrigin):
            opener = rt.fetcher.open(origin.url, expected_size=artifact.size)
        elif isinstance(origin, ProviderOrigin):
            opener = _open_provider_artifact(rt, provider, artifact)
        else:  # pragma: no cover - the Origin union is closed
            raise UnsafeInput(f"unknown origin {type(origin).__name__}")
        try:
            with opener as download:
                chunks = download.chunks()
                if artifact.check is not None:
                    chunks = _checked(chunks, artifact.check, download.source)
                stored = archive.store_stream(
                    key,
                    chunks,
                    size_hint=download.size_hint,
                    content_type=download.content_type,
                    content_encoding=download.content_encoding,
                )
        except DownloadError as exc:
            verdict = None
            if artifact.check is not None and exc.status_code is not None:
                verdict = artifact.check.refused(exc.status_code)
            if verdict is None:
                raise
            raise verdict from None
    record = FileRecord(
        key=key,
        size=stored.size,
        sha256=stored.sha256,
        source=artifact.source,
        etag=stored.etag,
        version_id=stored.version_id,
    )
    if found is not None:
        # The user's own object as it was archived: cleanup removes that one only.
        record = dataclasses.replace(
            record,
            origin_bucket=found.bucket,
            origin_key=found.key,
            origin_etag=found.etag or None,
            origin_version_id=found.version_id,
        )
    _check_declared(artifact, record)
    return record


def _checked(chunks: Iterator[bytes], check: OutputCheck, source: str) -> Iterator[bytes]:
    """The whole body, once the adapter's check has passed it: nothing reaches the archive
    before, so a body the check refuses leaves nothing stored."""
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > check.max_bytes:
            raise DownloadError(
                f"{source} is larger than the {check.max_bytes} bytes its check reads",
                hint="Nothing was stored; the job waits for a person (`retention retry`)",
                permanent=True,
            )
    whole = bytes(body)
    del body
    check.check(whole)
    yield whole


def _check_declared(artifact: Artifact, record: FileRecord) -> None:
    """What was stored must be what the provider declared: its size, and its digest."""
    if artifact.size is not None and record.size != artifact.size:
        raise VerifyError(
            f"{artifact.source} holds {record.size} bytes; the provider declared {artifact.size}"
        )
    if artifact.sha256 is not None and record.sha256 != artifact.sha256.lower():
        raise Kept(
            f"the archived {artifact.name} has SHA-256 {record.sha256[:16]}..., but the "
            f"provider declares {artifact.sha256[:16]}... for it: nothing deleted",
            reason="hash_mismatch",
            hint="Compare the two by hand; the job stays at the provider until they agree",
        )


@contextlib.contextmanager
def _open_provider_artifact(
    rt: Runtime, provider: Provider, artifact: Artifact
) -> Iterator[Download]:
    deadline = time.monotonic() + rt.settings.downloads.max_seconds
    with provider.open_artifact(artifact) as response:
        check_response(response, artifact.source)
        yield Download(
            response, source=artifact.source, expected_size=artifact.size, deadline=deadline
        )
