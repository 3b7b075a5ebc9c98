"""`next_step`, the one decision about a job, for every branch and on both sides of each
boundary. The real run carries these steps out and the dry run reports them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.rows import job_row
from worker.domain import (
    FreshRead,
    JobGone,
    JobRow,
    JobSnapshot,
    JobState,
    Phase,
    Step,
    StepKind,
    next_step,
)
from worker.outcomes import Outcome
from worker.outputs import Output

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Policy:
    retain_days: int = 7
    read_only: bool = False
    max_read_age_seconds: float = 300


def row(state: JobState = JobState.PENDING, **fields: Any) -> JobRow:
    return job_row(first_seen_at=NOW - WEEK * 4, state=state, **fields)


def snap(phase: Phase, *, finished_at: datetime | None = None, status: str = "x") -> JobSnapshot:
    return JobSnapshot("j", status, phase, finished_at, {"id": "j"})


GONE = JobGone("j", {"status_code": 404})


def fresh(
    answer: JobSnapshot | JobGone | None,
    *,
    age: timedelta = timedelta(0),
    outputs: tuple[Output, ...] | None = None,
) -> FreshRead | None:
    """A read taken ``age`` ago under this claim (None: no read yet)."""
    return None if answer is None else FreshRead(answer, at=NOW - age, outputs=outputs)


ARCHIVE = Step(StepKind.ARCHIVE, then_delete=True)


def skip(outcome: Outcome, reason: str | None = None) -> Step:
    return Step(StepKind.SKIP, outcome, reason)


CASES: list[tuple[str, JobRow | None, JobSnapshot | JobGone | None, Policy, Step]] = [
    # Before any read: the status must be read fresh.
    ("unknown to the ledger, not read yet", None, None, Policy(), Step(StepKind.READ)),
    ("pending, not read yet", row(), None, Policy(), Step(StepKind.READ)),
    ("kept, due a new look", row(JobState.KEPT), None, Policy(), Step(StepKind.READ)),
    # Nothing to do, whatever the provider says.
    ("held", row(held=True), None, Policy(), skip(Outcome.HELD)),
    ("held though archived", row(JobState.ARCHIVED, held=True), None, Policy(), skip(Outcome.HELD)),
    ("deleted", row(JobState.DELETED), None, Policy(), skip(Outcome.DONE)),
    ("gone", row(JobState.GONE), None, Policy(), skip(Outcome.DONE)),
    (
        "failed, waiting for a person",
        row(JobState.FAILED, last_error="it broke"),
        None,
        Policy(),
        skip(Outcome.DONE, "it broke"),
    ),
    # The backoff, one second on either side.
    (
        "deferred, next attempt a second away",
        row(next_attempt_at=NOW + SECOND, last_error="503"),
        None,
        Policy(),
        skip(Outcome.WAITING, "503"),
    ),
    ("deferred, next attempt now", row(next_attempt_at=NOW), None, Policy(), Step(StepKind.READ)),
    (
        "deferred, next attempt a second ago",
        row(next_attempt_at=NOW - SECOND),
        None,
        Policy(),
        Step(StepKind.READ),
    ),
    (
        "kept, not due a new look yet",
        row(JobState.KEPT, next_attempt_at=NOW + SECOND, last_error="unrecognised output"),
        None,
        Policy(),
        skip(Outcome.WAITING, "unrecognised output"),
    ),
    # After the read.
    ("the provider no longer has it", row(), GONE, Policy(), Step(StepKind.GONE)),
    ("still running", row(), snap(Phase.RUNNING), Policy(), skip(Outcome.NOT_TERMINAL)),
    # Due, one second on either side (the clock started a week ago by our own sighting).
    (
        "terminal, a second short of due",
        row(terminal_at=NOW - WEEK + SECOND),
        snap(Phase.SUCCEEDED),
        Policy(),
        Step(StepKind.SKIP, Outcome.NOT_DUE, due_at=NOW + SECOND),
    ),
    (
        "terminal, due this second",
        row(terminal_at=NOW - WEEK),
        snap(Phase.SUCCEEDED),
        Policy(),
        replace(ARCHIVE, due_at=NOW),
    ),
    (
        "failed at the provider, due",
        row(terminal_at=NOW - WEEK - SECOND),
        snap(Phase.FAILED),
        Policy(),
        replace(ARCHIVE, due_at=NOW - SECOND),
    ),
    (
        "the provider's finish time starts the clock before our sighting",
        row(terminal_at=NOW),
        snap(Phase.SUCCEEDED, finished_at=NOW - WEEK),
        Policy(),
        replace(ARCHIVE, due_at=NOW),
    ),
    (
        "first seen terminal now, retain 0 days",
        None,
        snap(Phase.SUCCEEDED),
        Policy(retain_days=0),
        replace(ARCHIVE, due_at=NOW),
    ),
    (
        "first seen terminal now, retain 1 day",
        None,
        snap(Phase.SUCCEEDED),
        Policy(retain_days=1),
        Step(StepKind.SKIP, Outcome.NOT_DUE, due_at=NOW + timedelta(days=1)),
    ),
    (
        "due, read-only: archive, never delete",
        row(terminal_at=NOW - WEEK),
        snap(Phase.SUCCEEDED),
        Policy(read_only=True),
        Step(StepKind.ARCHIVE, due_at=NOW, then_delete=False),
    ),
    # Past the archive step: the delete rests on a fresh read (see RESUME_CASES).
    ("archived, not read yet", row(JobState.ARCHIVED), None, Policy(), Step(StepKind.READ)),
    (
        "a delete whose answer was lost, not read yet",
        row(JobState.DELETING),
        None,
        Policy(),
        Step(StepKind.READ),
    ),
    (
        "an asynchronous delete accepted: followed, nothing new sent",
        row(JobState.DELETING, delete_handle="4235"),
        None,
        Policy(),
        Step(StepKind.DELETE),
    ),
    ("the provider confirmed", row(JobState.CLEANING), None, Policy(), Step(StepKind.FINISH)),
    (
        "archived, read-only",
        row(JobState.ARCHIVED),
        None,
        Policy(read_only=True),
        skip(Outcome.ARCHIVED),
    ),
]


@pytest.mark.parametrize(
    ("current", "snapshot", "policy", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_next_step(
    current: JobRow | None,
    snapshot: JobSnapshot | JobGone | None,
    policy: Policy,
    expected: Step,
) -> None:
    assert next_step(current, fresh(snapshot), policy, NOW) == expected


@pytest.mark.parametrize("days", [0, 7, 10_000])
def test_a_status_word_nobody_knows_is_deferred_however_old(days: int) -> None:
    step = next_step(
        row(terminal_at=NOW - timedelta(days=days)),
        fresh(snap(Phase.UNKNOWN, status="archiving")),
        Policy(retain_days=0),
        NOW,
    )
    assert step.kind == StepKind.DEFER
    assert step.reason is not None
    assert "'archiving' is not one this worker knows" in step.reason


def test_a_held_job_is_never_read_archived_or_deleted_whatever_the_provider_says() -> None:
    for state in (JobState.PENDING, JobState.KEPT, JobState.ARCHIVED, JobState.DELETING):
        for snapshot in (None, GONE, snap(Phase.SUCCEEDED, finished_at=NOW - WEEK * 10)):
            step = next_step(row(state, held=True), fresh(snapshot), Policy(retain_days=0), NOW)
            assert step == skip(Outcome.HELD)


def test_the_reason_a_job_is_due_says_whose_clock_started_it() -> None:
    by_provider = next_step(
        row(terminal_at=NOW),
        fresh(snap(Phase.SUCCEEDED, finished_at=NOW - WEEK, status="finished")),
        Policy(),
        NOW,
    )
    by_worker = next_step(
        row(terminal_at=NOW - WEEK), fresh(snap(Phase.FAILED, status="error")), Policy(), NOW
    )
    assert by_provider.due_reason == (
        f"finished since {(NOW - WEEK).isoformat()} (the provider's finish time); retain_days 7"
    )
    assert by_worker.due_reason == (
        f"error since {(NOW - WEEK).isoformat()} (when the worker first saw it finished); "
        "retain_days 7"
    )


# -- the delete rests on a fresh read that matches the archive ------------------------------

A = Output("out-0.txt")
B = Output("summary.txt")
RECORDED = [{"name": "out-0.txt", "key": "archive/daily/j/out-0.txt"}]
ARCHIVED = row(JobState.ARCHIVED, archived_outputs=RECORDED, manifest_key="m")
DELETING = row(JobState.DELETING, archived_outputs=RECORDED, manifest_key="m")
DONE = snap(Phase.SUCCEEDED)
MAX_AGE = timedelta(seconds=300)

RESUME_CASES: list[tuple[str, JobRow, FreshRead | None, Step]] = [
    (
        "archived, read now, same outputs",
        ARCHIVED,
        fresh(DONE, outputs=(A,)),
        Step(StepKind.DELETE),
    ),
    (
        "archived, read at max_read_age, same outputs",
        ARCHIVED,
        fresh(DONE, age=MAX_AGE, outputs=(A,)),
        Step(StepKind.DELETE),
    ),
    (
        "archived, read a second past max_read_age: read again",
        ARCHIVED,
        fresh(DONE, age=MAX_AGE + SECOND, outputs=(A,)),
        Step(StepKind.READ),
    ),
    ("archived, outputs not listed yet", ARCHIVED, fresh(DONE), Step(StepKind.LIST_OUTPUTS)),
    (
        "archived, a new output at the provider: archive again",
        ARCHIVED,
        fresh(DONE, outputs=(A, B)),
        Step(StepKind.REOPEN, reason="new output(s): summary.txt"),
    ),
    (
        "archived, an output the provider declares another size for: archive again",
        ARCHIVED,
        fresh(DONE, outputs=(Output("out-0.txt", size=12),)),
        Step(StepKind.REOPEN, reason="changed: out-0.txt"),
    ),
    (
        "archived, an output no longer listed: archive again",
        ARCHIVED,
        fresh(DONE, outputs=()),
        Step(StepKind.REOPEN, reason="no longer listed: out-0.txt"),
    ),
    (
        "archived by an earlier version, with no outputs on record: archive again",
        row(JobState.ARCHIVED, manifest_key="m"),
        fresh(DONE, outputs=(A,)),
        Step(
            StepKind.REOPEN,
            reason="the archive recorded no outputs to compare the provider's with",
        ),
    ),
    (
        "archived, running again at the provider: waits",
        ARCHIVED,
        fresh(snap(Phase.RUNNING, status="processing")),
        Step(
            StepKind.SKIP,
            Outcome.NOT_TERMINAL,
            reason="the job is 'processing' again at the provider; it is not deleted until "
            "it has finished and its outputs are archived",
        ),
    ),
    (
        "archived, a status nobody knows: deferred",
        ARCHIVED,
        fresh(snap(Phase.UNKNOWN, status="paused")),
        Step(
            StepKind.DEFER,
            reason="status 'paused' is not one this worker knows; it is never treated as "
            "terminal, and the job stays at the provider",
        ),
    ),
    (
        "archived, gone at the provider: through the gate, nothing sent",
        ARCHIVED,
        fresh(GONE),
        Step(StepKind.DELETE),
    ),
    (
        "deleting, a new output at the provider: archive what is new",
        DELETING,
        fresh(DONE, outputs=(A, B)),
        Step(StepKind.AMEND, reason="new output(s): summary.txt"),
    ),
    (
        "deleting, an output removed (a partial delete): send the delete again",
        DELETING,
        fresh(DONE, outputs=()),
        Step(StepKind.DELETE),
    ),
    ("deleting, gone at the provider", DELETING, fresh(GONE), Step(StepKind.DELETE)),
    (
        "cleaning needs no read",
        row(JobState.CLEANING, archived_outputs=RECORDED),
        None,
        Step(StepKind.FINISH),
    ),
]


@pytest.mark.parametrize(
    ("current", "read", "expected"),
    [case[1:] for case in RESUME_CASES],
    ids=[case[0] for case in RESUME_CASES],
)
def test_the_delete_rests_on_a_fresh_read_that_matches_the_archive(
    current: JobRow, read: FreshRead | None, expected: Step
) -> None:
    assert next_step(current, read, Policy(), NOW) == expected


def test_an_output_of_a_job_that_ran_again_counts_as_changed() -> None:
    rerun = [dict(RECORDED[0], rerun=True)]
    step = next_step(
        row(JobState.ARCHIVED, archived_outputs=rerun), fresh(DONE, outputs=(A,)), Policy(), NOW
    )
    assert step == Step(StepKind.REOPEN, reason="changed: out-0.txt")
