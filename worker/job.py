"""One job, from a fresh status read to its deletion receipt, under a claim on its row.

    read status fresh ─▶ terminal? due? not held? ─▶ fresh links ─▶ stream each file into S3,
    hashing ─▶ verify each object (fresh HEAD) ─▶ write the manifest ─▶ ARCHIVED
    ─▶ a fresh read that lists nothing the archive lacks ─▶ delete gate ─▶ provider DELETE
    ─▶ custom-bucket cleanup ─▶ receipt ─▶ DELETED

``process_job`` has ``steps.drive`` carry out ``domain.next_step`` with a ``JobRun``, this
module's executor, until the job can go no further now; ``dry_run.DryRun`` is driven by the
same decisions and reports them instead.

The one rule lives in ``delete_job``, the only function that calls a provider's delete. It
sends one only on a read of the job taken under this claim, no older than
``max_read_age_seconds``, of a job still terminal whose outputs are all in the archive; it
re-reads the manifest from the archive, checks that it lists every file the ledger verified
and that each is still stored unchanged, opens the ledger's delete gate (one conditional
UPDATE, which also takes one delete from the sweep's budget), and sends the delete only
while this worker's claim surely holds and the read is still fresh. Any error before that
point leaves the job at the provider and records why.

Every step is idempotent, so a job interrupted anywhere is resumed by the next sweep: files
already verified are not fetched again, a written manifest is not rewritten, and a delete
whose answer was lost is sent once more after a fresh read (the provider then answers
"gone").
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from worker import metrics
from worker.archive import Verified
from worker.domain import (
    MAX_BACKOFF,
    AlreadyGone,
    Artifact,
    BucketOrigin,
    DeleteAnswer,
    Deleted,
    DeletePending,
    Event,
    FreshRead,
    JobGone,
    JobRow,
    JobSnapshot,
    JobState,
    LinkOrigin,
    OnError,
    Output,
    OutputCheck,
    ProviderOrigin,
    Recorded,
    Step,
    allows,
    archived_outputs_json,
    compare_outputs,
    due_at,
    on_error,
    outputs_of,
    recorded_outputs,
    retry_delay,
)
from worker.errors import (
    DeleteFailed,
    DeleteIncomplete,
    DownloadError,
    Kept,
    LedgerError,
    ProviderUnavailable,
    RateLimited,
    UnsafeInput,
    VerifyError,
    WorkerError,
)
from worker.exits import is_unreachable, outage
from worker.fetch import Download, check_response
from worker.keys import archive_keys, job_folder, manifest_key_for, receipt_key_for, revision_key
from worker.leases import Claim
from worker.ledger import FileRecord
from worker.logging import get_logger, scrubbed
from worker.manifest import (
    Manifest,
    ManifestFile,
    PartialDelete,
    Receipt,
    build_manifest,
    build_receipt,
    parse_manifest,
)
from worker.outcomes import JobResult, Outcome
from worker.providers.base import Provider, send_guard
from worker.settings import ProviderPolicy
from worker.source_bucket import SourceObject
from worker.steps import drive

if TYPE_CHECKING:
    from worker.bootstrap import Runtime

log = get_logger("worker.job")

# How long one run polls an asynchronous delete before deferring it to the next sweep.
ASYNC_DELETE_POLL_SECONDS = 60.0
# An asynchronous delete still pending after this long is suspect (the provider may have
# expired its result): the job itself is looked up instead.
ASYNC_DELETE_STALE = timedelta(hours=1)


def process_job(
    rt: Runtime, provider_name: str, job_id: str, *, budget: str | None = None
) -> JobResult:
    """Carry one job as far as it may go now. Never raises for the job's own failures.

    ``budget`` names the sweep's delete budget (``max_deletes_per_sweep``), taken from at the
    delete gate; None for a job processed outside a sweep.
    """
    started = time.monotonic()
    policy = rt.settings.policy(provider_name)
    provider = rt.provider(provider_name)
    result = JobResult(provider_name, job_id, Outcome.BUSY)
    ttl = timedelta(seconds=rt.settings.worker.job_lease_seconds)
    with Claim(rt.ledger, provider_name, job_id, ttl=ttl, clock=rt.clock) as claim:
        if claim.row is not None:
            # The run fills in the result as it goes, so a failure after the archive step
            # still reports what was archived.
            try:
                drive(JobRun(rt, provider, policy, claim, result, budget), policy, rt.clock)
            except WorkerError as exc:
                _record_failure(rt, claim, exc.for_job(provider_name, job_id), result)
            except Exception as exc:  # a bug must defer the job, never crash the sweep
                log.exception("job_crashed", provider=provider_name, job_id=job_id)
                error = WorkerError(
                    f"unexpected {type(exc).__name__}: {exc}", provider=provider_name, job_id=job_id
                )
                _record_failure(rt, claim, error, result)
    result.duration_ms = int((time.monotonic() - started) * 1000)
    row = claim.row
    _log_result(result, row.state if row else None)
    due_seconds = None
    if result.deleted and row is not None and row.terminal_at is not None:
        due_seconds = (rt.clock() - due_at(row.terminal_at, policy.retain_days)).total_seconds()
    metrics.record_job(result, due_seconds=due_seconds)
    return result


@dataclasses.dataclass
class JobRun:
    """The real run's executor (``steps.Executor``): each step carried out under the claim."""

    rt: Runtime
    provider: Provider
    policy: ProviderPolicy
    claim: Claim
    result: JobResult
    budget: str | None

    @property
    def row(self) -> JobRow:
        return self.claim.current

    def check(self) -> None:
        self.claim.check()

    def read(self) -> FreshRead:
        rt, claim = self.rt, self.claim
        answer = self.provider.get_job(claim.job_id)
        now = rt.clock()
        if isinstance(answer, JobSnapshot):
            claim.row = rt.ledger.jobs.record_status(
                claim.current, answer, owner=claim.owner, now=now
            )
            log.info(
                "job_status",
                provider=self.provider.name,
                job_id=claim.job_id,
                status=answer.status,
                phase=answer.phase.value,
            )
        return FreshRead(answer, at=now, owner=claim.owner)

    def list_outputs(self, read: FreshRead) -> FreshRead:
        try:
            return listed(self.rt, self.provider, self.claim.job_id, read)
        except Kept as exc:
            state = self.claim.current.state
            if state == JobState.DELETING:
                raise changed_after_delete(
                    "it names outputs the worker cannot archive", exc
                ) from exc
            if state == JobState.ARCHIVED:
                # The job changed at the provider since its archive, into something the worker
                # cannot archive: back before the archive, where it is kept with why.
                self._reopen(f"the job changed at the provider: {exc.message}")
            raise

    def skip(self, step: Step) -> None:
        assert step.outcome is not None
        result = self.result
        result.outcome = step.outcome
        result.error = step.reason if step.outcome != Outcome.HELD else None
        if step.outcome == Outcome.ARCHIVED and self.row.state == JobState.ARCHIVED:
            log.info(
                "delete_skipped_read_only", provider=self.policy.name, job_id=self.claim.job_id
            )

    def gone(self, read: FreshRead) -> None:
        assert isinstance(read.answer, JobGone)
        rt, claim = self.rt, self.claim
        claim.row = rt.ledger.jobs.mark_gone(
            claim.current, dict(read.answer.answer), owner=claim.owner, now=rt.clock()
        )
        log.info("job_gone", provider=self.policy.name, job_id=claim.job_id)
        self.result.outcome = Outcome.GONE

    def archive(self, step: Step, read: FreshRead) -> FreshRead:
        read = archive_job(self.rt, self.provider, self.claim, read, step, self.policy)
        self._archived()
        return read

    def reopen(self, step: Step, read: FreshRead) -> FreshRead:
        self._reopen(f"the job changed at the provider since its archive: {step.reason}")
        return read

    def amend(self, step: Step, read: FreshRead) -> FreshRead:
        """Past the gate, the provider lists something the archive lacks: archive it, or keep
        the job for a person. Its delete is never sent again without it."""
        try:
            read = archive_job(self.rt, self.provider, self.claim, read, step, self.policy)
        except WorkerError as exc:
            if not (isinstance(exc, Kept) or exc.permanent):
                raise  # transient: tried again later, still past the gate
            raise changed_after_delete(step.reason or "", exc) from exc
        self._archived()
        return read

    def delete(self, read: FreshRead | None) -> bool:
        row = delete_job(self.rt, self.provider, self.claim, read, budget=self.budget)
        if row.state != JobState.DELETING:
            return True
        # An asynchronous delete still running.
        result = self.result
        result.outcome = Outcome.DEFERRED
        result.error = "the provider is still carrying out the delete"
        rt, claim = self.rt, self.claim
        now = rt.clock()
        claim.row = rt.ledger.jobs.defer(
            row, result.error, owner=claim.owner, now=now, retry_at=now + retry_delay(1)
        )
        return False

    def finish(self) -> None:
        finish_deletion(self.rt, self.provider, self.claim)
        self.result.deleted = True
        self.result.outcome = Outcome.DELETED

    def _archived(self) -> None:
        row = self.claim.current
        self.result.archived = True
        self.result.files = row.files_count or 0
        self.result.bytes = row.bytes_archived or 0

    def _reopen(self, reason: str) -> None:
        rt, claim = self.rt, self.claim
        row = claim.current
        claim.row = rt.ledger.jobs.reopen(row, [], reason[:4000], owner=claim.owner, now=rt.clock())
        log.warning(
            "archive_reopened",
            provider=self.provider.name,
            job_id=row.job_id,
            reason=reason,
            old_manifest=row.manifest_key,
        )


