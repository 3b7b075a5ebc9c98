"""Pure values and decisions: what a job is, how it moves, and what to do with it next.

* ``LIFECYCLE`` declares every event that moves a job's row and the states it moves it
  between; the sets of states the rest of the code uses (final, open, resumable, past the
  gate) are derived from it. The ledger's transitions take an event name, nothing else.
* ``next_step`` is the one decision about a job: the real run carries it out, the dry run
  reports it, so ``--dry-run`` says exactly what a real run would do.

Nothing here does I/O or reads the clock; every decision takes ``now`` as an argument so the
tests can stand one second on either side of each boundary.

Where things go: a new state is a member of ``JobState`` and the events that enter and leave
it in ``LIFECYCLE`` (the derived sets follow; the table test in tests/unit/test_lifecycle.py
lists them); what to do about it is a branch of ``next_step`` with its unit test; carrying it
out is a method of the two executors, ``job.JobRun`` and ``dry_run.DryRun`` (``steps``).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from worker.errors import BrakeEngaged, Kept, WorkerError
from worker.json_types import JSONValue
from worker.outcomes import Outcome
from worker.outputs import Output, compare_outputs


class Phase(enum.StrEnum):
    """A provider's status, translated. Only SUCCEEDED and FAILED are terminal."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # A status word the adapter does not recognise. It is never terminal: a vendor adding
    # "archiving" or "paused" must not make us delete a job that is still in use.
    UNKNOWN = "unknown"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class JobState(enum.StrEnum):
    """Where a job stands in the ledger. ``LIFECYCLE`` below says how it moves."""

    PENDING = "pending"  # known; waiting to be terminal and due
    KEPT = "kept"  # kept at the provider on purpose (``Kept``): looked at again later
    ARCHIVED = "archived"  # every output stored, verified and listed in a written manifest
    DELETING = "deleting"  # the delete request may have been sent; its answer is not recorded
    CLEANING = "cleaning"  # the provider confirmed; custom-bucket cleanup and receipt remain
    DELETED = "deleted"  # done: receipt written
    GONE = "gone"  # the provider no longer had the job before we archived it
    FAILED = "failed"  # a permanent error; a person must look (``retention retry``)


# -- the lifecycle, declared once -----------------------------------------------------------


class Event(enum.StrEnum):
    """Everything that may happen to a job's row. Each is one fenced UPDATE in the ledger."""

    READ = "read"  # a fresh status read is recorded (and a kept job is looked at again)
    REREAD = "reread"  # the read an archived job's delete rests on is recorded
    FILE_STORED = "file_stored"  # one output stored and verified
    GONE = "gone"  # the provider no longer has the job, before any archive
    KEEP = "keep"  # the job stays at the provider on purpose, with its reason
    ARCHIVE = "archive"  # every output verified and the manifest written
    REOPEN = "reopen"  # before the delete, the archive lost an object or the job changed
    AMEND = "amend"  # past the gate, outputs new at the provider archived: a new manifest
    KEEP_PAST_GATE = "keep_past_gate"  # past the gate, the job changed in a way we can't archive
    OPEN_GATE = "open_gate"  # the delete gate: the next thing is the provider's delete
    DELETE_PENDING = "delete_pending"  # an asynchronous delete's handle is stored
    DROP_HANDLE = "drop_handle"  # a spent asynchronous delete is forgotten
    PROVIDER_DELETED = "provider_deleted"  # the provider confirmed (or the job was gone)
    FINISH = "finish"  # custom-bucket cleanup done and the receipt written
    DEFER = "defer"  # a transient failure: same state, tried again after a backoff
    FAIL = "fail"  # a permanent failure before the gate: a person must look
    RETRY = "retry"  # a person puts a failed or kept job back in line


@dataclass(frozen=True, slots=True)
class Transition:
    sources: frozenset[JobState]
    # None: the event records something without moving the job.
    target: JobState | None


def _t(sources: set[JobState], target: JobState | None) -> Transition:
    return Transition(frozenset(sources), target)


