"""The ledger: every job the worker knows, its state, and an append-only audit trail.

SQLite by default, PostgreSQL for several hosts, both through SQLAlchemy Core. One
``Ledger`` holds one database and its four parts:

* ``jobs`` (writes.py): claims, the fenced transitions of the lifecycle, the delete gate;
* ``query`` (queries.py): a job, its files, a sweep's candidates, status and report;
* ``operator`` (operator.py): track, hold, release, retry;
* ``coord`` (coordination.py): sweep leases (when no Redis is configured) and delete budgets;
* ``discovery`` (discovery.py): a provider's listing folded in, in bulk.

The tables, engines and migrations are in schema.py.

Where things go: a new column is a migration in ``worker/migrations/versions`` and its
mirror in schema.py (a test compares the two); a new write under a claim is a method of
``JobWrites`` that calls ``transition`` with a lifecycle event.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.errors import ConfigError
from worker.ledger.coordination import Coordination, LeaseState
from worker.ledger.database import Database
from worker.ledger.discovery import Discovery
from worker.ledger.operator import OperatorCommands
from worker.ledger.queries import Candidate, FailedJob, KeptJob, OverdueJob, ProviderStatus, Queries
from worker.ledger.schema import (
    OPEN_JOBS,
    SCHEMA_REVISION,
    FileRecord,
    actor_name,
    ledger_errors,
    make_engine,
    metadata,
    migrate,
)
from worker.ledger.writes import JobWrites


class Ledger:
    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self.engine = engine
        self.db = Database(engine, read_only=read_only)
        self.jobs = JobWrites(self.db)
        self.query = Queries(self.db)
        self.operator = OperatorCommands(self.db)
        self.coord = Coordination(self.db)
        self.discovery = Discovery(self.db)

    @property
    def read_only(self) -> bool:
        return self.db.read_only

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
        with ledger_errors(self.engine.url), self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            row = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
            return None if row is None else str(row[0])

    def close(self) -> None:
        self.db.close()
        self.engine.dispose()


__all__ = [
    "OPEN_JOBS",
    "SCHEMA_REVISION",
    "Candidate",
    "Coordination",
    "Discovery",
    "FailedJob",
    "FileRecord",
    "JobWrites",
    "KeptJob",
    "LeaseState",
    "Ledger",
    "OperatorCommands",
    "OverdueJob",
    "ProviderStatus",
    "Queries",
    "actor_name",
    "make_engine",
    "metadata",
    "migrate",
]
