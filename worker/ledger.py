"""The ledger: every job the worker knows, its state, and an append-only audit trail.

SQLite by default, PostgreSQL for several hosts, both through SQLAlchemy Core. The schema is
owned by the Alembic migrations in ``worker/migrations``; the tables below mirror them, and a
test proves the two agree.

Concurrency rests on three mechanisms:

* A **job claim** is a lease on the job's row, taken with a conditional UPDATE (``WHERE the
  lease is free or expired``). It works the same on SQLite and PostgreSQL. Batch claims on
  PostgreSQL add ``FOR UPDATE SKIP LOCKED`` so two sweeps take different rows.
* Every transition made under a claim is **fenced**: its UPDATE also requires
  ``lease_owner = me``. A worker that stalled past its lease cannot move a job another
  worker has since claimed; the transition matches no row and raises ``LedgerError``.
* A **sweep lease** (one row per provider) keeps two sweeps of one provider apart.

The delete gate (``open_delete_gate``) is one conditional UPDATE: the job must be archived,
have a manifest, not be held, and be claimed by the caller.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.domain import (
    FINAL_STATES,
    JobSnapshot,
    JobState,
    ListedJob,
    Phase,
    is_terminal,
    terminal_since,
)
from worker.errors import ConfigError, LedgerError

# The Alembic revision this code expects. A test checks it equals the migrations' head, so
# "are migrations pending?" is answered without importing Alembic on every command.
SCHEMA_REVISION = "0002"


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, stored naive in UTC.

    SQLite has no time zones; storing naive UTC keeps ``<`` comparisons correct on both
    databases.
    """

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
metadata = sa.MetaData()

# Written out literally, and used as is in queries: SQLite (and a generic PostgreSQL plan)
# uses a partial index only when the query repeats its condition, bound values not counting.
OPEN_JOBS = sa.text("state IN ('pending', 'archived', 'deleting', 'cleaning')")

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(63), nullable=False),
    sa.Column("job_id", sa.String(512), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("tracked", sa.Boolean, nullable=False),
    sa.Column("held", sa.Boolean, nullable=False),
    sa.Column("provider_status", sa.String(64)),
    sa.Column("phase", sa.String(16)),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("last_checked_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("terminal_at", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", UTCDateTime),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("archived_at", UTCDateTime),
    sa.Column("manifest_key", sa.String(1100)),
    sa.Column("files_count", sa.Integer),
    sa.Column("bytes_archived", sa.BigInteger),
    sa.Column("delete_requested_at", UTCDateTime),
    sa.Column("delete_handle", sa.String(255)),
    sa.Column("delete_answer", sa.JSON),
    sa.Column("provider_deleted_at", UTCDateTime),
    sa.Column("deleted_at", UTCDateTime),
    sa.Column("receipt_key", sa.String(1100)),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("provider", "job_id", name="uq_jobs_provider_job"),
    sa.Index("ix_jobs_provider_state_terminal", "provider", "state", "terminal_at"),
    sa.Index("ix_jobs_state", "state"),
    # The jobs a sweep may still act on, in primary-key order: picking the next batch reads
    # this index, whose size is the open backlog, not every job ever deleted. It is partial,
    # WHERE OPEN_JOBS, as migration 0002 creates it. The condition is left out here: its
    # dialect options would import SQLAlchemy's PostgreSQL dialect on every command (a tenth
    # of `retention status`'s start-up), and Alembic does not compare index conditions. A
    # test reads the condition back from the migrated database instead.
    sa.Index("ix_jobs_open", "provider", "id"),
)

