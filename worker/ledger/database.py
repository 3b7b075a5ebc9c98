"""One database, shared by the ledger's parts: its transactions and the statements they share.

Two ways in:

* ``tx()`` and ``read()`` hand out a SQLAlchemy ``Connection``, for work done once per sweep
  or per command (discovery, sweep leases, budgets, reports), where building statements
  with SQLAlchemy Core costs nothing that matters.
* ``write()`` and ``reading()`` hand out a ``Tx``: a pooled DBAPI connection that runs
  ``Prepared`` statements, for the steps every job takes (claims, transitions, its files).
  Those statements are written with SQLAlchemy Core like the rest, but compiled once per
  dialect; a call converts its parameters with the dialect's own type processors and runs
  the SQL the compiler wrote. Building, hashing and looking up each statement on every call,
  and SQLAlchemy's per-connection and per-execution bookkeeping, cost a due job several
  times the CPU of its SQL.

Every connection is made by the engine's pool, so it is set up (its PRAGMAs on SQLite) once,
not per transaction; both ways take the same per-process writer lock on SQLite. Errors of
the driver are raised as SQLAlchemy's (``sa.exc.OperationalError`` and so on) either way,
and a connection the database dropped is discarded, as SQLAlchemy does. A database that
cannot be reached or opened leaves all four as ``LedgerUnavailable`` (``ledger_errors``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.dml import UpdateBase

from worker.domain import INITIAL_STATE, JobRow
from worker.errors import LedgerError
from worker.ledger.schema import JOB_ROW_COLUMNS, audit_events, job_row_of, jobs, ledger_errors

# The values one statement binds, by name: whatever its columns' types take.
Params = Mapping[str, object]


class NewJob(TypedDict):
    """The row of a job the ledger first hears of (the ``jobs`` columns it sets)."""

    provider: str
    job_id: str
    state: str
    tracked: bool
    held: bool
    first_seen_at: datetime
    attempts: int
    archive_revision: int
    updated_at: datetime


def new_job(provider: str, job_id: str, now: datetime, *, tracked: bool = False) -> NewJob:
    """The row of a job the ledger first hears of, in the lifecycle's initial state."""
    return {
        "provider": provider,
        "job_id": job_id,
        "state": INITIAL_STATE,
        "tracked": tracked,
        "held": False,
        "first_seen_at": now,
        "attempts": 0,
        "archive_revision": 0,
        "updated_at": now,
    }


_NEW_JOB_COLUMNS = tuple(new_job("", "", datetime.min))
_AUDIT_COLUMNS = ("at", "provider", "job_id", "event", "actor", "detail")

Processor = Callable[[Any], object]


