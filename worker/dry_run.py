"""The dry run of one job: what ``job.process_job`` would do now, and nothing done.

``steps.drive`` asks the same ``domain.next_step`` as the real run, in the same order, with
``DryRun`` as its executor: the reads are taken (from the provider, and from the ledger
opened read-only), and the first step that would change anything is reported instead of
carried out. No S3 write, no delete, no ledger change. A failure is classified by the same
``domain.on_error`` as the real run's.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

from worker.archiving import archive_plan, listed
from worker.domain import INITIAL_STATE, FreshRead, JobRow, OnError, Step, on_error
from worker.errors import Kept, WorkerError
from worker.outcomes import JobResult, Outcome, PlannedFile
from worker.providers.base import Provider
from worker.steps import drive

if TYPE_CHECKING:
    from worker.bootstrap import Runtime

_OUTCOME_OF = {
    OnError.STOP: Outcome.STOPPED,
    OnError.KEEP: Outcome.KEPT,
    OnError.FAIL: Outcome.FAILED,
    OnError.DEFER: Outcome.DEFERRED,
}


class LocalBudget:
    """The dry run's stand-in for the ledger's delete budget: the same count, in memory."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def plan_job(
    rt: Runtime, provider_name: str, job_id: str, *, budget: LocalBudget | None = None
) -> JobResult:
    """What ``process_job`` would do now, read from the provider and the ledger; no writes."""
    policy = rt.settings.policy(provider_name)
    result = JobResult(provider_name, job_id, Outcome.DONE)
    run = DryRun(rt, rt.provider(provider_name), rt.ledger.query.get(provider_name, job_id), result)
    try:
        drive(run, policy, rt.clock)
    except WorkerError as exc:
        exc.for_job(provider_name, job_id)
        state = run.row.state if run.row is not None else INITIAL_STATE
        result.outcome = _OUTCOME_OF[on_error(state, exc)]
        result.error = str(exc)
        if isinstance(exc, Kept) and result.outcome == Outcome.KEPT:
            result.kept_reason = exc.reason
    if result.outcome == Outcome.WOULD_DELETE and budget is not None and not budget.take():
        result.outcome = Outcome.STOPPED
    return result


@dataclasses.dataclass
class DryRun:
    """The reporting executor (``steps.Executor``): reads as the real run does, and reports
    the first step that would change anything instead of taking it."""

    rt: Runtime
    provider: Provider
    row: JobRow | None
    result: JobResult

    def check(self) -> None:
        """A dry run holds no claim; nothing can lapse."""

    def read(self) -> FreshRead:
        return FreshRead(self.provider.get_job(self.result.job_id), at=self.rt.clock())

    def list_outputs(self, read: FreshRead) -> FreshRead:
        return listed(self.rt, self.provider, self.result.job_id, read)

    def skip(self, step: Step) -> None:
        assert step.outcome is not None
        self.result.outcome = step.outcome
        self.result.error = step.reason if step.outcome != Outcome.HELD else None

    def gone(self, read: FreshRead) -> None:
        self.result.outcome = Outcome.GONE

    def archive(self, step: Step, read: FreshRead) -> None:
        self._plan(read, Outcome.WOULD_DELETE if step.then_delete else Outcome.WOULD_ARCHIVE)

    def reopen(self, step: Step, read: FreshRead) -> None:
        """The job changed since its archive: it would be archived again, then deleted."""
        self._plan(read, Outcome.WOULD_DELETE, reason=step.reason)

    def amend(self, step: Step, read: FreshRead) -> None:
        self._plan(read, Outcome.WOULD_DELETE, reason=step.reason)

    def delete(self, read: FreshRead | None) -> bool:
        self.result.outcome = Outcome.WOULD_DELETE
        self.result.manifest_key = self.row.manifest_key if self.row else None
        return False

    def finish(self) -> None:
        self.delete(None)

    def _plan(self, read: FreshRead, outcome: Outcome, *, reason: str | None = None) -> None:
        _read, plan = archive_plan(self.rt, self.provider, self.row, read)
        result = self.result
        result.plan = [PlannedFile(key, a.source, a.size) for a, _output, key in plan]
        result.files = len(plan)
        result.outcome = outcome
        result.error = reason