archive_files = sa.Table(
    "archive_files",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("job_pk", _ID, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("key", sa.String(1100), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("etag", sa.String(128)),
    sa.Column("version_id", sa.String(1024)),
    sa.Column("origin_bucket", sa.String(63)),
    sa.Column("origin_key", sa.String(1100)),
    sa.Column("stored_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("job_pk", "key", name="uq_archive_files_job_key"),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("provider", sa.String(63), nullable=False),
    sa.Column("job_id", sa.String(512)),
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Index("ix_audit_provider_job", "provider", "job_id"),
    sa.Index("ix_audit_at", "at"),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(128)),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("acquired_at", UTCDateTime),
)


@dataclass(frozen=True, slots=True)
class JobRow:
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
    delete_answer: Any
    provider_deleted_at: datetime | None
    deleted_at: datetime | None
    receipt_key: str | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> JobRow:
        m = row._mapping
        return cls(
            pk=m["id"],
            provider=m["provider"],
            job_id=m["job_id"],
            state=JobState(m["state"]),
            tracked=bool(m["tracked"]),
            held=bool(m["held"]),
            provider_status=m["provider_status"],
            phase=Phase(m["phase"]) if m["phase"] else None,
            first_seen_at=m["first_seen_at"],
            last_checked_at=m["last_checked_at"],
            finished_at=m["finished_at"],
            terminal_at=m["terminal_at"],
            attempts=m["attempts"],
            last_error=m["last_error"],
            next_attempt_at=m["next_attempt_at"],
            lease_owner=m["lease_owner"],
            lease_expires_at=m["lease_expires_at"],
            archived_at=m["archived_at"],
            manifest_key=m["manifest_key"],
            files_count=m["files_count"],
            bytes_archived=m["bytes_archived"],
            delete_requested_at=m["delete_requested_at"],
            delete_handle=m["delete_handle"],
            delete_answer=m["delete_answer"],
            provider_deleted_at=m["provider_deleted_at"],
            deleted_at=m["deleted_at"],
            receipt_key=m["receipt_key"],
        )


@dataclass(frozen=True, slots=True)
class FileRecord:
    key: str
    size: int
    sha256: str
    source: str
    etag: str | None
    version_id: str | None
    origin_bucket: str | None
    origin_key: str | None


@dataclass(frozen=True, slots=True)
class Candidate:
    pk: int
    job_id: str
    state: JobState
    # True when acting on it may end in a delete (it counts against max_deletes_per_sweep).
    may_delete: bool


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    provider: str
    states: dict[str, int]
    held: int
    overdue: list[dict[str, Any]]
    overdue_count: int
    failed: list[dict[str, Any]]


def actor_name() -> str:
    """Who did it, for the audit trail: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class Ledger:
    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self.engine = engine
        self.read_only = read_only
        self.is_postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time. Threads of this process queue here and are woken
        # the moment the writer commits; left to SQLite's busy handler, they would poll with
        # sleeps of up to 100 ms each. Other processes still wait in the busy handler.
        self._writer: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if self.is_postgres else threading.Lock()
        )

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, auto_migrate: bool = True, read_only: bool = False) -> Ledger:
        """Open the ledger at ``url``; bring its schema up to date unless ``read_only``.

        A read-only ledger (``--dry-run``) changes nothing: a SQLite file that does not
        exist yet is not created, and an empty database reads as an empty ledger.
        """
        if read_only:
            return cls._open_read_only(url)
        engine = make_engine(url)
        ledger = cls(engine)
        revision = ledger.schema_revision()
        if revision != SCHEMA_REVISION:
            if not auto_migrate:
                raise ConfigError(
                    f"the ledger schema is at {revision or 'nothing'}, "
                    f"this worker needs {SCHEMA_REVISION}",
                    hint="Run `retention migrate` (or set [ledger] auto_migrate = true)",
                )
            migrate(engine)
        return ledger

    @classmethod
    def _open_read_only(cls, url: str) -> Ledger:
        sa_url = sa.make_url(url)
        if sa_url.get_backend_name() == "sqlite":
            database = sa_url.database
            if not database or database == ":memory:" or not Path(database).exists():
                return cls._empty()
            engine = sa.create_engine(
                f"sqlite:///file:{Path(database).resolve()}?mode=ro&uri=true",
                poolclass=sa.pool.NullPool,
            )
        else:
            engine = make_engine(url)
        ledger = cls(engine, read_only=True)
        revision = ledger.schema_revision()
        if revision is None:
            engine.dispose()
            return cls._empty()
        if revision != SCHEMA_REVISION:
            raise ConfigError(
                f"the ledger schema is at {revision}, this worker needs {SCHEMA_REVISION}",
                hint="Run `retention migrate` first; a dry run never migrates",
            )
        return ledger

    @classmethod
    def _empty(cls) -> Ledger:
        engine = sa.create_engine(
            "sqlite://",
            poolclass=sa.pool.StaticPool,
            connect_args={"check_same_thread": False},
        )
        metadata.create_all(engine)
        return cls(engine, read_only=True)

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            row = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
            return None if row is None else str(row[0])

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        if self.read_only:
            raise LedgerError("the ledger is open read-only (dry run); nothing may change")
        with self._writer, self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn

    def _update_one(
        self, conn: Connection, update: sa.Update, key: sa.ColumnElement[bool]
    ) -> sa.Row[Any] | None:
        """Run an UPDATE meant for the one job row ``key`` selects; the row as it now stands,
        or None if the UPDATE matched nothing.

        One statement where the database has ``UPDATE ... RETURNING`` (PostgreSQL, SQLite
        3.35+); else the UPDATE and a SELECT, in the caller's transaction either way.
        """
        if self.engine.dialect.update_returning:
            return conn.execute(update.returning(jobs)).one_or_none()
        if conn.execute(update).rowcount != 1:
            return None
        return conn.execute(sa.select(jobs).where(key)).one()

    def _insert_missing(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert job rows, skipping any another process inserted a moment before."""
        if not rows:
            return
        if self.is_postgres:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(pg_insert(jobs).on_conflict_do_nothing(), rows)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            conn.execute(sqlite_insert(jobs).on_conflict_do_nothing(), rows)

    def _audit(
        self,
        conn: Connection,
        *,
        provider: str,
        job_id: str | None,
        event: str,
        now: datetime,
        actor: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        conn.execute(
            audit_events.insert().values(
                at=now,
                provider=provider,
                job_id=job_id,
                event=event,
                actor=actor,
                detail=_json_safe(detail or {}),
            )
        )

    # -- reading ---------------------------------------------------------------------------

    def get(self, provider: str, job_id: str) -> JobRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(jobs).where(jobs.c.provider == provider, jobs.c.job_id == job_id)
            ).first()
        return None if row is None else JobRow.from_row(row)

    def files(self, pk: int) -> dict[str, FileRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(archive_files).where(archive_files.c.job_pk == pk)).all()
        return {
            r.key: FileRecord(
                key=r.key,
                size=r.size,
                sha256=r.sha256,
                source=r.source,
                etag=r.etag,
                version_id=r.version_id,
                origin_bucket=r.origin_bucket,
                origin_key=r.origin_key,
            )
            for r in rows
        }

    def audit_trail(self, provider: str, job_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
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
            with self.engine.connect() as conn:
                rows = [JobRow.from_row(r) for r in conn.execute(query.order_by(c.id).limit(batch))]
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

    def candidates(
        self,
        provider: str,
        *,
        now: datetime,
        due_cutoff: datetime,
        refreshed_since: datetime,
        after_pk: int = 0,
        limit: int = 500,
    ) -> list[Candidate]:
        """The next batch of jobs a sweep should look at, in primary-key order.

        * jobs past the archive step (resume the delete);
        * terminal jobs whose retention clock started before ``due_cutoff`` (due);
        * jobs whose status is unknown or not terminal and that this sweep's listing did not
          already refresh (their status must be read fresh).

        Held jobs and jobs deferred into the future are left out.
        """
        query = self.candidates_query(
            provider,
            now=now,
            due_cutoff=due_cutoff,
            refreshed_since=refreshed_since,
            after_pk=after_pk,
            limit=limit,
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            Candidate(
                pk=r.id,
                job_id=r.job_id,
                state=JobState(r.state),
                may_delete=r.state != JobState.PENDING or r.terminal_at is not None,
            )
            for r in rows
        ]

    @staticmethod
    def candidates_query(
        provider: str,
        *,
        now: datetime,
        due_cutoff: datetime,
        refreshed_since: datetime,
        after_pk: int,
        limit: int,
    ) -> sa.Select[Any]:
        """The query behind ``candidates``: a range scan of the ``ix_jobs_open`` index."""
        c = jobs.c
        resumable = c.state.in_([JobState.ARCHIVED, JobState.DELETING, JobState.CLEANING])
        due = sa.and_(
            c.state == JobState.PENDING, c.terminal_at.is_not(None), c.terminal_at <= due_cutoff
        )
        stale = sa.and_(
            c.state == JobState.PENDING,
            c.terminal_at.is_(None),
            sa.or_(c.last_checked_at.is_(None), c.last_checked_at < refreshed_since),
        )
        return (
            sa.select(c.id, c.job_id, c.state, c.terminal_at)
            .where(
                c.provider == provider,
                OPEN_JOBS,
                c.held.is_(False),
                c.id > after_pk,
                sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
                sa.or_(resumable, due, stale),
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
        with self.engine.connect() as conn:
            return [(r.id, r.job_id) for r in conn.execute(query)]

    def waiting(self, provider: str, *, due_cutoff: datetime) -> tuple[int, int]:
        """(held, not yet due) among the provider's pending jobs: what a sweep leaves alone."""
        c = jobs.c
        pending = sa.and_(c.provider == provider, c.state == JobState.PENDING)
        with self.engine.connect() as conn:
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
        self, retain_days: dict[str, int], *, now: datetime, limit: int = 20
    ) -> list[ProviderStatus]:
        """Counts by provider and state, overdue jobs and failed jobs, for `retention status`."""
        c = jobs.c
        out: list[ProviderStatus] = []
        with self.engine.connect() as conn:
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
                overdue_where = sa.and_(
                    c.provider == provider,
                    c.held.is_(False),
                    sa.or_(
                        c.state.in_([JobState.ARCHIVED, JobState.DELETING, JobState.CLEANING]),
                        sa.and_(
                            c.state == JobState.PENDING,
                            c.terminal_at.is_not(None),
                            c.terminal_at <= now - timedelta(days=days),
                        ),
                    ),
                )
                overdue_count = conn.execute(
                    sa.select(sa.func.count()).where(overdue_where)
                ).scalar_one()
                overdue = [
                    {
                        "job_id": r.job_id,
                        "state": r.state,
                        "due_at": _iso(r.terminal_at + timedelta(days=days))
                        if r.terminal_at
                        else None,
                        "attempts": r.attempts,
                        "last_error": r.last_error,
                    }
                    for r in conn.execute(
                        sa.select(c.job_id, c.state, c.terminal_at, c.attempts, c.last_error)
                        .where(overdue_where)
                        .order_by(c.terminal_at)
                        .limit(limit)
                    )
                ]
                failed = [
                    {
                        "job_id": r.job_id,
                        "attempts": r.attempts,
                        "last_error": r.last_error,
                        "failed_at": _iso(r.last_error_at),
                    }
                    for r in conn.execute(
                        sa.select(c.job_id, c.attempts, c.last_error, c.last_error_at)
                        .where(c.provider == provider, c.state == JobState.FAILED)
                        .order_by(c.last_error_at.desc())
                        .limit(limit)
                    )
                ]
                out.append(
                    ProviderStatus(
                        provider=provider,
                        states=counts.get(provider, {}),
                        held=int(held.get(provider, 0)),
                        overdue=overdue,
                        overdue_count=int(overdue_count),
                        failed=failed,
                    )
                )
        return out

    # -- discovery, tracking and holds -----------------------------------------------------

    def record_listing(self, provider: str, listed: Sequence[ListedJob], now: datetime) -> int:
        """Fold one page of a provider's listing into the ledger; return how many were new.

        A job first seen terminal starts its retention clock now (the provider gave no
        timestamp). A job whose status went back to running has its clock reset.
        """
        if not listed:
            return 0
        c = jobs.c
        ids = [item.job_id for item in listed]
        with self._tx() as conn:
            existing = {
                r.job_id: r
                for r in conn.execute(
                    sa.select(c.id, c.job_id, c.state, c.terminal_at).where(
                        c.provider == provider, c.job_id.in_(ids)
                    )
                )
            }
            new_rows = []
            updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for item in listed:
                row = existing.get(item.job_id)
                terminal = is_terminal(item.phase)
                # A status word we do not know is not a fresh read we can use: the job stays
                # stale, so the sweep reads it itself and records why it is left alone.
                checked = None if item.phase == Phase.UNKNOWN else now
                if row is None:
                    new_rows.append(
                        _new_job(provider, item.job_id, now)
                        | {
                            "provider_status": item.status[:64],
                            "phase": item.phase,
                            "last_checked_at": checked,
                            "finished_at": item.finished_at if terminal else None,
                            "terminal_at": terminal_since(item.finished_at, now)
                            if terminal
                            else None,
                        }
                    )
                    continue
                if row.state != JobState.PENDING:
                    continue
                values: dict[str, Any] = {
                    "provider_status": item.status[:64],
                    "phase": item.phase,
                    "updated_at": now,
                }
                if checked is not None:
                    values["last_checked_at"] = checked
                if terminal:
                    # The same rule as a fresh read: the provider's finish time if it gave
                    # one, never later than our first sighting.
                    values["terminal_at"] = terminal_since(item.finished_at, row.terminal_at or now)
                    values["finished_at"] = item.finished_at
                else:
                    values["terminal_at"] = None
                # Rows that set the same columns go in one executemany, not one statement each:
                # a sweep re-reads every listed job, so this is per job on every sweep.
                updates.setdefault(tuple(sorted(values)), []).append(
                    {f"v_{k}": v for k, v in values.items()} | {"v_id": row.id}
                )
            for columns, rows in updates.items():
                conn.execute(
                    jobs.update()
                    .where(c.id == sa.bindparam("v_id"))
                    .values({k: sa.bindparam(f"v_{k}") for k in columns}),
                    rows,
                )
            self._insert_missing(conn, new_rows)
        return len(new_rows)

    def track(self, provider: str, job_ids: Iterable[str], *, now: datetime) -> list[str]:
        """Record job ids the worker must look after; return the ones that were new."""
        added: list[str] = []
        actor = actor_name()
        with self._tx() as conn:
            for job_id in dict.fromkeys(job_ids):
                row = conn.execute(
                    sa.select(jobs.c.id, jobs.c.tracked).where(
                        jobs.c.provider == provider, jobs.c.job_id == job_id
                    )
                ).first()
                if row is None:
                    self._insert_missing(conn, [_new_job(provider, job_id, now, tracked=True)])
                    added.append(job_id)
                    self._audit(
                        conn,
                        provider=provider,
                        job_id=job_id,
                        event="tracked",
                        now=now,
                        actor=actor,
                    )
                elif not row.tracked:
                    conn.execute(
                        jobs.update()
                        .where(jobs.c.id == row.id)
                        .values(tracked=True, updated_at=now)
                    )
        return added

    def set_hold(
        self, provider: str, job_id: str, *, held: bool, now: datetime, reason: str | None = None
    ) -> bool:
        """Set or lift a legal hold; the job need not be known yet. Return whether it changed."""
        actor = actor_name()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(jobs.c.id, jobs.c.held, jobs.c.state).where(
                    jobs.c.provider == provider, jobs.c.job_id == job_id
                )
            ).first()
            if row is None:
                if not held:
                    return False
                self._insert_missing(conn, [_new_job(provider, job_id, now) | {"held": True}])
            elif bool(row.held) == held:
                return False
            else:
                conn.execute(
                    jobs.update().where(jobs.c.id == row.id).values(held=held, updated_at=now)
                )
            state = row.state if row is not None else JobState.PENDING
            self._audit(
                conn,
                provider=provider,
                job_id=job_id,
                event="hold" if held else "release",
                now=now,
                actor=actor,
                detail={"reason": reason, "state": state},
            )
        return True

    def retry(self, provider: str, job_id: str, *, now: datetime) -> bool:
        """Put a failed job back in line for the next sweep."""
        with self._tx() as conn:
            result = conn.execute(
                jobs.update()
                .where(
                    jobs.c.provider == provider,
                    jobs.c.job_id == job_id,
                    jobs.c.state == JobState.FAILED,
                )
                .values(state=JobState.PENDING, attempts=0, next_attempt_at=None, updated_at=now)
            )
            if result.rowcount:
                self._audit(
                    conn,
                    provider=provider,
                    job_id=job_id,
                    event="retry",
                    now=now,
                    actor=actor_name(),
                )
        return bool(result.rowcount)

    # -- claims ----------------------------------------------------------------------------

    def claim(
        self, provider: str, job_id: str, *, owner: str, ttl: timedelta, now: datetime
    ) -> JobRow | None:
        """Take the job's lease if it is free or expired; return the row, or None if busy.

        A job the ledger has never seen is recorded first (a tracked id, or one fanned out
        from a listing that a dry run did not store).

        PostgreSQL: the row is selected ``FOR UPDATE SKIP LOCKED``, so a worker never waits on
        a row another is claiming this instant; it moves on. SQLite: the write lock taken at
        BEGIN IMMEDIATE serialises claimers and the conditional UPDATE decides.
        """
        c = jobs.c
        free = sa.or_(
            c.lease_owner.is_(None),
            c.lease_expires_at.is_(None),
            c.lease_expires_at < now,
            c.lease_owner == owner,
        )
        with self._tx() as conn:
            exists = conn.execute(
                sa.select(c.id).where(c.provider == provider, c.job_id == job_id)
            ).first()
            if exists is None:
                self._insert_missing(conn, [_new_job(provider, job_id, now)])
            where: list[Any] = [c.provider == provider, c.job_id == job_id, free]
            if self.is_postgres:
                locked = conn.execute(
                    sa.select(c.id).where(*where).with_for_update(skip_locked=True)
                ).first()
                if locked is None:
                    return None
                where = [c.id == locked.id]
            row = self._update_one(
                conn,
                jobs.update().where(*where).values(lease_owner=owner, lease_expires_at=now + ttl),
                key=sa.and_(c.provider == provider, c.job_id == job_id),
            )
        return None if row is None else JobRow.from_row(row)

    def renew(self, pk: int, *, owner: str, ttl: timedelta, now: datetime) -> bool:
        with self._tx() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.id == pk, jobs.c.lease_owner == owner)
                .values(lease_expires_at=now + ttl)
            )
        return result.rowcount == 1

    def release(self, pk: int, *, owner: str) -> None:
        with self._tx() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == pk, jobs.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def _transition(
        self,
        row: JobRow,
        owner: str,
        values: dict[str, Any],
        *,
        now: datetime,
        states: Iterable[JobState] | None = None,
        extra: Sequence[Any] = (),
        event: str | None = None,
        detail: dict[str, Any] | None = None,
        refusal: str = "this worker no longer holds the job's claim, or the job moved on",
        also: Callable[[Connection], None] | None = None,
    ) -> JobRow:
        """One fenced UPDATE, its audit event, ``also`` and the fresh row: one transaction.

        Fenced: the UPDATE also requires ``lease_owner = owner`` (and the given states and
        conditions). If it matches no row, nothing changes and LedgerError says why.
        """
        where = [jobs.c.id == row.pk, jobs.c.lease_owner == owner, *extra]
        if states is not None:
            where.append(jobs.c.state.in_(list(states)))
        with self._tx() as conn:
            fresh = self._update_one(
                conn,
                jobs.update().where(*where).values(**values, updated_at=now),
                key=jobs.c.id == row.pk,
            )
            if fresh is None:
                raise LedgerError(
                    refusal, provider=row.provider, job_id=row.job_id, hint="Nothing was changed"
                )
            if also is not None:
                also(conn)
            if event is not None:
                self._audit(
                    conn,
                    provider=row.provider,
                    job_id=row.job_id,
                    event=event,
                    now=now,
                    actor=owner,
                    detail=detail,
                )
        return JobRow.from_row(fresh)

    # -- transitions under a claim ---------------------------------------------------------

    def record_status(
        self, row: JobRow, snapshot: JobSnapshot, *, owner: str, now: datetime
    ) -> JobRow:
        """Store a fresh read of the job's status; start or reset its retention clock."""
        terminal_at = None
        if snapshot.terminal:
            terminal_at = terminal_since(snapshot.finished_at, row.terminal_at or now)
        values = {
            "provider_status": snapshot.status[:64],
            "phase": snapshot.phase,
            "finished_at": snapshot.finished_at,
            "terminal_at": terminal_at,
            "last_checked_at": now,
        }
        return self._transition(row, owner, values, now=now, states=[JobState.PENDING])

    def mark_gone(self, row: JobRow, answer: Any, *, owner: str, now: datetime) -> JobRow:
        values = {
            "state": JobState.GONE,
            "last_checked_at": now,
            "delete_answer": _json_safe(answer),
        }
        return self._transition(
            row,
            owner,
            values,
            now=now,
            states=[JobState.PENDING],
            event="gone",
            detail={"answer": answer},
        )

    def record_file(self, row: JobRow, record: FileRecord, *, owner: str, now: datetime) -> None:
        """Remember one verified object, so a resumed job does not fetch it again."""

        def store(conn: Connection) -> None:
            conn.execute(
                archive_files.delete().where(
                    archive_files.c.job_pk == row.pk, archive_files.c.key == record.key
                )
            )
            conn.execute(
                archive_files.insert().values(
                    job_pk=row.pk,
                    key=record.key,
                    size=record.size,
                    sha256=record.sha256,
                    source=record.source,
                    etag=record.etag,
                    version_id=record.version_id,
                    origin_bucket=record.origin_bucket,
                    origin_key=record.origin_key,
                    stored_at=now,
                )
            )

        self._transition(row, owner, {}, now=now, states=[JobState.PENDING], also=store)

    def mark_archived(
        self,
        row: JobRow,
        *,
        owner: str,
        manifest_key: str,
        files: Sequence[FileRecord],
        now: datetime,
    ) -> JobRow:
        total = sum(f.size for f in files)
        values = {
            "state": JobState.ARCHIVED,
            "archived_at": now,
            "manifest_key": manifest_key,
            "files_count": len(files),
            "bytes_archived": total,
            "last_error": None,
            "next_attempt_at": None,
        }
        detail = {
            "manifest_key": manifest_key,
            "files": [{"key": f.key, "size": f.size, "sha256": f.sha256} for f in files],
            "bytes": total,
        }
        return self._transition(
            row, owner, values, now=now, states=[JobState.PENDING], event="archived", detail=detail
        )

    def reopen(
        self, row: JobRow, missing: Iterable[str], reason: str, *, owner: str, now: datetime
    ) -> JobRow:
        """Send an archived job back to be archived again: its archive lost something.

        The provider still has the job (the gate never opened), so the worker fetches again
        what vanished; files that are still there are kept.
        """
        missing = list(missing)

        def forget(conn: Connection) -> None:
            conn.execute(
                archive_files.delete().where(
                    archive_files.c.job_pk == row.pk, archive_files.c.key.in_(missing)
                )
            )

        return self._transition(
            row,
            owner,
            {"state": JobState.PENDING, "manifest_key": None},
            now=now,
            states=[JobState.ARCHIVED],
            event="reopened",
            detail={"reason": reason, "missing": missing},
            also=forget,
        )

    def open_delete_gate(self, row: JobRow, *, owner: str, now: datetime) -> JobRow:
        """The ledger half of the one rule: move to DELETING only from a verified archive.

        One conditional UPDATE: archived (or a delete whose answer was lost), a manifest on
        record, not held, and claimed by ``owner``. Anything else raises LedgerError.
        """
        # The first request's time is kept while a delete is resent or polled: it is when the
        # delete was asked for, and how old a pending asynchronous delete is.
        requested = row.delete_requested_at if row.state == JobState.DELETING else None
        return self._transition(
            row,
            owner,
            {"state": JobState.DELETING, "delete_requested_at": requested or now},
            now=now,
            states=[JobState.ARCHIVED, JobState.DELETING],
            extra=[jobs.c.manifest_key.is_not(None), jobs.c.held.is_(False)],
            event="delete_requested",
            detail={"manifest_key": row.manifest_key, "resend": row.state == JobState.DELETING},
            refusal="the delete gate stayed shut: the job is not archived with a manifest, "
            "is held, or is claimed by another worker",
        )

    def record_delete_pending(
        self, row: JobRow, handle: str, answer: Any, *, owner: str, now: datetime
    ) -> JobRow:
        """Store an asynchronous delete's handle before the first poll, so a crash resumes it."""
        values = {"delete_handle": handle, "delete_answer": _json_safe(answer)}
        return self._transition(
            row,
            owner,
            values,
            now=now,
            states=[JobState.DELETING],
            event="delete_pending",
            detail={"handle": handle},
        )

    def forget_delete_handle(
        self, row: JobRow, reason: str, *, owner: str, now: datetime
    ) -> JobRow:
        """Drop a spent asynchronous delete; the next attempt sends a new one."""
        values = {"delete_handle": None, "delete_requested_at": None}
        return self._transition(
            row,
            owner,
            values,
            now=now,
            states=[JobState.DELETING],
            event="delete_handle_dropped",
            detail={"handle": row.delete_handle, "reason": reason},
        )

    def record_provider_deleted(
        self, row: JobRow, answer: Any, *, owner: str, now: datetime
    ) -> JobRow:
        values = {
            "state": JobState.CLEANING,
            "delete_answer": _json_safe(answer),
            "provider_deleted_at": now,
        }
        return self._transition(
            row,
            owner,
            values,
            now=now,
            states=[JobState.DELETING],
            event="provider_deleted",
            detail={"answer": answer},
        )

    def audit_event(
        self, row: JobRow, event: str, detail: dict[str, Any], *, owner: str, now: datetime
    ) -> None:
        with self._tx() as conn:
            self._audit(
                conn,
                provider=row.provider,
                job_id=row.job_id,
                event=event,
                now=now,
                actor=owner,
                detail=detail,
            )

    def mark_deleted(self, row: JobRow, *, receipt_key: str, owner: str, now: datetime) -> JobRow:
        values = {
            "state": JobState.DELETED,
            "receipt_key": receipt_key,
            "deleted_at": now,
            "last_error": None,
            "next_attempt_at": None,
        }
        return self._transition(
            row,
            owner,
            values,
            now=now,
            states=[JobState.CLEANING],
            event="deleted",
            detail={"receipt_key": receipt_key},
        )

    def defer(
        self, row: JobRow, error: str, *, owner: str, now: datetime, retry_at: datetime
    ) -> JobRow:
        """A transient failure: keep the state, note the error, try again after ``retry_at``."""
        values = {
            "attempts": jobs.c.attempts + 1,
            "last_error": error[:4000],
            "last_error_at": now,
            "next_attempt_at": retry_at,
        }
        return self._transition(row, owner, values, now=now)

    def fail(self, row: JobRow, error: str, *, owner: str, now: datetime) -> JobRow:
        """A permanent failure before the delete gate: the job waits for a person.

        A job past the gate is never marked failed (its delete may have happened); it is
        deferred instead so the answer is eventually recorded.
        """
        values = {
            "state": JobState.FAILED,
            "attempts": jobs.c.attempts + 1,
            "last_error": error[:4000],
            "last_error_at": now,
        }
        return self._transition(
            row,
            owner,
            values,
            now=now,
            states=[JobState.PENDING, JobState.ARCHIVED],
            event="failed",
            detail={"error": error[:4000]},
        )

    # -- sweep leases ----------------------------------------------------------------------

    def acquire_lease(self, name: str, *, owner: str, ttl: timedelta, now: datetime) -> bool:
        """Take a named lease if it is free, expired or already ours."""
        with self._tx() as conn:
            exists = conn.execute(sa.select(leases.c.name).where(leases.c.name == name)).first()
            if exists is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            leases.insert().values(
                                name=name, owner=owner, expires_at=now + ttl, acquired_at=now
                            )
                        )
                    return True
                except sa.exc.IntegrityError:
                    pass
            result = conn.execute(
                leases.update()
                .where(
                    leases.c.name == name,
                    sa.or_(
                        leases.c.owner.is_(None),
                        leases.c.expires_at < now,
                        leases.c.owner == owner,
                    ),
                )
                .values(owner=owner, expires_at=now + ttl, acquired_at=now)
            )
            return result.rowcount == 1

    def renew_lease(self, name: str, *, owner: str, ttl: timedelta, now: datetime) -> bool:
        with self._tx() as conn:
            result = conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.owner == owner)
                .values(expires_at=now + ttl)
            )
        return result.rowcount == 1

    def release_lease(self, name: str, *, owner: str) -> None:
        with self._tx() as conn:
            conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.owner == owner)
                .values(owner=None, expires_at=None)
            )

    def lease_holder(self, name: str, *, now: datetime) -> tuple[str, datetime] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(leases.c.owner, leases.c.expires_at).where(leases.c.name == name)
            ).first()
        if row is None or row.owner is None or row.expires_at is None or row.expires_at < now:
            return None
        return str(row.owner), row.expires_at