class Prepared:
    """A Core statement compiled once for one dialect, and how to bind and read it.

    Parameters made with ``sa.bindparam(name)`` (or named by ``column_keys`` in an INSERT)
    are taken from each call's mapping; any bound value written into the statement (``+ 1``,
    a LIMIT) is converted once here. Each value goes through the dialect's bind processor of
    its type, each result value through its result processor: what SQLAlchemy would do, so a
    row reads the same on either path.
    """

    __slots__ = ("_fixed", "_named", "_names", "_processors", "_results", "sql")

    def __init__(
        self,
        statement: sa.ClauseElement,
        dialect: sa.Dialect,
        column_keys: Sequence[str] | None = None,
    ) -> None:
        compiled = statement.compile(
            dialect=dialect, column_keys=list(column_keys) if column_keys else None
        )
        if not isinstance(compiled, sa.sql.compiler.SQLCompiler):
            raise TypeError(f"not a SQL statement: {statement!r}")
        if compiled.escaped_bind_names:
            raise ValueError(f"bind names that need escaping: {compiled.escaped_bind_names}")
        self.sql: str = compiled.string
        # For a positional paramstyle (SQLite's qmark) the names in the order the SQL has
        # them; for a named one (psycopg's pyformat) each name once.
        self._named = not dialect.positional
        self._names: tuple[str, ...] = tuple(
            dict.fromkeys(compiled.bind_names.values())
            if self._named
            else (compiled.positiontup or ())
        )
        # Values written into the statement, converted already; the rest, by position, with
        # the processor of their type.
        self._fixed: dict[str, object] = {}
        self._processors: list[tuple[int, Processor]] = []
        for index, name in enumerate(self._names):
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if not bind.required:
                value = bind.effective_value
                self._fixed[name] = process(value) if process else value
            elif process is not None:
                self._processors.append((index, process))
        self._results = [
            (index, process)
            for index, type_ in enumerate(_result_types(statement))
            if (process := type_.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]

    def params(self, values: Params) -> list[object] | dict[str, object]:
        """The DBAPI parameters for one call, in the dialect's paramstyle."""
        if self._fixed:
            values = {**values, **self._fixed}
        out = [values[name] for name in self._names]
        for index, process in self._processors:
            out[index] = process(out[index])
        return dict(zip(self._names, out, strict=True)) if self._named else out

    def rows(self, fetched: list[Any]) -> list[Sequence[Any]]:
        """The fetched rows, their values read as their columns' types."""
        if not self._results:
            return fetched
        out: list[Sequence[Any]] = []
        for row in fetched:
            values = list(row)
            for index, process in self._results:
                # NULL reads as None whatever the type.
                if values[index] is not None:
                    values[index] = process(values[index])
            out.append(values)
        return out


def _result_types(statement: sa.ClauseElement) -> list[sa.types.TypeEngine[Any]]:
    if isinstance(statement, sa.Select):
        return [column.type for column in statement.selected_columns]
    if isinstance(statement, UpdateBase):
        return [column["type"] for column in statement.returning_column_descriptions]
    return []


def _refused(stmt: Prepared, values: Params, exc: Exception) -> sa.exc.StatementError:
    """A value its type refuses (a naive datetime), as SQLAlchemy raises it."""
    return sa.exc.StatementError(
        f"({type(exc).__module__}.{type(exc).__qualname__}) {exc}", stmt.sql, values, exc
    )


# Stateless, so one serves every ``with``.
_QUIETLY = contextlib.suppress(Exception)


class Tx:
    """Prepared statements on one pooled DBAPI connection: a transaction (``Database.write``)
    or a read (``Database.reading``)."""

    __slots__ = ("_cursor", "_db", "_error", "driver", "invalidated", "pooled")

    def __init__(self, db: Database, driver: Any, pooled: PoolProxiedConnection | None) -> None:
        self._db = db
        self._error = db.dbapi_error
        # The DBAPI connection, and the pool's proxy for it if it goes back to the pool.
        self.driver = driver
        self.pooled = pooled
        self._cursor = driver.cursor()
        self.invalidated = False

    @staticmethod
    def _bind(stmt: Prepared, values: Params) -> list[object] | dict[str, object]:
        """``stmt``'s driver parameters for ``values``; a refused value names the column."""
        try:
            return stmt.params(values)
        except Exception as exc:
            raise _refused(stmt, values, exc) from exc

    def rows(self, stmt: Prepared, values: Params) -> list[Sequence[Any]]:
        """Run ``stmt`` and return its rows, each value read as its column's type."""
        params = self._bind(stmt, values)
        try:
            self._cursor.execute(stmt.sql, params)
            fetched = self._cursor.fetchall()
        except self._error as exc:
            raise self._wrap(exc, stmt.sql, params) from exc
        return stmt.rows(fetched)

    def run(self, stmt: Prepared, values: Params) -> int:
        """Run ``stmt``; the number of rows it changed."""
        params = self._bind(stmt, values)
        try:
            self._cursor.execute(stmt.sql, params)
        except self._error as exc:
            raise self._wrap(exc, stmt.sql, params) from exc
        return int(self._cursor.rowcount)

    def run_many(self, stmt: Prepared, values: Iterable[Params]) -> None:
        params = [self._bind(stmt, one) for one in values]
        if not params:
            return
        try:
            self._cursor.executemany(stmt.sql, params)
        except self._error as exc:
            raise self._wrap(exc, stmt.sql, params) from exc

    def execute(self, sql: str) -> None:
        """Run SQL as written, with no parameters (BEGIN IMMEDIATE, say)."""
        try:
            self._cursor.execute(sql)
        except self._error as exc:
            raise self._wrap(exc, sql, ()) from exc

    def commit(self) -> None:
        try:
            self.driver.commit()
        except self._error as exc:
            raise self._wrap(exc, None, None) from exc

    def rollback(self) -> None:
        """Undo what is not committed; a connection that cannot is not used again."""
        try:
            self.driver.rollback()
        except Exception:
            self.invalidated = True

    def close(self) -> None:
        with _QUIETLY:
            self._cursor.close()

    def _wrap(
        self,
        exc: Exception,
        sql: str | None,
        params: Sequence[object] | Mapping[str, object] | None,
    ) -> BaseException:
        """The driver's error as SQLAlchemy raises it; a dropped connection is not reused."""
        dialect = self._db.engine.dialect
        self.invalidated = self.invalidated or dialect.is_disconnect(
            cast(Any, exc), self.driver, self._cursor
        )
        return sa.exc.DBAPIError.instance(
            sql,
            params,
            exc,
            self._error,
            connection_invalidated=self.invalidated,
            dialect=dialect,
        )


class Database:
    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self.engine = engine
        self.read_only = read_only
        self.is_postgres = engine.dialect.name == "postgresql"
        self.dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        # SQLite has one writer at a time. Threads of this process queue here and are woken
        # the moment the writer commits; left to SQLite's busy handler, they would poll with
        # sleeps of up to 100 ms each. Other processes still wait in the busy handler.
        self._writer: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if self.is_postgres else threading.Lock()
        )
        self._prepared: dict[Hashable, Prepared] = {}
        # SQLite's connections for prepared statements, idle between transactions (_open).
        # Only for a file database in a QueuePool: a read-only or in-memory ledger keeps
        # its pool's one connection, which is its database.
        pool = engine.pool
        self._idle: collections.deque[Any] | None = (
            collections.deque()
            if not self.is_postgres and not read_only and isinstance(pool, sa.pool.QueuePool)
            else None
        )
        self._idle_max = pool.size() if isinstance(pool, sa.pool.QueuePool) else 0
        self._idle_pid = os.getpid()

    # -- SQLAlchemy connections, for work done once per sweep or command --------------------

    @contextlib.contextmanager
    def tx(self) -> Iterator[Connection]:
        """One write transaction (serialised per process on SQLite)."""
        self._refuse_if_read_only()
        with ledger_errors(self.engine.url), self._writer, self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with ledger_errors(self.engine.url), self.engine.connect() as conn:
            yield conn

    def insert_missing(self, conn: Connection, rows: Sequence[Params]) -> None:
        """Insert job rows, skipping any another process inserted a moment before."""
        if not rows:
            return
        conn.execute(self._insert_jobs(), rows)

    # -- prepared statements, for the steps every job takes ---------------------------------

    def prepared(
        self,
        key: Hashable,
        build: Callable[[], sa.ClauseElement],
        column_keys: Sequence[str] | None = None,
    ) -> Prepared:
        """The statement ``build`` returns, compiled for this database the first time ``key``
        is asked for. ``key`` must name everything ``build`` puts in the statement."""
        found = self._prepared.get(key)
        if found is None:
            found = Prepared(build(), self.engine.dialect, column_keys)
            # Two threads may compile the same statement at once; either result is the same.
            self._prepared[key] = found
        return found

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        """One write transaction of prepared statements (serialised per process on SQLite).

        On SQLite it takes the write lock at BEGIN IMMEDIATE, as ``tx()`` does: a deferred
        transaction that reads and then writes can deadlock against another. On PostgreSQL
        the driver begins it with the first statement.
        """
        self._refuse_if_read_only()
        with ledger_errors(self.engine.url), self._writer:
            tx = self._open()
            try:
                if not self.is_postgres:
                    tx.execute("BEGIN IMMEDIATE")
                yield tx
                tx.commit()
            except BaseException:
                tx.rollback()
                raise
            finally:
                self._close(tx)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Tx]:
        """Prepared statements that only read: each is its own snapshot on SQLite; on
        PostgreSQL the pool ends the implicit transaction when the connection goes back."""
        with ledger_errors(self.engine.url):
            tx = self._open()
            try:
                yield tx
            finally:
                self._close(tx)

    # A SQLite connection of the pool is set up once (its PRAGMAs, in make_engine), but
    # taking one from SQLAlchemy's pool and giving it back, with the rollback the pool
    # resets it with, cost a due job more CPU than any of its statements. So on SQLite the
    # prepared statements run on connections of their own: made by the pool (so set up the
    # same way), then detached from it, so they take nothing from its limits, and kept here
    # for the next transaction, at most as many idle as the pool keeps. On PostgreSQL every
    # transaction checks a connection out of the pool, which pings it first (pool_pre_ping),
    # so a connection the server dropped is never used.

    def _open(self) -> Tx:
        idle = self._idle
        if idle is not None:
            if self._idle_pid != os.getpid():
                # A forked child: the parent's connections are the parent's.
                idle = self._idle = collections.deque()
                self._idle_pid = os.getpid()
            try:
                return Tx(self, idle.pop(), None)
            except IndexError:
                pooled = self._checkout()
                driver = pooled.driver_connection
                pooled.detach()
                return Tx(self, driver, None)
        pooled = self._checkout()
        return Tx(self, pooled.driver_connection, pooled)

    def _close(self, tx: Tx) -> None:
        tx.close()
        pooled = tx.pooled
        if pooled is not None:
            if tx.invalidated:
                pooled.invalidate()
            else:
                # Back to the pool, which rolls back whatever is left open.
                pooled.close()
            return
        idle = self._idle
        driver = tx.driver
        if tx.invalidated or driver.in_transaction or idle is None or len(idle) >= self._idle_max:
            with _QUIETLY:
                driver.close()
            return
        idle.append(driver)

    def _checkout(self) -> PoolProxiedConnection:
        try:
            return self.engine.raw_connection()
        except self.dbapi_error as exc:
            dialect = self.engine.dialect
            raise sa.exc.DBAPIError.instance(
                None,
                None,
                exc,
                self.dbapi_error,
                connection_invalidated=dialect.is_disconnect(cast(Any, exc), None, None),
                dialect=dialect,
            ) from exc

    def close(self) -> None:
        """Close the connections kept for the prepared statements (``Ledger.close``)."""
        idle, self._idle = self._idle, None if self._idle is None else collections.deque()
        while idle:
            with _QUIETLY:
                idle.pop().close()

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise LedgerError("the ledger is open read-only (dry run); nothing may change")

    # -- the statements ledger parts share ---------------------------------------------------

    def _insert_jobs(self) -> sa.Insert:
        if self.is_postgres:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(jobs).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(jobs).on_conflict_do_nothing()

    def insert_job(self, tx: Tx, row: Params) -> None:
        """Insert one ``new_job`` row, unless another process inserted it a moment before."""
        extra = tuple(sorted(set(row) - set(_NEW_JOB_COLUMNS)))
        stmt = self.prepared(
            ("insert_job", extra),
            lambda: self._insert_jobs().inline(),
            column_keys=[*_NEW_JOB_COLUMNS, *extra],
        )
        tx.run(stmt, row)

    def pk_of(self, tx: Tx, provider: str, job_id: str) -> int | None:
        """The primary key of the job, or None if the ledger has not recorded it."""
        stmt = self.prepared(
            "pk_of",
            lambda: sa.select(jobs.c.id).where(
                jobs.c.provider == sa.bindparam("provider"), jobs.c.job_id == sa.bindparam("job_id")
            ),
        )
        found = tx.rows(stmt, {"provider": provider, "job_id": job_id})
        return None if not found else int(found[0][0])

    def job(self, tx: Tx, provider: str, job_id: str) -> JobRow | None:
        stmt = self.prepared(
            "job",
            lambda: sa.select(*JOB_ROW_COLUMNS).where(
                jobs.c.provider == sa.bindparam("provider"), jobs.c.job_id == sa.bindparam("job_id")
            ),
        )
        found = tx.rows(stmt, {"provider": provider, "job_id": job_id})
        return None if not found else job_row_of(found[0])

    def update_one(
        self,
        tx: Tx,
        key: Hashable,
        build: Callable[[], sa.Update],
        values: Params,
        *,
        provider: str,
        job_id: str,
    ) -> JobRow | None:
        """Run an UPDATE meant for the one job row of ``provider``/``job_id``; the row as it
        now stands, or None if the UPDATE matched nothing.

        One statement where the database has ``UPDATE ... RETURNING`` (PostgreSQL, SQLite
        3.35+); else the UPDATE and a SELECT, in the caller's transaction either way.
        """
        if self.engine.dialect.update_returning:
            stmt = self.prepared(("returning", key), lambda: build().returning(*JOB_ROW_COLUMNS))
            found = tx.rows(stmt, values)
            return None if not found else job_row_of(found[0])
        if tx.run(self.prepared(key, build), values) != 1:
            return None
        return self.job(tx, provider, job_id)

    def audit(
        self,
        tx: Tx,
        *,
        provider: str,
        job_id: str | None,
        event: str,
        now: datetime,
        actor: str,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """One event of the audit trail, in the caller's transaction."""
        stmt = self.prepared(
            "audit", lambda: audit_events.insert().inline(), column_keys=_AUDIT_COLUMNS
        )
        tx.run(
            stmt,
            {
                "at": now,
                "provider": provider,
                "job_id": job_id,
                "event": event,
                "actor": actor,
                # Anything JSON has no type for is stored as its str (make_engine).
                "detail": detail or {},
            },
        )