def changed_after_delete(changes: str, cause: WorkerError) -> Kept:
    """A job whose delete may have been sent lists something its archive lacks, and it
    cannot be archived: the delete is not sent again, and a person must look."""
    return Kept(
        f"the job changed at the provider after its delete was sent ({changes}), and what is "
        f"new could not be archived: {cause.message}. Nothing more is deleted",
        reason="changed_after_delete",
        hint="Archive the new outputs by hand (or accept losing them with ignore_outputs), "
        "then run `retention retry`; the job is looked at again on a later sweep",
    )


def listed(rt: Runtime, provider: Provider, job_id: str, read: FreshRead) -> FreshRead:
    """``read`` with what it lists worked out: the files the delete would destroy now, with
    fresh links, and each one's name and what the provider declares of it."""
    assert isinstance(read.answer, JobSnapshot)
    artifacts = tuple(provider.artifacts(read.answer))
    folder = job_folder(rt.settings.archive.prefix, provider.name, job_id)
    keys = archive_keys(folder, [a.name for a in artifacts])
    names = [key[len(folder) :] for key in keys]
    return dataclasses.replace(read, outputs=outputs_of(artifacts, names), artifacts=artifacts)


def _log_result(result: JobResult, state: JobState | None) -> None:
    attention = (Outcome.FAILED, Outcome.DEFERRED, Outcome.KEPT, Outcome.STOPPED)
    event = log.warning if result.outcome in attention else log.info
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
        kept_reason=result.kept_reason,
    )


