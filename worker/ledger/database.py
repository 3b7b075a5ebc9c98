"""One database, shared by the ledger's parts: its transactions and the statements they share."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.domain import INITIAL_STATE
from worker.errors import LedgerError
from worker.ledger.schema import audit_events, jobs


def json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def new_job(provider: str, job_id: str, now: datetime, *, tracked: bool = False) -> dict[str, Any]:
    """The row of a job the ledger first hears of, in the lifecycle's initial state."""
    return {
        "provider": provider,
        "job_id": job_id,
        "state": INITIAL_STATE,
        "tracked": tracked,
        "held": False,
        "first_seen_at": now,
        "attempts": 0,
        "updated_at": now,
    }


class Database:
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

    @contextlib.contextmanager
    def tx(self) -> Iterator[Connection]:
        """One write transaction (serialised per process on SQLite)."""
        if self.read_only:
            raise LedgerError("the ledger is open read-only (dry run); nothing may change")
        with self._writer, self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn

    def read(self) -> contextlib.AbstractContextManager[Connection]:
        return self.engine.connect()

    def update_one(
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

    def insert_missing(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert job rows, skipping any another process inserted a moment before."""
        if not rows:
            return
        if self.is_postgres:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(pg_insert(jobs).on_conflict_do_nothing(), rows)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            conn.execute(sqlite_insert(jobs).on_conflict_do_nothing(), rows)

    def audit(
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
                detail=json_safe(detail or {}),
            )
        )
