"""The step driver: ``domain.next_step`` asked again after every step, for both runs.

    next_step(row, read) ─▶ READ ─▶ LIST_OUTPUTS ─▶ ARCHIVE | REOPEN | AMEND ─▶ DELETE ─▶ FINISH
                             ▲                                                   │
                             └──────────── the row and the read, as they are now ┘

A run is an ``Executor``: ``job.JobRun`` carries each step out under the job's claim;
``dry_run.DryRun`` reports the first step that would change anything and stops. Both are
driven here, by the same decisions in the same order, so ``--dry-run`` says what a real run
would do, and a test holds the two to it step by step.

An executor's method returns the read to decide on next (the same one, or one it took), or
None when the job goes no further now.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from worker.domain import FreshRead, JobGone, JobRow, Policy, Step, StepKind, next_step
from worker.errors import BadResponse, WorkerError
from worker.outcomes import JobResult

# A job goes READ, ARCHIVE, DELETE, FINISH; or, resumed, READ, LIST_OUTPUTS, REOPEN,
# ARCHIVE, DELETE (a read gone stale: READ, LIST_OUTPUTS again), FINISH. More than this
# is a bug.
MAX_STEPS = 12


class Executor(Protocol):
    """What each step does in one kind of run."""

    result: JobResult

    @property
    def row(self) -> JobRow | None:
        """The job as the ledger has it now (None: not stored yet)."""
        ...

    def check(self) -> None:
        """Raise if the run may not go on (a real run's claim has lapsed)."""
        ...

    def read(self) -> FreshRead: ...

    def list_outputs(self, read: FreshRead) -> FreshRead: ...

    def skip(self, step: Step) -> None: ...

    def gone(self, read: FreshRead) -> None: ...

    def archive(self, step: Step, read: FreshRead) -> FreshRead | None: ...

    def reopen(self, step: Step, read: FreshRead) -> FreshRead | None: ...

    def amend(self, step: Step, read: FreshRead) -> FreshRead | None: ...

    def delete(self, read: FreshRead | None) -> bool:
        """The delete (or a poll of one already accepted); True to go on to what follows."""
        ...

    def finish(self) -> None: ...


def drive(executor: Executor, policy: Policy, clock: Callable[[], datetime]) -> None:
    """Carry out (or report) ``next_step`` until it says to stop for now.

    Every step the run took is noted in ``result.steps``. A DEFER step raises the error the
    job is deferred with; the caller records it (``domain.on_error``).
    """
    read: FreshRead | None = None
    result = executor.result
    for _ in range(MAX_STEPS):
        executor.check()
        step = next_step(executor.row, read, policy, clock())
        result.due_at = step.due_at or result.due_at
        result.steps.append(step.kind.value)
        following = _carry(executor, step, read)
        if following is None:
            return
        read = None if following is _NO_READ else following
    raise WorkerError(f"the job did not settle within {MAX_STEPS} steps", permanent=False)


# Go on to the next step, with no read taken yet.
_NO_READ = FreshRead(JobGone("", {}), at=datetime.min)


def _carry(executor: Executor, step: Step, read: FreshRead | None) -> FreshRead | None:
    """One step; the read to decide on next, or None to stop."""
    kind = step.kind
    if kind == StepKind.SKIP:
        executor.skip(step)
        return None
    if kind == StepKind.DEFER:
        raise BadResponse(step.reason or "the job cannot be decided on now")
    if kind == StepKind.READ:
        return executor.read()
    if kind == StepKind.DELETE:
        # A poll of an accepted delete goes on without a read: FINISH needs none.
        return (read or _NO_READ) if executor.delete(read) else None
    if kind == StepKind.FINISH:
        executor.finish()
        return None
    assert read is not None, f"{kind} is decided on a read"
    if kind == StepKind.GONE:
        executor.gone(read)
        return None
    if kind == StepKind.LIST_OUTPUTS:
        return executor.list_outputs(read)
    if kind == StepKind.ARCHIVE:
        return executor.archive(step, read)
    if kind == StepKind.REOPEN:
        return executor.reopen(step, read)
    assert kind == StepKind.AMEND, kind
    return executor.amend(step, read)
