"""The step driver: ``domain.next_step`` asked again after every step, for both runs.

    next_step(row, read) ─▶ READ ─▶ LIST_OUTPUTS ─▶ ARCHIVE | REOPEN | AMEND ─▶ DELETE ─▶ FINISH
                             ▲                                                   │
                             └──────────── the row and the read, as they are now ┘

A run is an ``Executor``: ``job.JobRun`` carries each step out under the job's claim;
``dry_run.DryRun`` reports the first step that would change anything and stops. Both are
driven here, by the same decisions in the same order, so ``--dry-run`` says what a real run
would do, and a test holds the two to it step by step.

An executor's method returns the read to decide on next (the same one, or one it took), or
None when the job goes no further now; ``delete`` says whether the job goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from worker.domain import FreshRead, JobRow, Policy, Step, StepKind, next_step
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
        go_on, read = _carry(executor, step, read)
        if not go_on:
            return
    raise WorkerError(f"the job did not settle within {MAX_STEPS} steps", permanent=False)


_STOP: tuple[bool, FreshRead | None] = (False, None)


def _carry(executor: Executor, step: Step, read: FreshRead | None) -> tuple[bool, FreshRead | None]:
    """One step: whether the job goes on now, and the read to decide on next."""
    kind = step.kind
    if kind == StepKind.SKIP:
        executor.skip(step)
        return _STOP
    if kind == StepKind.DEFER:
        raise BadResponse(step.reason or "the job cannot be decided on now")
    if kind == StepKind.READ:
        return True, executor.read()
    if kind == StepKind.DELETE:
        # A poll of an accepted delete goes on without a read: FINISH needs none.
        return executor.delete(read), read
    if kind == StepKind.FINISH:
        executor.finish()
        return _STOP
    assert read is not None, f"{kind} is decided on a read"
    if kind == StepKind.GONE:
        executor.gone(read)
        return _STOP
    if kind == StepKind.LIST_OUTPUTS:
        return True, executor.list_outputs(read)
    if kind == StepKind.ARCHIVE:
        following = executor.archive(step, read)
    elif kind == StepKind.REOPEN:
        following = executor.reopen(step, read)
    else:
        assert kind == StepKind.AMEND, kind
        following = executor.amend(step, read)
    return following is not None, following
