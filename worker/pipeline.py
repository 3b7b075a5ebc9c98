"""The retention pipeline: sweep a provider, and carry each job from fresh status to receipt.

For one job (``process_job``), under a claim on its ledger row:

    read status fresh ─▶ terminal? due? not held? ─▶ fresh links ─▶ stream each file into S3,
    hashing ─▶ verify each object (fresh HEAD) ─▶ write the manifest ─▶ ARCHIVED
    ─▶ delete gate ─▶ provider DELETE ─▶ custom-bucket cleanup ─▶ receipt ─▶ DELETED

The one rule lives in ``delete_job``, the only function that calls a provider's delete. It
re-reads the manifest from the archive, checks every file it lists is still there unchanged,
and opens the ledger's delete gate (a single conditional UPDATE) before the call. Any error
before that point leaves the job at the provider and records why.

Every step is idempotent, so a job interrupted anywhere is resumed by the next sweep: files
already verified are not fetched again, a written manifest is not rewritten, and a delete
whose answer was lost is sent once more (the provider then answers "gone").
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from worker import metrics
from worker.domain import (
    FINAL_STATES,
    AlreadyGone,
    Artifact,
    BucketOrigin,
    DeleteAnswer,
    Deleted,
    DeletePending,
    JobGone,
    JobSnapshot,
    JobState,
    LinkOrigin,
    Phase,
    ProviderOrigin,
    Verdict,
    decide,
    due_at,
    is_terminal,
    retry_delay,
    terminal_since,
)
from worker.errors import (
    BadResponse,
    DeleteFailed,
    LedgerError,
    ProviderUnavailable,
    RateLimited,
    UnsafeInput,
    VerifyError,
    WorkerError,
)
from worker.fetch import Download, check_response
from worker.keys import MANIFEST_NAME, RECEIPT_NAME, archive_keys, job_folder
from worker.ledger import Candidate, FileRecord, JobRow, actor_name
from worker.logging import get_logger, scrubbed
from worker.manifest import ManifestFile, build_manifest, build_receipt, parse_manifest
from worker.providers.base import Provider
from worker.settings import ProviderPolicy

if TYPE_CHECKING:
    from worker.bootstrap import Runtime

log = get_logger("worker.pipeline")

CANDIDATE_BATCH = 500
# How long one run polls an asynchronous delete before deferring it to the next sweep.
ASYNC_DELETE_POLL_SECONDS = 60.0
# An asynchronous delete still pending after this long is suspect (the provider may have
# expired its result): the job itself is looked up instead.
ASYNC_DELETE_STALE = timedelta(hours=1)


class Outcome(enum.StrEnum):
    DELETED = "deleted"  # the provider confirmed the delete in this run
    ARCHIVED = "archived"  # archived; the delete was not attempted (read_only)
    GONE = "gone"  # vanished at the provider before it was archived
    NOT_TERMINAL = "not_terminal"
    NOT_DUE = "not_due"
    HELD = "held"
    BUSY = "busy"  # another worker holds the job's claim
    DONE = "done"  # deleted or gone in an earlier run
    DEFERRED = "deferred"  # a transient failure, or an asynchronous delete still running
    FAILED = "failed"  # a permanent failure: a person must look
    WOULD_DELETE = "would_delete"  # dry run: a real run would archive (if needed) and delete
    WOULD_ARCHIVE = "would_archive"  # dry run with read_only: a real run would only archive


SKIPPED = frozenset(
    {Outcome.NOT_TERMINAL, Outcome.NOT_DUE, Outcome.HELD, Outcome.BUSY, Outcome.DONE}
)
_VERDICT_OUTCOME = {
    Verdict.HELD: Outcome.HELD,
    Verdict.NOT_TERMINAL: Outcome.NOT_TERMINAL,
    Verdict.NOT_DUE: Outcome.NOT_DUE,
}


@dataclass
class JobResult:
    provider: str
    job_id: str
    outcome: Outcome
    archived: bool = False
    deleted: bool = False
    files: int = 0
    bytes: int = 0
    error: str | None = None
    # Dry run: what a real run would store, as (key, source, declared size).
    plan: list[dict[str, Any]] = field(default_factory=list)
    due_at: datetime | None = None
    duration_ms: int = 0


@dataclass
class SweepReport:
    provider: str
    dry_run: bool = False
    busy: bool = False
    listed: int = 0
    new: int = 0
    dispatched: int = 0
    stopped_reason: str | None = None
    listing_error: str | None = None
    listing_failed_permanently: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    bytes_archived: int = 0
    duration_ms: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, result: JobResult) -> None:
        with self._lock:
            self.counts[result.outcome] += 1
            if result.archived:
                self.counts["archived_now"] += 1
            if result.deleted:
                self.counts["deleted_now"] += 1
            self.bytes_archived += result.bytes if result.archived else 0

    def summary(self) -> dict[str, Any]:
        c = self.counts
        return {
            "provider": self.provider,
            "dry_run": self.dry_run,
            "archived": c["archived_now"],
            "deleted": c["deleted_now"],
            "deferred": c[Outcome.DEFERRED],
            "failed": c[Outcome.FAILED],
            "skipped": sum(c[o] for o in SKIPPED),
            "gone": c[Outcome.GONE],
            "would_archive": c[Outcome.WOULD_ARCHIVE] + c[Outcome.WOULD_DELETE],
            "would_delete": c[Outcome.WOULD_DELETE],
            "bytes": self.bytes_archived,
            "listed": self.listed,
            "dispatched": self.dispatched,
            "busy": self.busy,
            "stopped_reason": self.stopped_reason,
            "listing_error": self.listing_error,
            "duration_ms": self.duration_ms,
            "skipped_by_reason": {o.value: c[o] for o in sorted(SKIPPED) if c[o]},
        }


def merge_summaries(reports: list[SweepReport]) -> dict[str, Any]:
    """One summary for a sweep over several providers: the counts added up."""
    total: dict[str, Any] = {
        "archived": 0,
        "deleted": 0,
        "deferred": 0,
        "failed": 0,
        "skipped": 0,
        "gone": 0,
        "would_archive": 0,
        "would_delete": 0,
        "bytes": 0,
    }
    for report in reports:
        summary = report.summary()
        for key in total:
            total[key] += summary[key]
    total["dry_run"] = any(r.dry_run for r in reports)
    total["providers"] = {r.provider: r.summary() for r in reports}
    return total


# -- leases that stay alive while work runs -------------------------------------------------


class Heartbeat:
    """Renews a lease every ``interval`` seconds until stopped; ``lost`` is set if it fails."""

    def __init__(self, renew: Callable[[], bool], interval: float) -> None:
        self._renew = renew
        self._interval = interval
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-heartbeat")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                renewed = self._renew()
            except Exception:  # a database hiccup: try again at the next beat
                log.warning("lease_renew_failed", exc_info=True)
                continue
            if not renewed:
                self.lost.set()
                return


class Claim:
    """A job's row, claimed by this worker for the duration of a ``with`` block."""

    def __init__(self, rt: Runtime, provider: str, job_id: str) -> None:
        self.rt = rt
        self.provider = provider
        self.job_id = job_id
        self.owner = f"{actor_name()}:{uuid.uuid4().hex[:12]}"
        self.row: JobRow | None = None
        self._heartbeat: Heartbeat | None = None

    def __enter__(self) -> Claim:
        ledger = self.rt.ledger
        ttl = timedelta(seconds=self.rt.settings.worker.job_lease_seconds)
        self.row = ledger.claim(
            self.provider, self.job_id, owner=self.owner, ttl=ttl, now=self.rt.clock()
        )
        if self.row is not None:
            pk = self.row.pk
            self._heartbeat = Heartbeat(
                lambda: ledger.renew(pk, owner=self.owner, ttl=ttl, now=self.rt.clock()),
                interval=ttl.total_seconds() / 5,
            ).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._heartbeat is not None:
            self._heartbeat.__exit__()
        if self.row is not None:
            try:
                self.rt.ledger.release(self.row.pk, owner=self.owner)
            except Exception:  # the lease expires by itself; never mask the real outcome
                log.warning(
                    "claim_release_failed",
                    provider=self.provider,
                    job_id=self.job_id,
                    exc_info=True,
                )

    def check(self) -> None:
        if self._heartbeat is not None and self._heartbeat.lost.is_set():
            raise LedgerError(
                "this worker lost its claim on the job while working on it",
                provider=self.provider,
                job_id=self.job_id,
                hint="Another worker will finish it",
            )

    @property
    def current(self) -> JobRow:
        assert self.row is not None
        return self.row


