"""What became of a job, and of a sweep: typed results, read by the CLI, the demo, the
metrics and the Celery tasks alike.

A leaf module: plain values, no I/O, nothing imported from the rest of the worker.
"""

from __future__ import annotations

import enum
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


class Outcome(enum.StrEnum):
    DELETED = "deleted"  # the provider confirmed the delete in this run
    ARCHIVED = "archived"  # archived; the delete was not attempted (read_only)
    GONE = "gone"  # vanished at the provider before it was archived
    KEPT = "kept"  # kept at the provider on purpose, with its reason
    STOPPED = "stopped"  # archived; the delete brake (max_deletes_per_sweep) stopped the delete
    NOT_TERMINAL = "not_terminal"
    NOT_DUE = "not_due"
    HELD = "held"
    BUSY = "busy"  # another worker holds the job's claim
    WAITING = "waiting"  # deferred earlier; its next attempt is not due yet
    DONE = "done"  # deleted or gone in an earlier run (or failed, waiting for a person)
    DEFERRED = "deferred"  # a transient failure, or an asynchronous delete still running
    FAILED = "failed"  # a permanent failure: a person must look
    WOULD_DELETE = "would_delete"  # dry run: a real run would archive (if needed) and delete
    WOULD_ARCHIVE = "would_archive"  # dry run with read_only: a real run would only archive


# Outcomes that leave a job as it was, for a reason that needs nobody.
SKIPPED = frozenset(
    {
        Outcome.NOT_TERMINAL,
        Outcome.NOT_DUE,
        Outcome.HELD,
        Outcome.BUSY,
        Outcome.WAITING,
        Outcome.DONE,
    }
)


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """Dry run: one file a real run would store."""

    key: str
    source: str
    size: int | None


@dataclass
class JobResult:
    provider: str
    job_id: str
    outcome: Outcome
    archived: bool = False
    deleted: bool = False
    files: int = 0
    bytes: int = 0
    error: str | None = None
    # Kept: the reason in one word (Kept.reason), for the metric's label.
    kept_reason: str | None = None
    # Dry run: what a real run would store; or, for a job already archived, its manifest.
    plan: list[PlannedFile] = field(default_factory=list)
    manifest_key: str | None = None
    due_at: datetime | None = None
    duration_ms: int = 0
    # Deferred because the provider or the archive could not be reached (exits.is_unreachable):
    # when every job a sweep tried says so, the sweep exits 3, not 1.
    unreachable: bool = False
    # Deferred because a store every job needs (the ledger, Redis) could not be used: what it
    # said (exits.outage). One such job stops the sweep, which exits 3.
    outage: str | None = None
    # The steps the run took (``domain.StepKind`` values), in order: a dry run's are the real
    # run's up to the first that would change anything.
    steps: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SweepSummary:
    """One provider's sweep, counted. ``archived``/``deleted`` count what this run did."""

    provider: str
    dry_run: bool
    archived: int
    deleted: int
    deferred: int
    failed: int
    kept: int
    stopped: int
    skipped: int
    gone: int
    would_archive: int
    would_delete: int
    bytes: int
    listed: int
    dispatched: int
    busy: bool
    busy_detail: str | None
    stopped_reason: str | None
    listing_error: str | None
    duration_ms: int
    skipped_by_reason: dict[str, int]
    # The delete brake (max_deletes_per_sweep) stopped the sweep.
    braked: bool = False
    # The listing failed, every job tried was deferred as unreachable, or the ledger or Redis
    # could not be used (worker.exits).
    unreachable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The counts that add up across providers, in the order they are shown.
TOTALS = (
    "archived",
    "deleted",
    "deferred",
    "failed",
    "kept",
    "stopped",
    "skipped",
    "gone",
    "would_archive",
    "would_delete",
    "bytes",
)


@dataclass(frozen=True, slots=True)
class SweepTotals:
    """A sweep over several providers: the counts added up, and each provider's own."""

    dry_run: bool
    counts: dict[str, int]
    providers: dict[str, SweepSummary]

    @classmethod
    def of(cls, summaries: Iterable[SweepSummary]) -> SweepTotals:
        by_name = {s.provider: s for s in summaries}
        counts = {key: sum(getattr(s, key) for s in by_name.values()) for key in TOTALS}
        return cls(
            dry_run=any(s.dry_run for s in by_name.values()), counts=counts, providers=by_name
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.counts,
            "dry_run": self.dry_run,
            "providers": {name: s.to_dict() for name, s in self.providers.items()},
        }


@dataclass
class SweepReport:
    """A sweep while it runs: counts added from any thread, read once at the end."""

    provider: str
    dry_run: bool = False
    busy: bool = False
    # Who holds the lease when the sweep found it taken: host, pid, renewal and expiry.
    busy_detail: str | None = None
    listed: int = 0
    new: int = 0
    dispatched: int = 0
    stopped_reason: str | None = None
    listing_error: str | None = None
    listing_failed_permanently: bool = False
    # The delete brake stopped dispatching (a job that met it counts as STOPPED as well).
    braked: bool = False
    # A store every job needs (the ledger, Redis) could not be used, by the sweep or by one of
    # its jobs: what it said. The sweep stops dispatching, and exits 3.
    outage: str | None = None
    counts: Counter[str] = field(default_factory=Counter)
    bytes_archived: int = 0
    duration_ms: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, result: JobResult) -> None:
        with self._lock:
            self.counts[result.outcome] += 1
            if result.archived:
                self.counts["archived_now"] += 1
                self.bytes_archived += result.bytes
            if result.deleted:
                self.counts["deleted_now"] += 1
            if result.unreachable and result.outcome == Outcome.DEFERRED:
                self.counts["unreachable"] += 1
            if result.outage is not None and self.outage is None:
                self.outage = result.outage

    def count(self, outcome: Outcome, n: int = 1) -> None:
        with self._lock:
            self.counts[outcome] += n

    @property
    def failed(self) -> bool:
        """A job failed permanently, or the listing did: the exit code says so."""
        return bool(self.counts[Outcome.FAILED]) or self.listing_failed_permanently

    def summary(self) -> SweepSummary:
        c = self.counts
        tried = sum(c[o] for o in Outcome if o not in SKIPPED)
        return SweepSummary(
            provider=self.provider,
            dry_run=self.dry_run,
            archived=c["archived_now"],
            deleted=c["deleted_now"],
            deferred=c[Outcome.DEFERRED],
            failed=c[Outcome.FAILED],
            kept=c[Outcome.KEPT],
            stopped=c[Outcome.STOPPED],
            skipped=sum(c[o] for o in SKIPPED),
            gone=c[Outcome.GONE],
            would_archive=c[Outcome.WOULD_ARCHIVE] + c[Outcome.WOULD_DELETE],
            would_delete=c[Outcome.WOULD_DELETE],
            bytes=self.bytes_archived,
            listed=self.listed,
            dispatched=self.dispatched,
            busy=self.busy,
            busy_detail=self.busy_detail,
            stopped_reason=self.stopped_reason,
            listing_error=self.listing_error,
            duration_ms=self.duration_ms,
            skipped_by_reason={o.value: c[o] for o in sorted(SKIPPED) if c[o]},
            braked=self.braked or bool(c[Outcome.STOPPED]),
            unreachable=self.listing_error is not None
            or self.outage is not None
            or (tried > 0 and c["unreachable"] == tried),
        )


@dataclass(frozen=True)
class SentSweep:
    """A sweep handed to Celery (``retention sweep --enqueue``): its provider, its task's
    name and id."""

    provider: str
    task: str
    task_id: str
