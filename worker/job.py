"""One job, from a fresh status read to its deletion receipt, under a claim on its row.

    read status fresh ─▶ terminal? due? not held? ─▶ fresh links ─▶ stream each file into S3,
    hashing ─▶ verify each object (fresh HEAD) ─▶ write the manifest ─▶ ARCHIVED
    ─▶ a fresh read that lists nothing the archive lacks ─▶ delete gate ─▶ provider DELETE
    ─▶ custom-bucket cleanup ─▶ receipt ─▶ DELETED

``process_job`` has ``steps.drive`` carry out ``domain.next_step`` with a ``JobRun``, this
module's executor, until the job can go no further now; ``dry_run.DryRun`` is driven by the
same decisions and reports them instead.

Its steps live beside it: the archive in ``archiving``, and the delete and the receipt in
``delete``, which keeps the one rule. ``delete.delete_job`` is the only function that calls a
provider's delete, and it sends one only on a fresh read, taken under this claim, of a job
still terminal whose outputs are all in the archive, after checking the archive against the
ledger again and opening the ledger's delete gate (its docstring lists the conditions, in
order). Any error before that point leaves the job at the provider and records why.

Every step is idempotent, so a job interrupted anywhere is resumed by the next sweep: files
already verified are not fetched again, a written manifest is not rewritten, and a delete
whose answer was lost is sent once more after a fresh read (the provider then answers
"gone").
"""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from worker.archiving import archive_job, listed
from worker.delete import delete_job, finish_deletion
from worker.domain import (
    MAX_BACKOFF,
    Event,
    FreshRead,
    JobGone,
    JobRow,
    JobSnapshot,
    JobState,
    OnError,
    Step,
    allows,
    due_at,
    on_error,
    retry_delay,
)
from worker.errors import Kept, LedgerError, RateLimited, WorkerError
from worker.exits import is_unreachable, outage
from worker.leases import Claim
from worker.logging import get_logger
from worker.metrics import recorders
from worker.outcomes import JobResult, Outcome
from worker.providers.base import Provider
from worker.settings import ProviderPolicy
from worker.steps import drive
from worker.tracing import traced

if TYPE_CHECKING:
    from worker.bootstrap import Runtime

log = get_logger(__name__)


@traced(
    "retention.job",
    lambda rt, provider_name, job_id, **_: {
        "retention.provider": provider_name,
        "retention.job_id": job_id,
    },
    lambda result: {
        "retention.outcome": result.outcome.value,
        "retention.archived": result.archived,
        "retention.deleted": result.deleted,
    },
)
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
    recorders.record_job(result, due_seconds=due_seconds)
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
