"""The ledger's tables, engines and migrations, and how a row becomes a ``JobRow``.

The schema is owned by the Alembic migrations in ``worker/migrations``; the tables below
mirror them, and a test proves the two agree.

A database that cannot be reached or opened raises ``LedgerUnavailable`` (``ledger_errors``),
naming the ledger with its password masked: every way into the database passes there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.domain import OPEN_STATES, JobRow, JobState, Phase
from worker.errors import LedgerUnavailable
from worker.redact import REDACTOR, mask_url

# The Alembic revision this code expects. A test checks it equals the migrations' head, so
# "are migrations pending?" is answered without importing Alembic on every command.
SCHEMA_REVISION = "0006"


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

    # On SQLite a datetime is the text SQLAlchemy's DATETIME writes by default, and reads
    # back with ``fromisoformat``: "YYYY-MM-DD HH:MM:SS.ffffff". A job's every step binds
    # a few datetimes and reads a dozen, so on SQLite the conversion is done in one step
    # here, to and from the very same text (a test compares the two ways).

    def bind_processor(self, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_datetime
        return super().result_processor(dialect, coltype)


def _sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use an aware UTC datetime")
        value = value.astimezone(UTC)
    # Less the "+00:00" of UTC.
    return value.isoformat(" ", "microseconds")[:-6]


def _sqlite_datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value + "+00:00")


_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
metadata = sa.MetaData()


def open_jobs_condition(states: frozenset[JobState] = OPEN_STATES) -> str:
    """``state IN (...)`` over ``states`` (the open states unless given), in the lifecycle's
    order, as SQL text."""
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
    # The manifest object as written (its ETag, and its version where the bucket keeps
    # versions): which object at manifest_key the job was archived with.
    sa.Column("manifest_etag", sa.String(128)),
    sa.Column("manifest_version_id", sa.String(1024)),
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
    # What the archive recorded of the job's outputs: the read before the delete is held to
    # it (``outputs.compare_outputs``). How many times the job was archived. Why it is kept.
    sa.Column("archived_outputs", sa.JSON),
    sa.Column("archive_revision", sa.Integer, nullable=False, server_default="0"),
    sa.Column("kept_reason", sa.String(64)),
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


# The columns a ``JobRow`` is read from, in the order of its fields: a statement that
# selects (or returns) these builds a JobRow from its row positionally, with no lookups.
JOB_ROW_COLUMNS: tuple[sa.Column[Any], ...] = tuple(
    jobs.c.id if name == "pk" else jobs.c[name] for name in JobRow.__dataclass_fields__
)
_FIELDS = list(JobRow.__dataclass_fields__)
_STATE, _PHASE = _FIELDS.index("state"), _FIELDS.index("phase")


# The enums by value: a dict lookup, not the Enum's call, for every row read.
_STATES: dict[str, JobState] = {state.value: state for state in JobState}
_PHASES: dict[str, Phase] = {phase.value: phase for phase in Phase}


def job_row_of(values: Sequence[Any]) -> JobRow:
    """A JobRow from the values of ``JOB_ROW_COLUMNS``, in that order (a list is reused)."""
    v = values if isinstance(values, list) else list(values)
    state = v[_STATE]
    v[_STATE] = _STATES.get(state) or JobState(state)
    phase = v[_PHASE]
    v[_PHASE] = (_PHASES.get(phase) or Phase(phase)) if phase else None
    return JobRow(*v)


def job_row(row: sa.Row[Any]) -> JobRow:
    """A JobRow from a SQLAlchemy row that has every column of ``JOB_ROW_COLUMNS``."""
    m = row._mapping
    return job_row_of([m[column] for column in JOB_ROW_COLUMNS])


# The columns a ``FileRecord`` is read from, in the order of its fields.
FILE_RECORD_COLUMNS: tuple[sa.Column[Any], ...] = tuple(
    archive_files.c[name] for name in FileRecord.__dataclass_fields__
)


def actor_name() -> str:
    """Who did it, for the audit trail: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