def _record_failure(rt: Runtime, claim: Claim, exc: WorkerError, result: JobResult) -> None:
    """Record why the job stopped, as ``domain.on_error`` says: kept, stopped by the brake,
    failed or deferred."""
    row = claim.current
    now = rt.clock()
    message = str(exc)
    result.error = message
    action = on_error(row.state, exc)
    try:
        if action == OnError.STOP:
            # The gate changed nothing: the job stays archived, due, and first in line.
            result.outcome = Outcome.STOPPED
        elif action == OnError.KEEP:
            assert isinstance(exc, Kept)
            keep = (
                rt.ledger.jobs.keep
                if allows(Event.KEEP, row.state)
                else rt.ledger.jobs.keep_past_gate
            )
            claim.row = keep(row, exc.reason, message, owner=claim.owner, now=now)
            result.outcome = Outcome.KEPT
            result.kept_reason = exc.reason
        elif action == OnError.FAIL:
            claim.row = rt.ledger.jobs.fail(row, message, owner=claim.owner, now=now)
            result.outcome = Outcome.FAILED
        else:
            delay = retry_delay(row.attempts + 1)
            if isinstance(exc, RateLimited) and exc.retry_after:
                # A provider's wait is honoured, never past the longest backoff: a broken
                # or hostile header must not park a job for years.
                asked = timedelta(seconds=min(exc.retry_after, MAX_BACKOFF.total_seconds()))
                delay = max(delay, asked)
            claim.row = rt.ledger.jobs.defer(
                row, message, owner=claim.owner, now=now, retry_at=now + delay
            )
            result.outcome = Outcome.DEFERRED
            # The provider or the archive could not be reached: the CLI's exit code 3.
            result.unreachable = is_unreachable(exc)
            # A store every job needs (the ledger, Redis) was out: the sweep stops (exits 3).
            result.outage = outage(exc)
    except LedgerError:
        # We lost the claim; whoever holds it now records the job's fate.
        result.outcome = Outcome.BUSY


