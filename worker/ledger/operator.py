"""What a person does to the ledger from the command line: track jobs, hold and release them,
put a failed or kept job back in line. Each is audited with who did it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa

from worker.domain import LIFECYCLE, Event, JobState
from worker.errors import LedgerError
from worker.ledger.database import Database, new_job
from worker.ledger.schema import actor_name, job_row, jobs
from worker.ledger.writes import transition


class OperatorCommands:
    def __init__(self, db: Database) -> None:
        self.db = db

    def track(self, provider: str, job_ids: Iterable[str], *, now: datetime) -> list[str]:
        """Record job ids the worker must look after; return the ones that were new."""
        added: list[str] = []
        actor = actor_name()
        with self.db.tx() as conn:
            for job_id in dict.fromkeys(job_ids):
                row = conn.execute(
                    sa.select(jobs.c.id, jobs.c.tracked).where(
                        jobs.c.provider == provider, jobs.c.job_id == job_id
                    )
                ).first()
                if row is None:
                    self.db.insert_missing(conn, [new_job(provider, job_id, now, tracked=True)])
                    added.append(job_id)
                    self.db.audit(
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
        with self.db.tx() as conn:
            row = conn.execute(
                sa.select(jobs.c.id, jobs.c.held, jobs.c.state).where(
                    jobs.c.provider == provider, jobs.c.job_id == job_id
                )
            ).first()
            if row is None:
                if not held:
                    return False
                self.db.insert_missing(conn, [new_job(provider, job_id, now) | {"held": True}])
            elif bool(row.held) == held:
                return False
            else:
                conn.execute(
                    jobs.update().where(jobs.c.id == row.id).values(held=held, updated_at=now)
                )
            state = row.state if row is not None else JobState.PENDING
            self.db.audit(
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
        """Put a failed job (or one kept at the provider) back in line for the next sweep."""
        with self.db.read() as conn:
            found = conn.execute(
                sa.select(jobs).where(jobs.c.provider == provider, jobs.c.job_id == job_id)
            ).first()
        if found is None:
            return False
        row = job_row(found)
        if row.state not in LIFECYCLE[Event.RETRY].sources:
            return False
        try:
            transition(
                self.db,
                row,
                Event.RETRY,
                owner=None,
                now=now,
                values={"attempts": 0, "next_attempt_at": None},
                detail={"from": row.state},
            )
        except LedgerError:  # it moved on a moment ago
            return False
        return True