# -- one job -------------------------------------------------------------------------------


def process_job(rt: Runtime, provider_name: str, job_id: str) -> JobResult:
    """Carry one job as far as it may go now. Never raises for the job's own failures."""
    started = time.monotonic()
    policy = rt.settings.policy(provider_name)
    provider = rt.provider(provider_name)
    result = JobResult(provider_name, job_id, Outcome.BUSY)
    with Claim(rt, provider_name, job_id) as claim:
        if claim.row is not None:
            # _advance fills in this result as it goes, so a failure after the archive step
            # still reports what was archived.
            result.outcome = Outcome.DONE
            try:
                _advance(rt, provider, policy, claim, result)
            except WorkerError as exc:
                result = _record_failure(rt, claim, exc.for_job(provider_name, job_id), result)
            except Exception as exc:  # a bug must defer the job, never crash the sweep
                log.exception("job_crashed", provider=provider_name, job_id=job_id)
                error = WorkerError(
                    f"unexpected {type(exc).__name__}: {exc}", provider=provider_name, job_id=job_id
                )
                result = _record_failure(rt, claim, error, result)
    result.duration_ms = int((time.monotonic() - started) * 1000)
    _log_result(result, claim.row.state if claim.row else None)
    due_seconds = None
    if result.deleted and claim.row is not None and claim.row.terminal_at is not None:
        due = due_at(claim.row.terminal_at, policy.retain_days)
        due_seconds = (rt.clock() - due).total_seconds()
    metrics.record_job(result, due_seconds=due_seconds)
    return result


