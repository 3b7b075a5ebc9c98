"""What the ledger answers: a job, its files and trail, a sweep's candidates, the status and
report a person reads. Nothing here writes."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from worker.domain import RESUMABLE_STATES, JobRow, JobState, Phase, due_at
from worker.ledger.database import Database
from worker.ledger.schema import (
    FILE_RECORD_COLUMNS,
    OPEN_JOBS,
    FileRecord,
    archive_files,
    audit_events,
    job_row,
    jobs,
)


@dataclass(frozen=True, slots=True)
class Candidate:
    pk: int
    job_id: str
    state: JobState


@dataclass(frozen=True, slots=True)
class OverdueJob:
    """Due and not deleted yet, with the last error if an attempt failed."""

    job_id: str
    state: str
    due_at: str | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class FailedJob:
    job_id: str
    attempts: int
    last_error: str | None
    failed_at: str | None


@dataclass(frozen=True, slots=True)
class KeptJob:
    """Kept at the provider on purpose: ``reason`` says why and what to do."""

    job_id: str
    reason: str | None
    kept_at: str | None


@dataclass(frozen=True, slots=True)
class UnknownStatusJob:
    """Open, in a status word the adapter does not know (``Phase.UNKNOWN``): never treated
    as terminal, deferred at every sweep until a person looks (the vendor may have added a
    status, or the job may be paused at the provider)."""

    job_id: str
    status: str | None
    attempts: int
    last_error: str | None
    checked_at: str | None


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """One provider's jobs by state, and the first ``limit`` of each list that needs a look;
    ``overdue_count``, ``states["failed"]``, ``states["kept"]`` and ``unknown_count`` count
    each list whole."""

    provider: str
    states: dict[str, int]
    held: int
    overdue: list[OverdueJob]
    overdue_count: int
    failed: list[FailedJob]
    kept: list[KeptJob]
    unknown: list[UnknownStatusJob]
    unknown_count: int


@dataclass(frozen=True, slots=True)
class ProviderGauges:
    """What the metrics read from the ledger for one provider (``Queries.gauges``)."""

    provider: str
    # Every state of the lifecycle, 0 where no job is in it.
    states: dict[str, int]
    held: int
    overdue: int
    # How long ago the oldest overdue job became due (0 when none is overdue).
    oldest_overdue_seconds: float


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


_RESUMABLE = sorted(RESUMABLE_STATES)
# Kept at the provider: before the gate, in its own state; past it (a job that changed after
# its delete was sent), still DELETING with the reason it is kept.
_KEPT = sa.or_(
    jobs.c.state == JobState.KEPT,
    sa.and_(jobs.c.state == JobState.DELETING, jobs.c.kept_reason.is_not(None)),
)


def _overdue(
    provider: str, days: int, now: datetime, *, on_purpose: bool
) -> sa.ColumnElement[bool]:
    """The jobs of ``provider`` that ``status`` and the overdue gauge count: not held, and
    either resumable (archived, or past the delete gate: every sweep takes them up again)
    or pending or kept and terminal for ``days``. A provider whose archived jobs wait at the
    provider ``on_purpose`` (``read_only``) has only the latter."""
    c = jobs.c
    due = sa.and_(
        c.state.in_([JobState.PENDING, JobState.KEPT]),
        c.terminal_at.is_not(None),
        c.terminal_at <= now - timedelta(days=days),
    )
    waiting = due if on_purpose else sa.or_(c.state.in_(_RESUMABLE), due)
    return sa.and_(c.provider == provider, c.held.is_(False), waiting)


class Queries:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, provider: str, job_id: str) -> JobRow | None:
        with self.db.reading() as tx:
            return self.db.job(tx, provider, job_id)

    def files(self, pk: int) -> dict[str, FileRecord]:
        """The job's verified objects by key (read at every step of a job that has files)."""
        stmt = self.db.prepared(
            "files",
            lambda: sa.select(*FILE_RECORD_COLUMNS).where(
                archive_files.c.job_pk == sa.bindparam("pk")
            ),
        )
        with self.db.reading() as tx:
            records = [FileRecord(*values) for values in tx.rows(stmt, {"pk": pk})]
        return {record.key: record for record in records}

    def audit_trail(self, provider: str, job_id: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(audit_events)
                .where(audit_events.c.provider == provider, audit_events.c.job_id == job_id)
                .order_by(audit_events.c.id)
            ).all()
        return [dict(r._mapping) for r in rows]

    def deleted_jobs(
        self, *, since: datetime, provider: str | None = None, batch: int = 500
    ) -> Iterator[tuple[JobRow, list[str]]]:
        """Jobs deleted since ``since``, oldest first, each with its archived file keys.

        Read in batches, so a report over years of deletions never holds them all at once.
        """
        c = jobs.c
        after = 0
        while True:
            query = sa.select(jobs).where(
                c.state == JobState.DELETED, c.deleted_at >= since, c.id > after
            )
            if provider is not None:
                query = query.where(c.provider == provider)
            with self.db.read() as conn:
                rows = [job_row(r) for r in conn.execute(query.order_by(c.id).limit(batch))]
                keys: dict[int, list[str]] = {}
                if rows:
                    for pk, key in conn.execute(
                        sa.select(archive_files.c.job_pk, archive_files.c.key)
                        .where(archive_files.c.job_pk.in_([r.pk for r in rows]))
                        .order_by(archive_files.c.id)
                    ):
                        keys.setdefault(pk, []).append(key)
            if not rows:
                return
            for row in rows:
                yield row, keys.get(row.pk, [])
            after = rows[-1].pk

    def archived_jobs(
        self,
        *,
        provider: str | None = None,
        since: datetime | None = None,
        after_pk: int = 0,
        limit: int = 200,
    ) -> list[JobRow]:
        """Jobs with a written manifest (archived, being deleted, or deleted), in primary-key
        order, archived since ``since``: what `retention scrub` re-verifies."""
        c = jobs.c
        query = sa.select(jobs).where(c.manifest_key.is_not(None), c.id > after_pk)
        if provider is not None:
            query = query.where(c.provider == provider)
        if since is not None:
            query = query.where(c.archived_at >= since)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(c.id).limit(limit)).all()
        return [job_row(r) for r in rows]

    def candidates(
        self,
        provider: str,
        *,
        now: datetime,
        due_cutoff: datetime,
        refreshed_since: datetime,
        resume: bool = True,
        after_pk: int = 0,
        limit: int = 500,
    ) -> list[Candidate]:
        """The next batch of jobs a sweep should look at, in primary-key order.

        * jobs past the archive step (resume the delete), unless ``resume`` is off (a
          read-only sweep has nothing to do for them);
        * terminal jobs whose retention clock started before ``due_cutoff`` (due);
        * jobs whose status is unknown or not terminal and that this sweep's listing did not
          already refresh (their status must be read fresh), and kept jobs due a new look.

        Held jobs and jobs deferred into the future are left out.
        """
        query = self.candidates_query(
            provider,
            now=now,
            due_cutoff=due_cutoff,
            refreshed_since=refreshed_since,
            resume=resume,
            after_pk=after_pk,
            limit=limit,
        )
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        return [Candidate(pk=r.id, job_id=r.job_id, state=JobState(r.state)) for r in rows]

    @staticmethod
    def candidates_query(
        provider: str,
        *,
        now: datetime,
        due_cutoff: datetime,
        refreshed_since: datetime,
        after_pk: int,
        limit: int,
        resume: bool = True,
    ) -> sa.Select[Any]:
        """The query behind ``candidates``: a range scan of the ``ix_jobs_open`` index."""
        c = jobs.c
        due = sa.and_(
            c.state == JobState.PENDING, c.terminal_at.is_not(None), c.terminal_at <= due_cutoff
        )
        stale = sa.and_(
            c.state == JobState.PENDING,
            c.terminal_at.is_(None),
            sa.or_(c.last_checked_at.is_(None), c.last_checked_at < refreshed_since),
        )
        wanted = [due, stale, c.state == JobState.KEPT]
        if resume:
            wanted.append(c.state.in_(_RESUMABLE))
        return (
            sa.select(c.id, c.job_id, c.state)
            .where(
                c.provider == provider,
                OPEN_JOBS,
                c.held.is_(False),
                c.id > after_pk,
                sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
                sa.or_(*wanted),
            )
            .order_by(c.id)
            .limit(limit)
        )

    def stale(
        self,
        provider: str,
        *,
        refreshed_since: datetime,
        now: datetime,
        after_pk: int = 0,
        limit: int = 100,
    ) -> list[tuple[int, str]]:
        """Pending jobs whose status is unknown or running and was not read since
        ``refreshed_since``: (pk, job_id) in primary-key order, for batch lookups."""
        c = jobs.c
        query = (
            sa.select(c.id, c.job_id)
            .where(
                c.provider == provider,
                c.state == JobState.PENDING,
                c.held.is_(False),
                c.terminal_at.is_(None),
                c.id > after_pk,
                sa.or_(c.last_checked_at.is_(None), c.last_checked_at < refreshed_since),
                sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
            )
            .order_by(c.id)
            .limit(limit)
        )
        with self.db.read() as conn:
            return [(r.id, r.job_id) for r in conn.execute(query)]

    def waiting(self, provider: str, *, due_cutoff: datetime) -> tuple[int, int]:
        """(held, not yet due) among the provider's pending jobs: what a sweep leaves alone."""
        c = jobs.c
        pending = sa.and_(c.provider == provider, c.state == JobState.PENDING)
        with self.db.read() as conn:
            held = conn.execute(
                sa.select(sa.func.count()).where(pending, c.held.is_(True))
            ).scalar_one()
            not_due = conn.execute(
                sa.select(sa.func.count()).where(
                    pending,
                    c.held.is_(False),
                    c.terminal_at.is_not(None),
                    c.terminal_at > due_cutoff,
                )
            ).scalar_one()
        return int(held), int(not_due)

    def status(
        self,
        retain_days: dict[str, int],
        *,
        now: datetime,
        limit: int = 20,
        archived_on_purpose: Collection[str] = (),
    ) -> list[ProviderStatus]:
        """Counts by provider and state, and the jobs that need a look: overdue (due, not
        deleted; the jobs the overdue gauge counts, so the archived jobs of the providers in
        ``archived_on_purpose`` are not), kept at the provider (with why), failed, and open
        in a status the adapter does not know."""
        c = jobs.c
        out: list[ProviderStatus] = []
        with self.db.read() as conn:
            counts: dict[str, dict[str, int]] = {}
            for provider, state, n in conn.execute(
                sa.select(c.provider, c.state, sa.func.count()).group_by(c.provider, c.state)
            ):
                counts.setdefault(provider, {})[state] = n
            held: dict[str, int] = {
                provider: int(n)
                for provider, n in conn.execute(
                    sa.select(c.provider, sa.func.count())
                    .where(c.held.is_(True))
                    .group_by(c.provider)
                )
            }
            for provider in sorted(set(counts) | set(retain_days)):
                days = retain_days.get(provider, 0)
                overdue_where = _overdue(
                    provider, days, now, on_purpose=provider in archived_on_purpose
                )
                overdue_count, overdue = _overdue_jobs(conn, overdue_where, days, limit)
                failed, kept = (
                    conn.execute(
                        sa.select(c.job_id, c.attempts, c.last_error, c.last_error_at)
                        .where(c.provider == provider, which)
                        .order_by(c.last_error_at.desc())
                        .limit(limit)
                    ).all()
                    for which in (c.state == JobState.FAILED, _KEPT)
                )
                unknown_count, unknown = _unknown_jobs(conn, provider, limit)
                out.append(
                    ProviderStatus(
                        provider=provider,
                        states=counts.get(provider, {}),
                        held=int(held.get(provider, 0)),
                        overdue=overdue,
                        overdue_count=overdue_count,
                        failed=[
                            FailedJob(r.job_id, r.attempts, r.last_error, _iso(r.last_error_at))
                            for r in failed
                        ],
                        kept=[KeptJob(r.job_id, r.last_error, _iso(r.last_error_at)) for r in kept],
                        unknown=unknown,
                        unknown_count=unknown_count,
                    )
                )
        return out

    def gauges(
        self,
        retain_days: Mapping[str, int],
        *,
        now: datetime,
        archived_on_purpose: Collection[str] = (),
    ) -> list[ProviderGauges]:
        """Counts for the metrics' gauges, for each provider of ``retain_days`` (the
        configured ones: jobs of a provider removed from the configuration are nobody's to
        alert on): jobs by state, held open jobs, and the overdue jobs ``status`` counts,
        except the archived jobs of the providers in ``archived_on_purpose`` (``read_only``
        ones), which wait at the provider on purpose.

        Aggregates only (two queries, and one per provider for the overdue), read from the
        (provider, state, terminal_at) index: the cost does not grow with what is printed.
        """
        c = jobs.c
        names = sorted(retain_days)
        if not names:
            return []
        states: dict[str, dict[str, int]] = {
            name: {state.value: 0 for state in JobState} for name in names
        }
        with self.db.read() as conn:
            for provider, state, n in conn.execute(
                sa.select(c.provider, c.state, sa.func.count())
                .where(c.provider.in_(names))
                .group_by(c.provider, c.state)
            ):
                states[provider][state] = int(n)
            held: dict[str, int] = {
                provider: int(n)
                for provider, n in conn.execute(
                    sa.select(c.provider, sa.func.count())
                    .where(c.provider.in_(names), c.held.is_(True), OPEN_JOBS)
                    .group_by(c.provider)
                )
            }
            out = []
            for name in names:
                days = retain_days[name]
                overdue = _overdue(name, days, now, on_purpose=name in archived_on_purpose)
                count, oldest = conn.execute(
                    sa.select(sa.func.count(), sa.func.min(c.terminal_at)).where(overdue)
                ).one()
                age = 0.0
                if count and oldest is not None:
                    # An archived job can be due later than now if retain_days was raised
                    # since: it is overdue (resumable) but not late.
                    age = max(0.0, (now - due_at(oldest, days)).total_seconds())
                out.append(
                    ProviderGauges(
                        provider=name,
                        states=states[name],
                        held=held.get(name, 0),
                        overdue=int(count),
                        oldest_overdue_seconds=age,
                    )
                )
        return out