_S = JobState
# The whole lifecycle, in the order of the pipeline. The ledger reads each transition's
# states from here (its UPDATE requires the row to be in `sources`, and sets `target`); no
# other code writes a job's state.
LIFECYCLE: Mapping[Event, Transition] = {
    Event.READ: _t({_S.PENDING, _S.KEPT}, _S.PENDING),
    Event.REREAD: _t({_S.ARCHIVED, _S.DELETING}, None),
    # Past the gate too: a job that changed after its delete was sent gets what is new.
    Event.FILE_STORED: _t({_S.PENDING, _S.DELETING}, None),
    Event.GONE: _t({_S.PENDING}, _S.GONE),
    Event.KEEP: _t({_S.PENDING}, _S.KEPT),
    Event.ARCHIVE: _t({_S.PENDING}, _S.ARCHIVED),
    Event.REOPEN: _t({_S.ARCHIVED}, _S.PENDING),
    Event.OPEN_GATE: _t({_S.ARCHIVED, _S.DELETING}, _S.DELETING),
    # A job whose delete may have been sent never goes back before the gate: what is new is
    # archived in place, or the job waits there for a person.
    Event.AMEND: _t({_S.DELETING}, None),
    Event.KEEP_PAST_GATE: _t({_S.DELETING}, None),
    Event.DELETE_PENDING: _t({_S.DELETING}, None),
    Event.DROP_HANDLE: _t({_S.DELETING}, None),
    Event.PROVIDER_DELETED: _t({_S.DELETING}, _S.CLEANING),
    Event.FINISH: _t({_S.CLEANING}, _S.DELETED),
    Event.DEFER: _t({_S.PENDING, _S.KEPT, _S.ARCHIVED, _S.DELETING, _S.CLEANING}, None),
    # Past the gate a delete may have happened, so a job there never fails: it is deferred
    # until the provider's answer is recorded.
    Event.FAIL: _t({_S.PENDING, _S.KEPT, _S.ARCHIVED}, _S.FAILED),
    Event.RETRY: _t({_S.FAILED, _S.KEPT}, _S.PENDING),
}
# The state of a job the ledger first hears of (a listing, `retention track`, a hold).
INITIAL_STATE = JobState.PENDING
# Events a person starts; every other one is the worker's, under the job's claim.
OPERATOR_EVENTS = frozenset({Event.RETRY})


def _closure(start: JobState, *, stop: frozenset[JobState]) -> frozenset[JobState]:
    """The states the worker's events reach from ``start``, not passing through ``stop``."""
    seen = {start}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        for event, move in LIFECYCLE.items():
            if event in OPERATOR_EVENTS or state not in move.sources:
                continue
            if move.target is not None and move.target not in seen | stop:
                seen.add(move.target)
                frontier.append(move.target)
    return frozenset(seen)


def target_of(event: Event) -> JobState:
    """The state ``event`` moves a job to; ValueError for an event that records only."""
    target = LIFECYCLE[event].target
    if target is None:
        raise ValueError(f"the event {event} does not move a job")
    return target


# Derived, never written out: states no event leaves are final.
FINAL_STATES = frozenset(JobState) - frozenset().union(*(t.sources for t in LIFECYCLE.values()))
# States the worker still acts on: the sources of its own events.
OPEN_STATES = frozenset().union(
    *(t.sources for e, t in LIFECYCLE.items() if e not in OPERATOR_EVENTS)
)
# Past the delete gate: the provider may already have deleted the job.
PAST_GATE_STATES = _closure(target_of(Event.OPEN_GATE), stop=FINAL_STATES)
# Archived and onward: a sweep resumes these whether or not they are due.
RESUMABLE_STATES = frozenset({target_of(Event.ARCHIVE)}) | PAST_GATE_STATES


@dataclass(frozen=True, slots=True)
class ListedJob:
    """One entry of a provider's list endpoint (or batch lookup)."""

    job_id: str
    status: str
    phase: Phase
    # When the provider says the job finished, if the listing says (Huawei MPC's end_time).
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """A job as the provider described it in one fresh read."""

    job_id: str
    status: str
    phase: Phase
    # When the provider says the job finished. None when it gives no timestamp (Daily), in
    # which case the ledger's first sighting of the terminal status stands in.
    finished_at: datetime | None
    # The provider's record as returned, for the manifest. Signed query strings are removed
    # before it is written anywhere.
    record: dict[str, JSONValue] = field(repr=False)

    @property
    def terminal(self) -> bool:
        return is_terminal(self.phase)


@dataclass(frozen=True, slots=True)
class JobGone:
    """The provider answered that the job does not exist (any more)."""

    job_id: str
    answer: dict[str, JSONValue] = field(repr=False)


@dataclass(frozen=True, slots=True)
class LinkOrigin:
    """A download link the provider handed out. It is a bearer credential until it expires."""

    url: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class BucketOrigin:
    """An object in one of the user's own buckets (Daily's ``batch_processor_bucket``)."""

    bucket: str
    key: str
    region: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderOrigin:
    """A resource at the provider's API, fetched with the provider's own credentials."""

    path: str


Origin = LinkOrigin | BucketOrigin | ProviderOrigin


