"""The delete: the one place a provider's delete is called, and the receipt after it.

The one rule lives in ``delete_job``, the only function that calls a provider's delete. It
sends one only on a read of the job taken under this claim, no older than
``max_read_age_seconds``, of a job still terminal whose outputs are all in the archive; it
re-reads the manifest from the archive, checks that it lists every file the ledger verified
and that each is still stored unchanged, opens the ledger's delete gate (one conditional
UPDATE, which also takes one delete from the sweep's budget), and sends the delete only
while this worker's claim surely holds and the read is still fresh. Any error before that
point leaves the job at the provider and records why.

A delete whose answer was lost is sent once more after a fresh read (the provider then
answers "gone"); an asynchronous one is followed (``_poll``). ``finish_deletion`` removes
what was archived from the user's own buckets and writes the receipt. The step driver
(``job.JobRun``) calls both; nothing else does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from worker.archive import Verified
from worker.domain import (
    AlreadyGone,
    DeleteAnswer,
    Deleted,
    DeletePending,
    FreshRead,
    JobGone,
    JobRow,
    JobState,
)
from worker.errors import (
    DeleteFailed,
    DeleteIncomplete,
    LedgerError,
    ProviderUnavailable,
    VerifyError,
    WorkerError,
)
from worker.keys import receipt_key_for
from worker.leases import Claim
from worker.ledger import FileRecord
from worker.logging import get_logger
from worker.manifest import ManifestFile, PartialDelete, build_receipt, parse_manifest, same_job
from worker.metrics import recorders
from worker.outputs import compare_outputs
from worker.providers.base import Provider, send_guard
from worker.redact import scrubbed

if TYPE_CHECKING:
    from worker.bootstrap import Runtime

log = get_logger(__name__)


# How long one run polls an asynchronous delete before deferring it to the next sweep.
ASYNC_DELETE_POLL_SECONDS = 60.0
# An asynchronous delete still pending after this long is suspect (the provider may have
# expired its result): the job itself is looked up instead.
ASYNC_DELETE_STALE = timedelta(hours=1)


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
       lacks (``outputs.compare_outputs``): the manifest proves what the job held when it was
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
    return _settle(rt, provider, claim, answer)


def _settle(rt: Runtime, provider: Provider, claim: Claim, answer: DeleteAnswer) -> JobRow:
    """Record the provider's answer to the delete. An asynchronous delete it accepted is
    followed for up to ``ASYNC_DELETE_POLL_SECONDS`` first; still pending then, the job
    stays DELETING with its handle, and the next attempt follows it on."""
    row = claim.current
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
        recorders.record_closed_with_remains(provider.name)
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
    rt.archive.put_json(receipt_key, receipt, same=lambda existing: same_job(existing, receipt))
    claim.row = rt.ledger.jobs.mark_deleted(
        row, receipt_key=receipt_key, owner=claim.owner, now=now
    )
    log.info("receipt_written", provider=provider.name, job_id=row.job_id, key=receipt_key)