def _log_result(result: JobResult, state: JobState | None) -> None:
    event = log.warning if result.outcome in (Outcome.FAILED, Outcome.DEFERRED) else log.info
    event(
        "job_finished",
        provider=result.provider,
        job_id=result.job_id,
        outcome=result.outcome.value,
        state=state.value if state else None,
        archived=result.archived,
        deleted=result.deleted,
        files=result.files,
        bytes=result.bytes,
        duration_ms=result.duration_ms,
        error=result.error,
    )


def _record_failure(rt: Runtime, claim: Claim, exc: WorkerError, result: JobResult) -> JobResult:
    row = claim.current
    now = rt.clock()
    message = str(exc)
    past_gate = row.state in (JobState.DELETING, JobState.CLEANING)
    try:
        if exc.permanent and not past_gate:
            rt.ledger.fail(row, message, owner=claim.owner, now=now)
            result.outcome = Outcome.FAILED
        else:
            delay = retry_delay(row.attempts + 1)
            if isinstance(exc, RateLimited) and exc.retry_after:
                delay = max(delay, timedelta(seconds=exc.retry_after))
            rt.ledger.defer(row, message, owner=claim.owner, now=now, retry_at=now + delay)
            result.outcome = Outcome.DEFERRED
    except LedgerError:
        # We lost the claim; whoever holds it now records the job's fate.
        result.outcome = Outcome.BUSY
    result.error = message
    return result


def _advance(
    rt: Runtime, provider: Provider, policy: ProviderPolicy, claim: Claim, result: JobResult
) -> JobResult:
    row = claim.current
    if row.held:
        result.outcome = Outcome.HELD
        return result
    if row.state in FINAL_STATES:
        return result
    if row.state == JobState.FAILED:
        result.outcome = Outcome.DONE
        result.error = row.last_error
        return result

    if row.state == JobState.PENDING:
        snapshot = provider.get_job(row.job_id)
        now = rt.clock()
        if isinstance(snapshot, JobGone):
            rt.ledger.mark_gone(row, dict(snapshot.answer), owner=claim.owner, now=now)
            log.info("job_gone", provider=policy.name, job_id=row.job_id)
            result.outcome = Outcome.GONE
            return result
        row = claim.row = rt.ledger.record_status(row, snapshot, owner=claim.owner, now=now)
        verdict = decide(
            phase=snapshot.phase,
            since=row.terminal_at,
            held=row.held,
            retain_days=policy.retain_days,
            now=now,
        )
        log.info(
            "job_status",
            provider=policy.name,
            job_id=row.job_id,
            status=snapshot.status,
            phase=snapshot.phase.value,
            verdict=verdict.value,
            due_at=due_at(row.terminal_at, policy.retain_days).isoformat()
            if row.terminal_at
            else None,
        )
        if snapshot.phase == Phase.UNKNOWN:
            # Never terminal, never silent: a status word we do not know is worth a person's
            # look (the vendor may have added one), and the job is looked at again later.
            raise BadResponse(
                f"status {snapshot.status!r} is not one this worker knows",
                hint="It is never treated as terminal; the job stays at the provider and is "
                "checked again later",
            )
        if verdict != Verdict.ACT:
            result.outcome = _VERDICT_OUTCOME[verdict]
            return result
        files = archive_job(rt, provider, claim, snapshot)
        row = claim.current
        result.archived = True
        result.files = len(files)
        result.bytes = sum(f.size for f in files)

    if policy.read_only:
        log.info("delete_skipped_read_only", provider=policy.name, job_id=row.job_id)
        result.outcome = Outcome.ARCHIVED
        return result

    if row.state in (JobState.ARCHIVED, JobState.DELETING):
        row = delete_job(rt, provider, claim)
        if row.state == JobState.DELETING:  # an asynchronous delete still running
            result.outcome = Outcome.DEFERRED
            result.error = "the provider is still carrying out the delete"
            rt.ledger.defer(
                row,
                result.error,
                owner=claim.owner,
                now=rt.clock(),
                retry_at=rt.clock() + retry_delay(1),
            )
            return result

    if row.state == JobState.CLEANING:
        finish_deletion(rt, provider, claim)
        result.deleted = True
        result.outcome = Outcome.DELETED
    return result