def _new_job(provider: str, job_id: str, now: datetime, *, tracked: bool = False) -> dict[str, Any]:
    return {
        "provider": provider,
        "job_id": job_id,
        "state": JobState.PENDING,
        "tracked": tracked,
        "held": False,
        "first_seen_at": now,
        "attempts": 0,
        "updated_at": now,
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def is_final(state: JobState) -> bool:
    return state in FINAL_STATES


# -- engines and migrations ----------------------------------------------------------------


def make_engine(url: str) -> Engine:
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        database = sa_url.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            sa_url,
            connect_args={"check_same_thread": False, "timeout": 60},
            pool_size=16,
            max_overflow=16,
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # SQLAlchemy, not the sqlite3 module, decides when transactions begin (below).
            dbapi_conn.isolation_level = None
            # WAL lets readers proceed while one writer commits; the busy timeout makes a
            # second writer wait instead of failing. Foreign keys are off by default in SQLite.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # A write transaction takes the write lock at BEGIN: a deferred one that reads and
            # then writes can deadlock against another and fail with "database is locked".
            # Reads stay deferred, so WAL readers never wait.
            write = conn.get_execution_options().get("write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return sa.create_engine(sa_url, pool_pre_ping=True, pool_size=10, max_overflow=10)


_MIGRATE_LOCK = threading.Lock()


def migrate(engine: Engine) -> None:
    """Upgrade the schema to head. Serialised across processes on PostgreSQL and SQLite."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with _MIGRATE_LOCK, _cross_process_lock(engine) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


@contextlib.contextmanager
def _cross_process_lock(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            # Several workers starting together must not run the same DDL twice.
            conn.execute(sa.text("SELECT pg_advisory_lock(727274)"))
            conn.commit()
            try:
                yield conn
                conn.commit()
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(727274)"))
                conn.commit()
        return
    import fcntl

    database = engine.url.database
    lock_path = Path(f"{database}.migrate.lock") if database and database != ":memory:" else None
    handle = open(lock_path, "a+") if lock_path else None  # noqa: SIM115
    try:
        if handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
        with engine.connect() as conn:
            yield conn
            conn.commit()
    finally:
        if handle:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