# -- engines and migrations ----------------------------------------------------------------


def shown_url(url: str | sa.URL) -> str:
    """The ledger's URL as messages show it: every credential a driver reads masked, in the
    userinfo and in the query string (``redact.mask_url``), and anything else known secret."""
    text = url.render_as_string(hide_password=False) if isinstance(url, sa.URL) else url
    return REDACTOR.scrub(mask_url(text))


@contextlib.contextmanager
def ledger_errors(url: str | sa.URL) -> Iterator[None]:
    """Translate a database that cannot be reached or opened into LedgerUnavailable.

    The DBAPI's OperationalError and InterfaceError when they mean that (a refused or dropped
    connection, a file that cannot be opened, a lock held past the busy timeout), a
    connection SQLAlchemy found dropped, and a folder for a SQLite file that cannot be made.
    Other errors (a constraint, a bad statement, two transactions that met) pass unchanged.
    """
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        if not _unusable(exc.orig):
            raise
        raise _unavailable(url, exc.orig if exc.orig is not None else exc) from exc
    except sa.exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise _unavailable(url, exc.orig if exc.orig is not None else exc) from exc
    except OSError as exc:  # make_engine's folder for a SQLite file
        raise _unavailable(url, exc) from exc


# SQLite's primary result codes for a database that cannot be used now: PERM, BUSY, LOCKED,
# READONLY, IOERR, FULL, CANTOPEN. Its OperationalError also stands for a missing table or a
# syntax error, which are bugs.
_SQLITE_UNUSABLE = frozenset({3, 5, 6, 8, 10, 13, 14})


def _unusable(orig: BaseException | None) -> bool:
    """Whether the driver's error means the database cannot be used now."""
    if orig is not None and type(orig).__module__.startswith("sqlite3"):
        code = getattr(orig, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in _SQLITE_UNUSABLE
    # PostgreSQL: all of them but a serialization failure or a deadlock (SQLSTATE class 40),
    # where two transactions met and the database answered.
    return not str(getattr(orig, "sqlstate", None) or "").startswith("40")


def _unavailable(url: str | sa.URL, cause: BaseException) -> LedgerUnavailable:
    detail = (str(cause).strip().splitlines() or [""])[0]
    return LedgerUnavailable(
        f"the ledger at {shown_url(url)} cannot be used "
        f"({type(cause).__name__}: {REDACTOR.scrub(detail) or 'no detail'})",
        hint="Check that its database is up and that [ledger] url is right; a later run "
        "picks up where this one stopped",
    )


# JSON for the ledger's JSON columns (an audit event's detail, a provider's answer):
# anything JSON has no type for (a datetime, say) is stored as its str. What json.dumps(value,
# default=str) writes, with the encoder made once rather than at every call.
_json_text = json.JSONEncoder(default=str).encode


def make_engine(url: str) -> Engine:
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        database = sa_url.database
        if database and database != ":memory:":
            with ledger_errors(sa_url):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            sa_url,
            connect_args={"check_same_thread": False, "timeout": 60},
            pool_size=16,
            max_overflow=16,
            json_serializer=_json_text,
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # SQLAlchemy (below) and Database.write, not the sqlite3 module, decide when
            # transactions begin.
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
    return sa.create_engine(
        sa_url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        json_serializer=_json_text,
    )


_MIGRATE_LOCK = threading.Lock()


def migrate(engine: Engine) -> None:
    """Upgrade the schema to head. Serialised across processes on PostgreSQL and SQLite."""
    # Alembic logs each of its own plugins at INFO as it is imported; the upgrades it runs
    # stay at INFO, so a new or upgraded ledger still says which migrations ran.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
    with ledger_errors(engine.url), _MIGRATE_LOCK, _cross_process_lock(engine) as conn:
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