# -- archive -------------------------------------------------------------------------------


def archive_job(
    rt: Runtime, provider: Provider, claim: Claim, snapshot: JobSnapshot
) -> list[FileRecord]:
    """Store and verify every file the delete would destroy, then write the manifest."""
    row = claim.current
    name = provider.name
    folder = job_folder(rt.settings.archive.prefix, name, row.job_id)
    artifacts = provider.artifacts(snapshot)
    keys = archive_keys(folder, [a.name for a in artifacts])
    known = rt.ledger.files(row.pk)
    records: list[FileRecord] = []
    for artifact, key in zip(artifacts, keys, strict=True):
        claim.check()
        record = known.get(key)
        if record is not None and _still_archived(rt, record, artifact):
            records.append(record)
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
        rt.ledger.record_file(row, record, owner=claim.owner, now=rt.clock())
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
        records.append(record)
    claim.check()
    now = rt.clock()
    manifest_key = folder + MANIFEST_NAME
    manifest = build_manifest(
        provider=name,
        provider_type=provider.type,
        job_id=row.job_id,
        archived_at=now,
        job=scrubbed(dict(snapshot.record)),
        files=[ManifestFile(r.key, r.size, r.sha256, r.source) for r in records],
    )
    # A manifest this job wrote in an interrupted earlier attempt is kept if it lists the same
    # files (archived objects are never overwritten).
    rt.archive.put_json(
        manifest_key,
        manifest,
        same=lambda existing: (
            _same_job(existing, manifest) and existing.get("files") == manifest["files"]
        ),
    )
    claim.row = rt.ledger.mark_archived(
        row, owner=claim.owner, manifest_key=manifest_key, files=records, now=now
    )
    log.info(
        "manifest_written",
        provider=name,
        job_id=row.job_id,
        key=manifest_key,
        files=len(records),
        bytes=sum(r.size for r in records),
    )
    return records


def _same_job(existing: Any, ours: dict[str, Any]) -> bool:
    return (
        isinstance(existing, dict)
        and existing.get("provider") == ours["provider"]
        and existing.get("job_id") == ours["job_id"]
    )


def _still_archived(rt: Runtime, record: FileRecord, artifact: Artifact) -> bool:
    if artifact.size is not None and artifact.size != record.size:
        return False
    return rt.archive.exists_unchanged(
        record.key, size=record.size, etag=record.etag, version_id=record.version_id
    )