class OutputCheck(Protocol):
    """An adapter's judgement of an output whose format it knows (DatoCMS's WebVTT subtitles),
    made on the whole body before any of it is stored. Such an output is read into memory
    whole, so it must be small."""

    # A body longer than this is refused, with nothing stored.
    @property
    def max_bytes(self) -> int: ...

    def refused(self, status_code: int) -> WorkerError | None:
        """What it means that the download host refused the output with ``status_code``: the
        error to raise instead of the download error (a ``Kept`` when no retry will fetch
        it), or None to let the download error stand."""
        ...

    def check(self, body: bytes) -> None:
        """Raise (``Kept``) when ``body`` must not stand in for the output."""
        ...


@dataclass(frozen=True, slots=True)
class Artifact:
    """One file the provider's delete would destroy."""

    # Where it goes under the job's folder, as the provider named it. keys.py makes it safe.
    name: str
    # Where it came from, for the manifest: no query string, so no signature.
    source: str
    origin: Origin
    # The size the provider declared, when it declared one.
    size: int | None = None
    # The SHA-256 (hex) the provider declared for these bytes, when it declared one
    # (Unsiloed's ``pdf_hash``): what was archived must match it.
    sha256: str | None = None
    # The adapter's check of the bytes themselves, for an output whose format it knows.
    check: OutputCheck | None = field(default=None, compare=False, repr=False)
    # The ETag or version the provider declared for the file, when it declared one: a later
    # read that declares another means the file changed.
    etag: str | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Deleted:
    """The provider confirmed the delete."""

    status_code: int
    body: JSONValue = field(repr=False)


@dataclass(frozen=True, slots=True)
class AlreadyGone:
    """The provider answered the delete with "no such job": someone deleted it before us."""

    status_code: int
    body: JSONValue = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeletePending:
    """The provider accepted the delete and will finish it asynchronously (DatoCMS)."""

    handle: str
    status_code: int
    body: JSONValue = field(repr=False)


DeleteAnswer = Deleted | AlreadyGone | DeletePending


def is_terminal(phase: Phase) -> bool:
    return phase in TERMINAL_PHASES


def terminal_since(finished_at: datetime | None, first_seen_terminal_at: datetime) -> datetime:
    """When the retention clock started: the provider's word if it gave one, else our sighting.

    A provider timestamp later than our own sighting (the vendor's clock runs ahead) is capped
    at the sighting: the job was already terminal when we saw it.
    """
    if finished_at is None:
        return first_seen_terminal_at
    return finished_at if finished_at <= first_seen_terminal_at else first_seen_terminal_at


def due_at(since: datetime, retain_days: int) -> datetime:
    if retain_days < 0:
        raise ValueError("retain_days must not be negative")
    return since + timedelta(days=retain_days)


def is_due(since: datetime, retain_days: int, now: datetime) -> bool:
    return now >= due_at(since, retain_days)


# -- a job's row, and the one decision about it ---------------------------------------------


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as the ledger records it."""

    pk: int
    provider: str
    job_id: str
    state: JobState
    tracked: bool
    held: bool
    provider_status: str | None
    phase: Phase | None
    first_seen_at: datetime
    last_checked_at: datetime | None
    finished_at: datetime | None
    terminal_at: datetime | None
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    archived_at: datetime | None
    manifest_key: str | None
    files_count: int | None
    bytes_archived: int | None
    delete_requested_at: datetime | None
    delete_handle: str | None
    delete_answer: JSONValue
    provider_deleted_at: datetime | None
    deleted_at: datetime | None
    receipt_key: str | None
    # The policy in force when the job was archived: what a report shows, whatever the
    # configuration says today. None for jobs archived before it was recorded.
    retain_days: int | None = None
    due_at: datetime | None = None
    due_reason: str | None = None
    # The manifest object as the archive stored it: its ETag, and its version where the
    # bucket keeps versions. None for jobs archived before it was recorded.
    manifest_etag: str | None = None
    manifest_version_id: str | None = None
    # What the archive recorded of the job's outputs (``archived_outputs_json``): a fresh
    # read before the delete is held to it. None for jobs archived before it was recorded.
    archived_outputs: JSONValue = None
    # How many times the job was archived: a new archive writes a new manifest beside the old.
    archive_revision: int = 0
    # Why the worker keeps the job at the provider (a ``Kept`` reason), while it does.
    kept_reason: str | None = None


class Policy(Protocol):
    """What the decision needs of a provider's policy (settings.ProviderPolicy)."""

    @property
    def retain_days(self) -> int: ...

    @property
    def read_only(self) -> bool: ...

    @property
    def max_read_age_seconds(self) -> float: ...