def _overdue_jobs(
    conn: sa.Connection, where: sa.ColumnElement[bool], days: int, limit: int
) -> tuple[int, list[OverdueJob]]:
    """How many jobs ``where`` selects, and the ``limit`` that became due first."""
    c = jobs.c
    count = conn.execute(sa.select(sa.func.count()).where(where)).scalar_one()
    rows = conn.execute(
        sa.select(c.job_id, c.state, c.terminal_at, c.attempts, c.last_error)
        .where(where)
        .order_by(c.terminal_at)
        .limit(limit)
    )
    return int(count), [
        OverdueJob(
            job_id=r.job_id,
            state=r.state,
            due_at=_iso(due_at(r.terminal_at, days)) if r.terminal_at else None,
            attempts=r.attempts,
            last_error=r.last_error,
        )
        for r in rows
    ]


def _unknown_jobs(
    conn: sa.Connection, provider: str, limit: int
) -> tuple[int, list[UnknownStatusJob]]:
    """How many of the provider's open jobs are in a status its adapter does not know, and
    the ``limit`` read most recently."""
    c = jobs.c
    where = sa.and_(c.provider == provider, c.state == JobState.PENDING, c.phase == Phase.UNKNOWN)
    count = conn.execute(sa.select(sa.func.count()).where(where)).scalar_one()
    rows = conn.execute(
        sa.select(c.job_id, c.provider_status, c.attempts, c.last_error, c.last_checked_at)
        .where(where)
        .order_by(c.last_checked_at.desc(), c.id)
        .limit(limit)
    )
    return int(count), [
        UnknownStatusJob(
            r.job_id, r.provider_status, r.attempts, r.last_error, _iso(r.last_checked_at)
        )
        for r in rows
    ]