def store_artifact(rt: Runtime, provider: Provider, artifact: Artifact, key: str) -> FileRecord:
    """Stream (or copy) one artifact into ``key``; the archive verifies what it stored."""
    origin = artifact.origin
    archive = rt.archive
    if isinstance(origin, BucketOrigin):
        client, same_endpoint = rt.source_client(provider.name)
        if same_endpoint:
            stored = archive.copy_in(origin.bucket, origin.key, key)
        else:
            with archive.open_source(origin.bucket, origin.key, client) as (chunks, size, ctype):
                stored = archive.store_stream(key, chunks, size_hint=size, content_type=ctype)
        if artifact.size is not None and stored.size != artifact.size:
            raise VerifyError(
                f"{artifact.source} holds {stored.size} bytes; the provider "
                f"declared {artifact.size}"
            )
        return FileRecord(
            key,
            stored.size,
            stored.sha256,
            artifact.source,
            stored.etag,
            stored.version_id,
            origin.bucket,
            origin.key,
        )
    if isinstance(origin, LinkOrigin):
        opener = rt.fetcher.open(origin.url, expected_size=artifact.size)
    elif isinstance(origin, ProviderOrigin):
        opener = _open_provider_artifact(rt, provider, artifact)
    else:  # pragma: no cover - the Origin union is closed
        raise UnsafeInput(f"unknown origin {type(origin).__name__}")
    with opener as download:
        stored = archive.store_stream(
            key,
            download.chunks(),
            size_hint=download.size_hint,
            content_type=download.content_type,
            content_encoding=download.content_encoding,
        )
    return FileRecord(
        key, stored.size, stored.sha256, artifact.source, stored.etag, stored.version_id, None, None
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


# -- the delete ----------------------------------------------------------------------------


def delete_job(rt: Runtime, provider: Provider, claim: Claim) -> JobRow:
    """The only caller of a provider's delete.

    It calls it only when all of these hold, in this order:
    1. the ledger shows the job ARCHIVED (or DELETING: a delete whose answer was lost) with a
       manifest key;
    2. that manifest, read fresh from the archive, is this job's, and every file it lists is
       in the ledger with the same size and SHA-256, and is still in the bucket unchanged;
    3. the ledger's delete gate opens: one conditional UPDATE that also requires the job not
       held and still claimed by this worker.
    """
    # Checked again even when resending a delete whose answer was lost: if that first request
    # never arrived, the provider still holds the only other copy.
    files = _recheck_archive(rt, provider, claim)
    resend = claim.current.state == JobState.DELETING
    claim.check()
    now = rt.clock()
    row = claim.row = rt.ledger.open_delete_gate(claim.current, owner=claim.owner, now=now)
    if row.delete_handle:
        answer = _poll(rt, provider, claim, row.delete_handle)
    else:
        log.info(
            "delete_requested",
            provider=provider.name,
            job_id=row.job_id,
            manifest_key=row.manifest_key,
            files=len(files),
            resend=resend,
        )
        answer = provider.delete(row.job_id)
    deadline = time.monotonic() + ASYNC_DELETE_POLL_SECONDS
    pause = 1.0
    while isinstance(answer, DeletePending):
        if row.delete_handle != answer.handle:
            row = claim.row = rt.ledger.record_delete_pending(
                row, answer.handle, _answer_record(answer), owner=claim.owner, now=rt.clock()
            )
        if time.monotonic() + pause > deadline:
            return row
        time.sleep(pause)
        pause = min(pause * 2, 15.0)
        claim.check()
        answer = _poll(rt, provider, claim, answer.handle)
    row = claim.row = rt.ledger.record_provider_deleted(
        row, _answer_record(answer), owner=claim.owner, now=rt.clock()
    )
    level = log.warning if isinstance(answer, Deleted) and answer.warning else log.info
    level(
        "provider_deleted",
        provider=provider.name,
        job_id=row.job_id,
        status_code=answer.status_code,
        already_gone=isinstance(answer, AlreadyGone),
        warning=answer.warning if isinstance(answer, Deleted) else None,
    )
    return row


def _poll(rt: Runtime, provider: Provider, claim: Claim, handle: str) -> DeleteAnswer:
    """One poll of an asynchronous delete; a spent or stale handle is dropped, so the next
    attempt sends a new delete (after the archive is checked again)."""
    row = claim.current
    try:
        answer = provider.poll_delete(row.job_id, handle)
    except DeleteFailed as exc:
        claim.row = rt.ledger.forget_delete_handle(row, str(exc), owner=claim.owner, now=rt.clock())
        raise
    asked = row.delete_requested_at
    if not isinstance(answer, DeletePending) or asked is None:
        return answer
    if rt.clock() - asked < ASYNC_DELETE_STALE:
        return answer
    current = provider.get_job(row.job_id)
    if isinstance(current, JobGone):
        return AlreadyGone(status_code=404, body=dict(current.answer))
    reason = f"the delete was still pending {rt.clock() - asked} after it was asked for"
    claim.row = rt.ledger.forget_delete_handle(row, reason, owner=claim.owner, now=rt.clock())
    raise ProviderUnavailable(reason, hint="A new delete is sent on the next attempt")


def _recheck_archive(rt: Runtime, provider: Provider, claim: Claim) -> list[ManifestFile]:
    """Read the manifest fresh and check every file it lists is still stored as verified.

    If anything vanished, the job goes back to be archived again (the provider still has it)
    and the delete waits: VerifyError.
    """
    row = claim.current
    if row.manifest_key is None:  # the gate checks this too; say it clearly here
        raise LedgerError(
            "the job has no manifest on record", provider=provider.name, job_id=row.job_id
        )
    document = rt.archive.get_json(row.manifest_key)
    if document is None:
        missing, files = [row.manifest_key], []
    else:
        files = parse_manifest(
            document, provider=provider.name, job_id=row.job_id, key=row.manifest_key
        )
        records = rt.ledger.files(row.pk)
        missing = []
        for entry in files:
            record = records.get(entry.key)
            if record is None or record.size != entry.size or record.sha256 != entry.sha256:
                raise VerifyError(
                    f"the manifest lists {entry.key}, which the ledger does not "
                    "record as verified with that size and SHA-256",
                    permanent=True,
                    hint="Investigate before deleting anything",
                )
            if not rt.archive.exists_unchanged(
                entry.key, size=record.size, etag=record.etag, version_id=record.version_id
            ):
                missing.append(entry.key)
    if missing:
        reason = f"{len(missing)} archived object(s) vanished: {', '.join(missing[:3])}"
        if row.state != JobState.ARCHIVED:
            raise VerifyError(
                reason,
                hint="A delete was already sent, so the job cannot be "
                "archived again; restore the objects (bucket versions) and the "
                "delete will be confirmed on the next sweep",
            )
        claim.row = rt.ledger.reopen(row, missing, reason, owner=claim.owner, now=rt.clock())
        log.warning("archive_reopened", provider=provider.name, job_id=row.job_id, missing=missing)
        raise VerifyError(
            reason,
            hint="The job stays at the provider and will be archived "
            "again; check the bucket's lifecycle rules",
        )
    return files


def _answer_record(answer: Deleted | AlreadyGone | DeletePending) -> dict[str, Any]:
    record: dict[str, Any] = {
        "result": {Deleted: "deleted", AlreadyGone: "already_gone", DeletePending: "pending"}[
            type(answer)
        ],
        "status_code": answer.status_code,
        "body": scrubbed({"body": answer.body})["body"],
    }
    if isinstance(answer, Deleted) and answer.warning:
        record["warning"] = answer.warning
    if isinstance(answer, DeletePending):
        record["handle"] = answer.handle
    return record


def finish_deletion(rt: Runtime, provider: Provider, claim: Claim) -> None:
    """After the provider's delete: remove outputs from custom buckets, write the receipt."""
    row = claim.current
    client, _same = rt.source_client(provider.name)
    removed = []
    for record in rt.ledger.files(row.pk).values():
        if record.origin_bucket and record.origin_key:
            removed.append(
                rt.archive.delete_source(record.origin_bucket, record.origin_key, client)
            )
            log.info(
                "custom_object_deleted",
                provider=provider.name,
                job_id=row.job_id,
                bucket=record.origin_bucket,
                key=record.origin_key,
            )
    if removed:
        rt.ledger.audit_event(
            row, "custom_objects_deleted", {"objects": removed}, owner=claim.owner, now=rt.clock()
        )
    now = rt.clock()
    assert row.manifest_key is not None
    receipt_key = row.manifest_key[: -len(MANIFEST_NAME)] + RECEIPT_NAME
    receipt = build_receipt(
        provider=provider.name,
        provider_type=provider.type,
        job_id=row.job_id,
        manifest_key=row.manifest_key,
        delete_requested_at=row.delete_requested_at,
        deleted_at=row.provider_deleted_at or now,
        answer=row.delete_answer,
        custom_objects_deleted=removed,
    )
    rt.archive.put_json(receipt_key, receipt, same=lambda existing: _same_job(existing, receipt))
    rt.ledger.mark_deleted(row, receipt_key=receipt_key, owner=claim.owner, now=now)
    log.info("receipt_written", provider=provider.name, job_id=row.job_id, key=receipt_key)


# -- dry run -------------------------------------------------------------------------------


def plan_job(rt: Runtime, provider_name: str, job_id: str) -> JobResult:
    """What ``process_job`` would do now, read from the provider and the ledger; no writes."""
    policy = rt.settings.policy(provider_name)
    provider = rt.provider(provider_name)
    result = JobResult(provider_name, job_id, Outcome.DONE)
    row = rt.ledger.get(provider_name, job_id)
    now = rt.clock()
    final = Outcome.WOULD_ARCHIVE if policy.read_only else Outcome.WOULD_DELETE
    try:
        if row is not None and row.held:
            result.outcome = Outcome.HELD
            return result
        if row is not None and row.state in FINAL_STATES:
            return result
        if row is not None and row.state == JobState.FAILED:
            result.error = row.last_error
            return result
        if row is not None and row.state != JobState.PENDING:
            result.outcome = Outcome.ARCHIVED if policy.read_only else Outcome.WOULD_DELETE
            result.plan = [{"manifest": row.manifest_key}]
            return result
        snapshot = provider.get_job(job_id)
        if isinstance(snapshot, JobGone):
            result.outcome = Outcome.GONE
            return result
        since = None
        if is_terminal(snapshot.phase):
            first_seen = row.terminal_at if row and row.terminal_at else now
            since = terminal_since(snapshot.finished_at, first_seen)
            result.due_at = due_at(since, policy.retain_days)
        if snapshot.phase == Phase.UNKNOWN:
            result.outcome = Outcome.DEFERRED
            result.error = f"status {snapshot.status!r} is not one this worker knows"
            return result
        verdict = decide(
            phase=snapshot.phase, since=since, held=False, retain_days=policy.retain_days, now=now
        )
        if verdict != Verdict.ACT:
            result.outcome = _VERDICT_OUTCOME[verdict]
            return result
        artifacts = provider.artifacts(snapshot)
        folder = job_folder(rt.settings.archive.prefix, provider_name, job_id)
        keys = archive_keys(folder, [a.name for a in artifacts])
        result.plan = [
            {"key": key, "source": a.source, "size": a.size}
            for a, key in zip(artifacts, keys, strict=True)
        ]
        result.files = len(keys)
        result.outcome = final
    except WorkerError as exc:
        exc.for_job(provider_name, job_id)
        result.outcome = Outcome.FAILED if exc.permanent else Outcome.DEFERRED
        result.error = str(exc)
    return result


# -- sweeps --------------------------------------------------------------------------------


class _Runner:
    """Runs jobs on a bounded thread pool, so a sweep's memory does not grow with the backlog."""

    def __init__(
        self, concurrency: int, work: Callable[[str], JobResult], done: Callable[[JobResult], None]
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="job")
        self._slots = threading.BoundedSemaphore(concurrency * 2)
        self._work = work
        self._done = done

    def submit(self, job_id: str) -> None:
        self._slots.acquire()
        context = contextvars.copy_context()  # structlog's bound values follow the job
        future = self._pool.submit(context.run, self._work, job_id)

        def finished(f: Any) -> None:
            try:
                self._done(f.result())
            finally:
                self._slots.release()

        future.add_done_callback(finished)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def sweep_provider(
    rt: Runtime,
    provider_name: str,
    *,
    dispatch: Callable[[str], None] | None = None,
    on_result: Callable[[JobResult], None] | None = None,
    lease_ttl: timedelta | None = None,
) -> SweepReport:
    """One sweep of one provider account.

    Discovery folds the provider's listing into the ledger; then every candidate (a job
    due, resumable, or whose status must be read again) is processed here on a thread pool,
    or handed to ``dispatch`` (Celery fan-out). At most ``max_deletes_per_sweep`` candidates
    that may end in a delete are started; past that the sweep stops with a clear message.
    """
    started = time.monotonic()
    report = SweepReport(provider=provider_name, dry_run=rt.dry_run)
    policy = rt.settings.policy(provider_name)
    provider = rt.provider(provider_name)
    log.info("sweep_started", provider=provider_name, dry_run=rt.dry_run)
    if rt.dry_run:
        _dry_sweep(rt, provider, policy, report, on_result)
    else:
        if lease_ttl is None:
            lease_ttl = timedelta(seconds=rt.settings.worker.sweep_lease_seconds)
        lease = rt.sweep_lease(provider_name, lease_ttl)
        if not lease.acquire():
            report.busy = True
            log.info(
                "sweep_already_running",
                provider=provider_name,
                holder=lease.holder(),
                lease=lease.where,
            )
        else:
            try:
                with Heartbeat(lease.renew, interval=lease_ttl.total_seconds() / 3):
                    _real_sweep(rt, provider, policy, report, dispatch, on_result)
            finally:
                lease.release()
    report.duration_ms = int((time.monotonic() - started) * 1000)
    if not rt.dry_run:
        # A sweep "succeeds" when it ran its listing and dispatch; failed jobs are counted
        # apart. The dead-man's switch watches this timestamp.
        metrics.record_sweep(
            provider_name,
            seconds=report.duration_ms / 1000,
            succeeded=not report.busy and report.listing_error is None,
        )
    summary = report.summary()
    summary.pop("provider")
    log.info("sweep_finished", provider=provider_name, **summary)
    return report


def _discover(
    rt: Runtime, provider: Provider, report: SweepReport, page_seen: Callable[[list[Any]], None]
) -> None:
    try:
        for page in provider.list_jobs():
            report.listed += len(page)
            page_seen(page)
    except WorkerError as exc:
        report.listing_error = str(exc) if exc.provider else f"{provider.name}: {exc}"
        report.listing_failed_permanently = exc.permanent
        log.error(
            "listing_failed",
            provider=provider.name,
            error=report.listing_error,
            permanent=exc.permanent,
        )


class _Brake:
    """``max_deletes_per_sweep``, like rclone's --max-delete: past it, the sweep stops."""

    def __init__(self, provider: str, limit: int, report: SweepReport) -> None:
        self.provider = provider
        self.limit = limit
        self.report = report
        self.started = 0

    def allow(self, may_delete: bool) -> bool:
        if not may_delete:
            return True
        if self.started >= self.limit:
            if self.report.stopped_reason is None:
                self.report.stopped_reason = (
                    f"max_deletes_per_sweep ({self.limit}) reached; the remaining due jobs "
                    "wait for the next sweep. Raise max_deletes_per_sweep if this backlog is "
                    "expected"
                )
                log.warning("max_deletes_reached", provider=self.provider, limit=self.limit)
            return False
        self.started += 1
        return True


def _candidates(
    rt: Runtime, provider: str, *, start: datetime, cutoff: datetime, refreshed_since: datetime
) -> Iterator[Candidate]:
    """The ledger's candidates in primary-key batches, so memory stays flat at any backlog."""
    after = 0
    while True:
        batch = rt.ledger.candidates(
            provider,
            now=start,
            due_cutoff=cutoff,
            refreshed_since=refreshed_since,
            after_pk=after,
            limit=CANDIDATE_BATCH,
        )
        if not batch:
            return
        yield from batch
        after = batch[-1].pk


def _reporter(
    report: SweepReport, on_result: Callable[[JobResult], None] | None
) -> Callable[[JobResult], None]:
    def done(result: JobResult) -> None:
        report.add(result)
        if on_result is not None:
            on_result(result)

    return done


def _look_up_stale(
    rt: Runtime,
    provider: Provider,
    refreshed_since: datetime,
    fold: Callable[[list[Any]], None],
) -> None:
    """Read the status of jobs the listing did not cover, ``lookup_batch_size`` at a time.

    What a lookup does not return (or a lookup that fails) is left for ``process_job`` to read
    one by one; only that fresh read can decide a job is gone.
    """
    after = 0
    while True:
        rows = rt.ledger.stale(
            provider.name,
            refreshed_since=refreshed_since,
            now=rt.clock(),
            after_pk=after,
            limit=provider.lookup_batch_size,
        )
        if not rows:
            return
        after = rows[-1][0]
        asked = {job_id for _, job_id in rows}
        try:
            found = [item for item in provider.lookup(sorted(asked)) if item.job_id in asked]
        except WorkerError as exc:
            log.warning("lookup_failed", provider=provider.name, error=str(exc))
            return
        fold(found)


def _real_sweep(
    rt: Runtime,
    provider: Provider,
    policy: ProviderPolicy,
    report: SweepReport,
    dispatch: Callable[[str], None] | None,
    on_result: Callable[[JobResult], None] | None,
) -> None:
    listing_started = rt.clock()

    def fold(page: list[Any]) -> None:
        report.new += rt.ledger.record_listing(provider.name, page, rt.clock())
        # Listed as running: its status is fresh and it is not dispatched, but it was looked at.
        report.counts[Outcome.NOT_TERMINAL] += sum(i.phase == Phase.RUNNING for i in page)

    _discover(rt, provider, report, fold)
    if report.listed:
        log.info("jobs_discovered", provider=provider.name, listed=report.listed, new=report.new)
    if provider.lookup_batch_size:
        _look_up_stale(rt, provider, listing_started, fold)
    # The work set is frozen here, once discovery is done: a job that becomes due while the
    # sweep runs waits for the next sweep (GitLab's `expired_before(@start_at)`).
    start = rt.clock()
    cutoff = start - timedelta(days=policy.retain_days)
    brake = _Brake(provider.name, policy.max_deletes_per_sweep, report)
    runner = None
    if dispatch is None:
        runner = _Runner(
            policy.concurrency,
            lambda job_id: process_job(rt, provider.name, job_id),
            _reporter(report, on_result),
        )
        dispatch = runner.submit
    try:
        for candidate in _candidates(
            rt, provider.name, start=start, cutoff=cutoff, refreshed_since=listing_started
        ):
            if not brake.allow(candidate.may_delete):
                break
            report.dispatched += 1
            dispatch(candidate.job_id)
    finally:
        if runner is not None:
            runner.close()
    held, not_due = rt.ledger.waiting(provider.name, due_cutoff=cutoff)
    report.counts[Outcome.HELD] += held
    report.counts[Outcome.NOT_DUE] += not_due


def _dry_sweep(
    rt: Runtime,
    provider: Provider,
    policy: ProviderPolicy,
    report: SweepReport,
    on_result: Callable[[JobResult], None] | None,
) -> None:
    """The same decisions as a real sweep, read-only: the listing is planned page by page
    (it is not folded into the ledger), then the ledger's own candidates."""
    start = rt.clock()
    cutoff = start - timedelta(days=policy.retain_days)
    seen: set[str] = set()
    done = _reporter(report, on_result)
    brake = _Brake(provider.name, policy.max_deletes_per_sweep, report)
    runner = _Runner(policy.concurrency, lambda job_id: plan_job(rt, provider.name, job_id), done)

    def plan_page(page: list[Any]) -> None:
        for item in page:
            seen.add(item.job_id)
            row = rt.ledger.get(provider.name, item.job_id)
            if item.phase == Phase.RUNNING and (row is None or row.state == JobState.PENDING):
                held = row is not None and row.held
                done(
                    JobResult(
                        provider.name, item.job_id, Outcome.HELD if held else Outcome.NOT_TERMINAL
                    )
                )
            elif brake.allow(may_delete=True):
                runner.submit(item.job_id)

    try:
        _discover(rt, provider, report, plan_page)
        for candidate in _candidates(
            rt, provider.name, start=start, cutoff=cutoff, refreshed_since=start
        ):
            if candidate.job_id in seen:
                continue
            if not brake.allow(candidate.may_delete):
                break
            runner.submit(candidate.job_id)
    finally:
        runner.close()


def failed_permanently(reports: list[SweepReport]) -> bool:
    return any(r.counts[Outcome.FAILED] or r.listing_failed_permanently for r in reports)


__all__ = [
    "JobResult",
    "Outcome",
    "SweepReport",
    "delete_job",
    "merge_summaries",
    "plan_job",
    "process_job",
    "sweep_provider",
]
