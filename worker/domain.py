"""Pure values and decisions: what a job is, whether it is terminal, due, held.

Nothing here does I/O or reads the clock; every decision takes ``now`` as an argument so the
tests can stand one second on either side of each boundary.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


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
    """Where a job stands in the ledger. The order of the pipeline is top to bottom."""

    PENDING = "pending"  # known; waiting to be terminal and due
    ARCHIVED = "archived"  # every output stored, verified and listed in a written manifest
    DELETING = "deleting"  # the delete request may have been sent; its answer is not recorded
    CLEANING = "cleaning"  # the provider confirmed; custom-bucket cleanup and receipt remain
    DELETED = "deleted"  # done: receipt written
    GONE = "gone"  # the provider no longer had the job before we archived it
    FAILED = "failed"  # a permanent error; a person must look (``retention retry``)


FINAL_STATES = frozenset({JobState.DELETED, JobState.GONE})
# States past the delete gate: the provider may already have deleted the job.
PAST_GATE_STATES = frozenset({JobState.DELETING, JobState.CLEANING})


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
    record: Mapping[str, Any] = field(repr=False)

    @property
    def terminal(self) -> bool:
        return is_terminal(self.phase)


@dataclass(frozen=True, slots=True)
class JobGone:
    """The provider answered that the job does not exist (any more)."""

    job_id: str
    answer: Mapping[str, Any] = field(repr=False)


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


@dataclass(frozen=True, slots=True)
class Deleted:
    """The provider confirmed the delete."""

    status_code: int
    body: Any = field(repr=False)
    # Set when the provider said "deleted" but also reported a problem (Daily's ``error``).
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class AlreadyGone:
    """The provider answered the delete with "no such job": someone deleted it before us."""

    status_code: int
    body: Any = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeletePending:
    """The provider accepted the delete and will finish it asynchronously (DatoCMS)."""

    handle: str
    status_code: int
    body: Any = field(repr=False)


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


class Verdict(enum.StrEnum):
    ACT = "act"  # archive, verify, then delete
    HELD = "held"
    NOT_TERMINAL = "not_terminal"
    NOT_DUE = "not_due"


def decide(
    *, phase: Phase, since: datetime | None, held: bool, retain_days: int, now: datetime
) -> Verdict:
    """The whole eligibility rule: terminal, due and not held."""
    if held:
        return Verdict.HELD
    if not is_terminal(phase) or since is None:
        return Verdict.NOT_TERMINAL
    if not is_due(since, retain_days, now):
        return Verdict.NOT_DUE
    return Verdict.ACT


def retry_delay(
    attempts: int, *, base: float = 60.0, cap: float = 6 * 3600.0, rand: float | None = None
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