# -- the archive ---------------------------------------------------------------------------


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
    records: dict[str, FileRecord] = {}
    keys: dict[str, str] = {}
    for artifact, output, key in plan:
        claim.check()
        keys[output.name] = key
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
            _same_job(existing, manifest) and existing.get("files") == manifest["files"]
        ),
    )
    outputs = archived_outputs_json(read.outputs, keys)
    write = rt.ledger.jobs.amend if row.state == JobState.DELETING else rt.ledger.jobs.mark_archived
    claim.row = write(
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


def _same_job(existing: Any, ours: Manifest | Receipt) -> bool:
    return (
        isinstance(existing, dict)
        and existing.get("provider") == ours["provider"]
        and existing.get("job_id") == ours["job_id"]
    )


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


# -- the delete ----------------------------------------------------------------------------


def delete_job(
    rt: Runtime,
    provider: Provider,
    claim: Claim,
    read: FreshRead | None,
    *,
    budget: str | None = None,
) -> JobRow:
    """The only caller of a provider's delete.

    It calls it only when all of these hold, in this order:
    1. ``read`` is a read of the job taken under this claim, no older than
       ``max_read_age_seconds``, of a job still terminal that lists no output the archive
       lacks (``domain.compare_outputs``): the manifest proves what the job held when it was
       archived, this read what it holds now (a delete already accepted and only followed
       needs none: nothing new is sent);
    2. the ledger shows the job ARCHIVED (or DELETING: a delete whose answer was lost) with a
       manifest key;
    3. the bucket, asked right now, still holds that manifest as it was written with the
       files the ledger recorded as verified (its recorded ETag and version; a manifest
       without them is read and matched file by file), and every one of those files with its
       verified size and ETag, at its verified version;
    4. the ledger's delete gate opens: one conditional UPDATE that also requires the job not
       held and still claimed by this worker, and takes one delete from the sweep's budget;
    5. right before the request leaves, this worker's claim surely still holds (a worker
       paused past its lease sends nothing), and the read is still fresh.
    """
    following = claim.current.state == JobState.DELETING and claim.current.delete_handle
    if not following:
        _hold_to_read(rt, claim, read)
    # Checked again even when resending a delete whose answer was lost: if that first request
    # never arrived, the provider still holds the only other copy.
    files = _recheck_archive(rt, provider, claim)
    resend = claim.current.state == JobState.DELETING
    claim.check()
    row = claim.row = rt.ledger.jobs.open_delete_gate(
        claim.current, owner=claim.owner, now=rt.clock(), budget=budget
    )
    answer: DeleteAnswer
    if row.delete_handle:
        answer = _poll(rt, provider, claim, row.delete_handle)
    elif read is not None and isinstance(read.answer, JobGone):
        # The read right before the delete found the job gone: there is nothing to send.
        log.info("delete_not_sent", provider=provider.name, job_id=row.job_id, why="gone")
        answer = AlreadyGone(status_code=404, body=dict(read.answer.answer))
    else:
        assert read is not None  # _hold_to_read refused a delete without one
        log.info(
            "delete_requested",
            provider=provider.name,
            job_id=row.job_id,
            manifest_key=row.manifest_key,
            files=len(files),
            resend=resend,
        )

        def still_safe() -> None:
            claim.check()
            _hold_to_read(rt, claim, read, what="right before the delete left")

        try:
            with send_guard(still_safe):
                answer = provider.delete(row.job_id)
        except DeleteIncomplete as exc:
            # Kept for the receipt: if the provider drops the job before a delete completes,
            # what this answer said was not deleted may still be at the provider.
            rt.ledger.jobs.audit_event(
                row, "delete_incomplete", {"error": exc.message}, owner=claim.owner, now=rt.clock()
            )
            raise
    deadline = time.monotonic() + ASYNC_DELETE_POLL_SECONDS
    pause = 1.0
    while isinstance(answer, DeletePending):
        if row.delete_handle != answer.handle:
            row = claim.row = rt.ledger.jobs.record_delete_pending(
                row, answer.handle, _answer_record(answer), owner=claim.owner, now=rt.clock()
            )
        if time.monotonic() + pause > deadline:
            return row
        time.sleep(pause)
        pause = min(pause * 2, 15.0)
        claim.check()
        answer = _poll(rt, provider, claim, answer.handle)
    row = claim.row = rt.ledger.jobs.record_provider_deleted(
        row, _answer_record(answer), owner=claim.owner, now=rt.clock()
    )
    log.info(
        "provider_deleted",
        provider=provider.name,
        job_id=row.job_id,
        status_code=answer.status_code,
        already_gone=isinstance(answer, AlreadyGone),
    )
    return row


def _hold_to_read(
    rt: Runtime, claim: Claim, read: FreshRead | None, *, what: str = "before the delete"
) -> None:
    """Raise unless ``read`` is one the delete may rest on (``delete_job``'s first rule). The
    step driver only asks for a delete on such a read: this is the rule kept where it is
    used, so no other path can reach the provider's delete without it."""
    row = claim.current
    policy = rt.settings.policy(row.provider)
    problem = None
    if read is None or read.owner != claim.owner:
        problem = "no read of the job was taken under this claim"
    elif not read.fresh(policy, rt.clock()):
        problem = (
            f"the job was last read {read.age(rt.clock()).total_seconds():.0f} s ago, more "
            f"than max_read_age_seconds ({policy.max_read_age_seconds:g})"
        )
    elif isinstance(read.answer, JobGone):
        return  # nothing is sent: the job is closed as "already gone"
    elif not read.answer.terminal:
        problem = "the last read does not show the job finished"
    elif read.outputs is None:
        problem = "what the last read lists was not compared with the archive"
    else:
        changes = compare_outputs(row.archived_outputs, read.outputs)
        if changes.new_at_provider or (row.state == JobState.ARCHIVED and changes.any):
            problem = f"the last read differs from the archive ({changes.describe()})"
    if problem is not None:
        raise WorkerError(
            f"the delete was not sent {what}: {problem}",
            provider=row.provider,
            job_id=row.job_id,
            hint="The job stays at the provider and is read again on a later attempt",
        )


def _poll(rt: Runtime, provider: Provider, claim: Claim, handle: str) -> DeleteAnswer:
    """One poll of an asynchronous delete; a spent or stale handle is dropped, so the next
    attempt sends a new delete (after the archive is checked again)."""
    row = claim.current
    try:
        answer = provider.poll_delete(row.job_id, handle)
    except DeleteFailed as exc:
        claim.row = rt.ledger.jobs.forget_delete_handle(
            row, str(exc), owner=claim.owner, now=rt.clock()
        )
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
    claim.row = rt.ledger.jobs.forget_delete_handle(row, reason, owner=claim.owner, now=rt.clock())
    raise ProviderUnavailable(reason, hint="A new delete is sent on the next attempt")


def _recheck_archive(rt: Runtime, provider: Provider, claim: Claim) -> list[ManifestFile]:
    """Check, against the bucket, that the manifest and every file are stored as verified.

    The manifest must be the one this job wrote when the ledger recorded its files as
    verified: the ledger keeps its ETag and version, written in the same step as the files,
    so a manifest found with that identity lists exactly those files. One found otherwise
    (or one archived before the ledger kept its identity) is read and matched against the
    ledger: one that lists fewer files keeps the gate shut. The server must also still hold
    each file with its verified size and ETag, at its verified version. One listing of the
    job's folder answers for all of them, or a HEAD each (``[archive] gate_check``). If
    anything vanished, the job goes back to be archived again (the provider still has it)
    and the delete waits: VerifyError.
    """
    row = claim.current
    if row.manifest_key is None:  # the gate checks this too; say it clearly here
        raise LedgerError(
            "the job has no manifest on record", provider=provider.name, job_id=row.job_id
        )
    records = rt.ledger.query.files(row.pk)
    expected = [Verified(r.key, r.size, r.etag, r.version_id) for r in records.values()]
    files = [
        ManifestFile(r.key, r.size, r.sha256, r.source, r.version_id) for r in records.values()
    ]
    if row.manifest_etag is not None:
        expected.append(
            Verified(row.manifest_key, None, row.manifest_etag, row.manifest_version_id)
        )
    missing = rt.archive.missing(expected)
    if row.manifest_etag is None or row.manifest_key in missing:
        # No identity on record (archived by an earlier version), or the manifest is not the
        # one written: read what is there, and hold it to the ledger.
        missing = [key for key in missing if key != row.manifest_key]
        document = rt.archive.get_json(row.manifest_key)
        if document is None:
            _archive_lost(rt, provider, claim, [row.manifest_key, *missing])
        files = parse_manifest(
            document, provider=provider.name, job_id=row.job_id, key=row.manifest_key
        )
        _match_ledger(files, records, row.manifest_key)
    if missing:
        _archive_lost(rt, provider, claim, missing)
    return files


def _match_ledger(files: list[ManifestFile], records: dict[str, FileRecord], key: str) -> None:
    listed = {entry.key for entry in files}
    for entry in files:
        record = records.get(entry.key)
        if record is None or record.size != entry.size or record.sha256 != entry.sha256:
            raise VerifyError(
                f"the manifest lists {entry.key}, which the ledger does not "
                "record as verified with that size and SHA-256",
                permanent=True,
                hint="Investigate before deleting anything",
            )
    unlisted = sorted(set(records) - listed)
    if unlisted:
        raise VerifyError(
            f"the manifest {key} lists {len(files)} file(s), but the ledger verified "
            f"{len(records)}: {', '.join(unlisted[:3])} missing from it",
            permanent=True,
            hint="The delete gate stays shut; investigate before deleting anything",
        )


def _archive_lost(rt: Runtime, provider: Provider, claim: Claim, missing: list[str]) -> NoReturn:
    row = claim.current
    reason = f"{len(missing)} archived object(s) vanished: {', '.join(missing[:3])}"
    if row.state != JobState.ARCHIVED:
        raise VerifyError(
            reason,
            hint="A delete was already sent, so the job cannot be archived again; restore the "
            "objects (bucket versions) and the delete will be confirmed on the next sweep",
        )
    claim.row = rt.ledger.jobs.reopen(row, missing, reason, owner=claim.owner, now=rt.clock())
    log.warning("archive_reopened", provider=provider.name, job_id=row.job_id, missing=missing)
    raise VerifyError(
        reason,
        hint="The job stays at the provider and will be archived again; check the bucket's "
        "lifecycle rules",
    )


def _answer_record(answer: Deleted | AlreadyGone | DeletePending) -> dict[str, Any]:
    record: dict[str, Any] = {
        "result": {Deleted: "deleted", AlreadyGone: "already_gone", DeletePending: "pending"}[
            type(answer)
        ],
        "status_code": answer.status_code,
        "body": scrubbed({"body": answer.body})["body"],
    }
    if isinstance(answer, DeletePending):
        record["handle"] = answer.handle
    return record


def _partial_deletes(rt: Runtime, row: JobRow) -> list[PartialDelete]:
    """The deletes the provider answered in part, when it then answered that the job was
    gone: the job is closed (there is nothing left to delete through the API), but what those
    answers said was not deleted may remain at the provider. Read only in that case, so a
    clean delete costs no extra query."""
    answer = row.delete_answer
    if not isinstance(answer, Mapping) or answer.get("result") != "already_gone":
        return []
    return [
        {"at": event["at"].isoformat(), "error": event["detail"].get("error")}
        for event in rt.ledger.query.audit_trail(row.provider, row.job_id)
        if event["event"] == "delete_incomplete"
    ]


def finish_deletion(rt: Runtime, provider: Provider, claim: Claim) -> None:
    """After the provider's delete: remove outputs from custom buckets, write the receipt.

    Only the archived object is removed (its version, or its ETag): one written at the key
    since is left where it is, and the receipt and the log say so.
    """
    row = claim.current
    source = rt.source_bucket(provider.name)
    removals = [
        source.remove(
            record.origin_bucket,
            record.origin_key,
            etag=record.origin_etag,
            version_id=record.origin_version_id,
        )
        for record in rt.ledger.query.files(row.pk).values()
        if record.origin_bucket and record.origin_key
    ]
    for removal in removals:
        (log.info if removal.removed else log.warning)(
            "custom_object_deleted" if removal.removed else "custom_object_left",
            provider=provider.name,
            job_id=row.job_id,
            bucket=removal.bucket,
            key=removal.key,
            reason=removal.left_because,
        )
    removed = [r.receipt_entry() for r in removals if r.removed]
    left = [r.receipt_entry() for r in removals if not r.removed]
    if removals:
        rt.ledger.jobs.audit_event(
            row,
            "custom_objects_deleted",
            {"objects": removed, "left": left},
            owner=claim.owner,
            now=rt.clock(),
        )
    partial = _partial_deletes(rt, row)
    if partial:
        metrics.record_closed_with_remains(provider.name)
        log.warning(
            "provider_dropped_job_after_partial_delete",
            provider=provider.name,
            job_id=row.job_id,
            partial_deletes=len(partial),
            hint="Outputs the partial delete left may remain at the provider; ask its support",
        )
    now = rt.clock()
    assert row.manifest_key is not None
    receipt_key = receipt_key_for(row.manifest_key)
    receipt = build_receipt(
        provider=provider.name,
        provider_type=provider.type,
        job_id=row.job_id,
        manifest_key=row.manifest_key,
        delete_requested_at=row.delete_requested_at,
        deleted_at=row.provider_deleted_at or now,
        answer=row.delete_answer,
        custom_objects_deleted=removed,
        custom_objects_left=left,
        partial_deletes=partial,
        policy={
            "retain_days": row.retain_days,
            "due_at": row.due_at.isoformat() if row.due_at else None,
            "due_reason": row.due_reason,
        },
    )
    rt.archive.put_json(receipt_key, receipt, same=lambda existing: _same_job(existing, receipt))
    claim.row = rt.ledger.jobs.mark_deleted(
        row, receipt_key=receipt_key, owner=claim.owner, now=now
    )
    log.info("receipt_written", provider=provider.name, job_id=row.job_id, key=receipt_key)