# -- what a fresh read lists (``outputs`` compares it with the archive) ------------------------


def outputs_of(artifacts: Sequence[Artifact], names: Sequence[str]) -> tuple[Output, ...]:
    """The outputs of ``artifacts``, in their order, under ``names`` (their safe relative
    keys)."""
    return tuple(
        Output(name, a.size, a.sha256.lower() if a.sha256 else None, a.etag, a.version)
        for a, name in zip(artifacts, names, strict=True)
    )


@dataclass(frozen=True, slots=True)
class FreshRead:
    """A read of the job at the provider, taken under one claim; the delete rests on it.

    ``outputs`` is what the read lists, once worked out (``StepKind.LIST_OUTPUTS``), and
    ``artifacts`` the files behind them, with their fresh links.
    """

    answer: JobSnapshot | JobGone
    at: datetime
    owner: str | None = None
    outputs: tuple[Output, ...] | None = None
    artifacts: tuple[Artifact, ...] | None = field(default=None, repr=False)

    def age(self, now: datetime) -> timedelta:
        return now - self.at

    def fresh(self, policy: Policy, now: datetime) -> bool:
        return self.age(now) <= timedelta(seconds=policy.max_read_age_seconds)


class StepKind(enum.StrEnum):
    SKIP = "skip"  # nothing to do now; the step's outcome says why
    READ = "read"  # read the job's status fresh at the provider, then decide again
    GONE = "gone"  # record that the provider no longer has the job
    DEFER = "defer"  # leave the job for later, with the step's reason
    ARCHIVE = "archive"  # store and verify every output, write the manifest
    LIST_OUTPUTS = "list_outputs"  # work out what the fresh read lists, to hold it to the archive
    REOPEN = "reopen"  # archived, but the job changed at the provider: archive it again
    AMEND = "amend"  # past the gate, the job changed: archive what is new, or keep it
    DELETE = "delete"  # the delete gate, then the provider's delete (or a poll of it)
    FINISH = "finish"  # custom-bucket cleanup and the deletion receipt


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    # SKIP: what the job's result reports.
    outcome: Outcome | None = None
    reason: str | None = None
    # When the job is (or was) due, once its status is known to be terminal.
    due_at: datetime | None = None
    # ARCHIVE: go on to the delete afterwards (not read_only).
    then_delete: bool = False
    # Why the job is due, in words: when its retention clock started and by whose clock.
    due_reason: str | None = field(default=None, compare=False)


def _unknown_status(status: str) -> Step:
    # Never terminal, never silent: a status word we do not know is worth a person's look
    # (the vendor may have added one), and the job is looked at again later.
    return Step(
        StepKind.DEFER,
        reason=f"status {status!r} is not one this worker knows; it is never "
        "treated as terminal, and the job stays at the provider",
    )


def next_step(
    row: JobRow | None,
    read: FreshRead | None,
    policy: Policy,
    now: datetime,
) -> Step:
    """What to do next with a job: the one decision, for the real run and the dry run.

    ``row`` is the job as the ledger has it (None for a job the ledger has not stored: a dry
    run's listing); ``read`` the provider's answer to a read taken under this claim, None
    until one was taken. A job whose status matters and was not read gets READ; the caller
    reads it and asks again.
    """
    state = row.state if row is not None else INITIAL_STATE
    if row is not None and row.held:
        return Step(StepKind.SKIP, Outcome.HELD)
    if state in FINAL_STATES:
        return Step(StepKind.SKIP, Outcome.DONE)
    if state not in OPEN_STATES:  # failed: a person must look
        return Step(StepKind.SKIP, Outcome.DONE, reason=row.last_error if row else None)
    if row is not None and row.next_attempt_at is not None and row.next_attempt_at > now:
        # A duplicate task, or one run early: the backoff holds for it too.
        return Step(StepKind.SKIP, Outcome.WAITING, reason=row.last_error)
    if state in RESUMABLE_STATES:
        assert row is not None  # a resumable state is one the ledger recorded
        return _resume(row, read, policy, now)
    if read is None:
        return Step(StepKind.READ)
    if isinstance(read.answer, JobGone):
        return Step(StepKind.GONE)
    snapshot = read.answer
    if snapshot.phase == Phase.UNKNOWN:
        return _unknown_status(snapshot.status)
    if not snapshot.terminal:
        return Step(StepKind.SKIP, Outcome.NOT_TERMINAL)
    first_seen = row.terminal_at if row is not None and row.terminal_at else now
    since = terminal_since(snapshot.finished_at, first_seen)
    due = due_at(since, policy.retain_days)
    if now < due:
        return Step(StepKind.SKIP, Outcome.NOT_DUE, due_at=due)
    clock = (
        "the provider's finish time"
        if snapshot.finished_at is not None and since == snapshot.finished_at
        else "when the worker first saw it finished"
    )
    reason = (
        f"{snapshot.status} since {since.isoformat(timespec='seconds')} ({clock}); "
        f"retain_days {policy.retain_days}"
    )
    return Step(
        StepKind.ARCHIVE, due_at=due, then_delete=not policy.read_only, due_reason=reason[:300]
    )


