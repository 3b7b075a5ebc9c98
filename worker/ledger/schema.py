"""The ledger's tables, engines and migrations, and how a row becomes a ``JobRow``.

The schema is owned by the Alembic migrations in ``worker/migrations``; the tables below
mirror them, and a test proves the two agree.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.domain import OPEN_STATES, JobRow, JobState, Phase

# The Alembic revision this code expects. A test checks it equals the migrations' head, so
# "are migrations pending?" is answered without importing Alembic on every command.
SCHEMA_REVISION = "0004"


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


def open_jobs_condition(states: frozenset[JobState] = OPEN_STATES) -> str:
    """``state IN (...)`` over the open states, in the lifecycle's order, as SQL text."""
    listed = ", ".join(f"'{s.value}'" for s in JobState if s in states)
    return f"state IN ({listed})"


# Written out literally, and used as is in queries: SQLite (and a generic PostgreSQL plan)
# uses a partial index only when the query repeats its condition, bound values not counting.
OPEN_JOBS = sa.text(open_jobs_condition())

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
    # The policy in force when the job was archived (reports never recompute it).
    sa.Column("retain_days", sa.Integer),
    sa.Column("due_at", UTCDateTime),
    sa.Column("due_reason", sa.String(300)),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("provider", "job_id", name="uq_jobs_provider_job"),
    sa.Index("ix_jobs_provider_state_terminal", "provider", "state", "terminal_at"),
    sa.Index("ix_jobs_state", "state"),
    # The jobs a sweep may still act on, in primary-key order: picking the next batch reads
    # this index, whose size is the open backlog, not every job ever deleted. It is partial,
    # WHERE OPEN_JOBS, as the migrations create it. The condition is left out here: its
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
    # The source object in the user's own bucket as it was archived: cleanup deletes that
    # version (or that ETag) only, never whatever is at the key later.
    sa.Column("origin_etag", sa.String(128)),
    sa.Column("origin_version_id", sa.String(1024)),
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
    sa.Column("renewed_at", UTCDateTime),
)

# One row per sweep: the deletes it may still start (max_deletes_per_sweep), counted at the
# delete gate by every worker that serves the sweep.
sweep_budgets = sa.Table(
    "sweep_budgets",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("provider", sa.String(63), nullable=False),
    sa.Column("max_deletes", sa.Integer, nullable=False),
    sa.Column("used", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_sweep_budgets_created", "created_at"),
)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One archived object, verified."""

    key: str
    size: int
    sha256: str
    source: str
    etag: str | None = None
    version_id: str | None = None
    # Set when the output came from one of the user's own buckets.
    origin_bucket: str | None = None
    origin_key: str | None = None
    origin_etag: str | None = None
    origin_version_id: str | None = None


def job_row(row: sa.Row[Any]) -> JobRow:
    m = row._mapping
    return JobRow(
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
        retain_days=m["retain_days"],
        due_at=m["due_at"],
        due_reason=m["due_reason"],
    )


def file_record(row: sa.Row[Any]) -> FileRecord:
    m = row._mapping
    return FileRecord(**{name: m[name] for name in FileRecord.__dataclass_fields__})


def actor_name() -> str:
    """Who did it, for the audit trail: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
    config.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
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
