"""What a person does to the ledger from the command line: track jobs, hold and release them,
put a failed or kept job back in line. Each is audited with who did it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa

from worker.domain import LIFECYCLE, Event, JobState
from worker.errors import LedgerError
from worker.ledger.database import Database, Prepared, new_job
from worker.ledger.schema import actor_name, jobs
from worker.ledger.writes import transition

_BY_KEY = (jobs.c.provider == sa.bindparam("provider"), jobs.c.job_id == sa.bindparam("job_id"))


class OperatorCommands:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _lookup(self) -> Prepared:
        return self.db.prepared(
            "operator_lookup",
            lambda: sa.select(jobs.c.id, jobs.c.tracked, jobs.c.held, jobs.c.state).where(*_BY_KEY),
        )

    def _set(self, column: str) -> Prepared:
        """``UPDATE jobs SET <column> = :value, updated_at = :now WHERE id = :pk``."""
        return self.db.prepared(
            ("operator_set", column),
            lambda: (
                jobs.update()
                .where(jobs.c.id == sa.bindparam("pk"))
                .values(
                    {
                        column: sa.bindparam("value", type_=jobs.c[column].type),
                        "updated_at": sa.bindparam("now", type_=jobs.c.updated_at.type),
                    }
                )
            ),
        )

    def track(self, provider: str, job_ids: Iterable[str], *, now: datetime) -> list[str]:
        """Record job ids the worker must look after; return the ones that were new."""
        added: list[str] = []
        actor = actor_name()
        lookup, set_tracked = self._lookup(), self._set("tracked")
        with self.db.write() as tx:
            for job_id in dict.fromkeys(job_ids):
                found = tx.rows(lookup, {"provider": provider, "job_id": job_id})
                if not found:
                    self.db.insert_job(tx, new_job(provider, job_id, now, tracked=True))
                    added.append(job_id)
                    self.db.audit(
                        tx,
                        provider=provider,
                        job_id=job_id,
                        event="tracked",
                        now=now,
                        actor=actor,
                    )
                elif not found[0][1]:
                    tx.run(set_tracked, {"pk": found[0][0], "value": True, "now": now})
        return added

    def set_hold(
        self, provider: str, job_id: str, *, held: bool, now: datetime, reason: str | None = None
    ) -> bool:
        """Set or lift a legal hold; the job need not be known yet. Return whether it changed."""
        actor = actor_name()
        lookup, set_held = self._lookup(), self._set("held")
        with self.db.write() as tx:
            found = tx.rows(lookup, {"provider": provider, "job_id": job_id})
            if not found:
                if not held:
                    return False
                self.db.insert_job(tx, new_job(provider, job_id, now) | {"held": True})
                state = JobState.PENDING
            else:
                pk, _, was_held, state = found[0]
                if bool(was_held) == held:
                    return False
                tx.run(set_held, {"pk": pk, "value": held, "now": now})
            self.db.audit(
                tx,
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
        with self.db.reading() as tx:
            row = self.db.job(tx, provider, job_id)
        if row is None:
            return False
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