def _resume(row: JobRow, read: FreshRead | None, policy: Policy, now: datetime) -> Step:
    """An archived job and onward. The delete rests on a read taken under this claim, no
    older than ``max_read_age_seconds``, of a job still terminal whose outputs are all in the
    archive (Kubernetes' TTL controller re-reads a Job right before it deletes it): the
    manifest proves what the job held when it was archived, not now."""
    state = row.state
    if policy.read_only:
        return Step(StepKind.SKIP, Outcome.ARCHIVED)
    if state == JobState.CLEANING:
        return Step(StepKind.FINISH)
    if state == JobState.DELETING and row.delete_handle:
        # An asynchronous delete already accepted: follow it; nothing new is sent.
        return Step(StepKind.DELETE)
    if read is None or not read.fresh(policy, now):
        return Step(StepKind.READ)
    if isinstance(read.answer, JobGone):
        # Through the gate all the same, so the archive is checked and the job closed as a
        # delete the provider answered "already gone"; nothing is sent.
        return Step(StepKind.DELETE)
    snapshot = read.answer
    if snapshot.phase == Phase.UNKNOWN:
        return _unknown_status(snapshot.status)
    if not snapshot.terminal:
        return Step(
            StepKind.SKIP,
            Outcome.NOT_TERMINAL,
            reason=f"the job is {snapshot.status!r} again at the provider; it is not deleted "
            "until it has finished and its outputs are archived",
        )
    if read.outputs is None:
        return Step(StepKind.LIST_OUTPUTS)
    changes = compare_outputs(row.archived_outputs, read.outputs)
    if state == JobState.ARCHIVED and changes.any:
        return Step(StepKind.REOPEN, reason=changes.describe())
    if state == JobState.DELETING and changes.new_at_provider:
        return Step(StepKind.AMEND, reason=changes.describe())
    return Step(StepKind.DELETE)


def allows(event: Event, state: JobState) -> bool:
    """Whether ``event`` may happen to a job in ``state``: the lifecycle table's word."""
    return state in LIFECYCLE[event].sources


class OnError(enum.StrEnum):
    """What becomes of a job whose step raised: the same answer for the real run and the
    dry run (which reports it)."""

    STOP = "stop"  # the brake: nothing changed; the job is first in line next sweep
    KEEP = "keep"  # kept at the provider on purpose, with its reason
    FAIL = "fail"  # a person must look
    DEFER = "defer"  # tried again after a backoff


def on_error(state: JobState, error: WorkerError) -> OnError:
    """The one rule for a job's failure. Past the delete gate a delete may have happened, so
    a job there never fails: it is kept for a person or deferred until the provider's answer
    is recorded."""
    if isinstance(error, BrakeEngaged):
        return OnError.STOP
    if isinstance(error, Kept) and (
        allows(Event.KEEP, state) or allows(Event.KEEP_PAST_GATE, state)
    ):
        return OnError.KEEP
    if error.permanent and allows(Event.FAIL, state):
        return OnError.FAIL
    return OnError.DEFER


# The longest a job waits between attempts; also the cap on a wait a provider asks for.
MAX_BACKOFF = timedelta(hours=6)
# How long a kept job waits before it is looked at again (its record, or the configuration,
# may have changed).
KEEP_RECHECK = MAX_BACKOFF


def retry_delay(
    attempts: int,
    *,
    base: float = 60.0,
    cap: float = MAX_BACKOFF.total_seconds(),
    rand: float | None = None,
) -> timedelta:
    """Exponential backoff with full jitter for a deferred job: 1 min, 2, 4 ... capped at 6 h.

    Full jitter (a random point between half the step and the step) spreads retries of many
    jobs that failed together, so a provider outage does not end in a thundering herd.
    """
    step = min(cap, base * (2 ** max(0, attempts - 1)))
    r = random.random() if rand is None else rand  # noqa: S311 - jitter, not a secret
    return timedelta(seconds=step / 2 + r * step / 2)


def utcnow() -> datetime:
    return datetime.now(UTC)
