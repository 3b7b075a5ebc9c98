"""The dry run of one job: what ``job.process_job`` would do now, and nothing done.

The same ``domain.next_step`` decides; where the real run would act, this reports. Reads go
to the provider and the ledger (opened read-only); no S3 write, no delete, no ledger change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.domain import JobGone, JobSnapshot, Step, StepKind, next_step
from worker.errors import Kept, WorkerError
from worker.job import MAX_STEPS
from worker.keys import archive_keys, job_folder
from worker.outcomes import JobResult, Outcome, PlannedFile
from worker.providers.base import Provider

if TYPE_CHECKING:
    from worker.bootstrap import Runtime
    from worker.sweep import LocalBudget


def plan_job(
    rt: Runtime, provider_name: str, job_id: str, *, budget: LocalBudget | None = None
) -> JobResult:
    """What ``process_job`` would do now, read from the provider and the ledger; no writes.

    The same ``next_step`` decides; where the real run would act, this reports.
    """
    policy = rt.settings.policy(provider_name)
    provider = rt.provider(provider_name)
    result = JobResult(provider_name, job_id, Outcome.DONE)
    row = rt.ledger.query.get(provider_name, job_id)
    snapshot: JobSnapshot | JobGone | None = None
    try:
        for _ in range(MAX_STEPS):
            step = next_step(row, snapshot, policy, rt.clock())
            result.due_at = step.due_at or result.due_at
            if step.kind == StepKind.READ:
                snapshot = provider.get_job(job_id)
                continue
            _report(rt, provider, step, snapshot, row.manifest_key if row else None, result)
            if result.outcome == Outcome.WOULD_DELETE and budget is not None and not budget.take():
                result.outcome = Outcome.STOPPED
            return result
    except Kept as exc:
        result.outcome = Outcome.KEPT
        result.kept_reason = exc.reason
        result.error = str(exc.for_job(provider_name, job_id))
    except WorkerError as exc:
        exc.for_job(provider_name, job_id)
        result.outcome = Outcome.FAILED if exc.permanent else Outcome.DEFERRED
        result.error = str(exc)
    return result


def _report(
    rt: Runtime,
    provider: Provider,
    step: Step,
    snapshot: JobSnapshot | JobGone | None,
    manifest_key: str | None,
    result: JobResult,
) -> None:
    """Fill ``result`` with what carrying out ``step`` would do."""
    if step.kind == StepKind.SKIP:
        assert step.outcome is not None
        result.outcome = step.outcome
        result.error = step.reason if step.outcome != Outcome.HELD else None
    elif step.kind == StepKind.GONE:
        result.outcome = Outcome.GONE
    elif step.kind == StepKind.DEFER:
        result.outcome = Outcome.DEFERRED
        result.error = step.reason
    elif step.kind == StepKind.ARCHIVE:
        assert isinstance(snapshot, JobSnapshot)
        artifacts = provider.artifacts(snapshot)
        folder = job_folder(rt.settings.archive.prefix, provider.name, result.job_id)
        keys = archive_keys(folder, [a.name for a in artifacts])
        result.plan = [
            PlannedFile(key, a.source, a.size) for a, key in zip(artifacts, keys, strict=True)
        ]
        result.files = len(keys)
        result.outcome = Outcome.WOULD_DELETE if step.then_delete else Outcome.WOULD_ARCHIVE
    else:  # DELETE or FINISH: archived already, the delete (or its end) is next
        result.outcome = Outcome.WOULD_DELETE
        result.manifest_key = manifest_key
