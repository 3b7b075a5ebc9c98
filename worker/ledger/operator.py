"""What a person does to the ledger from the command line: track jobs, hold and release them,
put a failed or kept job back in line; and what an application does through the
``retention.track`` task (``worker.tracking`` checks its requests). Each is audited with who
did it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from worker.domain import INITIAL_STATE, LIFECYCLE, Event, JobState
from worker.errors import LedgerError
from worker.ledger.database import Database, Prepared, new_job
from worker.ledger.schema import actor_name, jobs
from worker.ledger.writes import transition

_BY_KEY = (jobs.c.provider == sa.bindparam("provider"), jobs.c.job_id == sa.bindparam("job_id"))


@dataclass
class Tracked:
    """What one ``track`` changed: jobs new to the ledger, jobs whose record changed (new,
    newly tracked, or given a finish time), and jobs newly held."""

    provider: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)


def _clock_starts(state: str, terminal_at: datetime | None, finished_at: datetime | None) -> bool:
    """Whether a finish time the caller knows starts a known job's retention clock earlier:
    only while the job waits to be archived (a job further on keeps the clock it was archived
    by), and only towards an earlier start, as a second sighting would (terminal_since)."""
    if finished_at is None or state != INITIAL_STATE:
        return False
    return terminal_at is None or finished_at < terminal_at


class OperatorCommands:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _lookup(self) -> Prepared:
        return self.db.prepared(
            "operator_lookup",
            lambda: sa.select(
                jobs.c.id, jobs.c.tracked, jobs.c.held, jobs.c.state, jobs.c.terminal_at
            ).where(*_BY_KEY),
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

    def track(
        self,
        provider: str,
        job_ids: Iterable[str],
        *,
        now: datetime,
        hold: bool = False,
        reason: str | None = None,
        finished_at: datetime | None = None,
        actor: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Tracked:
        """Record job ids the worker must look after, in one transaction; say what changed.

        Idempotent: tracking a job again changes nothing and records nothing. ``hold`` puts a
        legal hold on each (it never lifts one: only `retention release` does).
        ``finished_at``, a time the caller knows the jobs finished at, starts the retention
        clock of a job still waiting to be archived, as an earlier sighting would
        (``domain.terminal_since``), never later than it had started. The worker still
        reads the job before anything is archived, and one the provider reports running
        again gets its clock reset. Each change is audited with ``actor`` (host and process
        by default), ``detail`` and ``reason``.
        """
        result = Tracked(provider)
        actor = actor or actor_name()
        extra = dict(detail or {})
        clock = {"finished_at": finished_at.isoformat()} if finished_at is not None else {}
        if reason is not None:
            extra.setdefault("reason", reason)
        lookup = self._lookup()
        set_tracked, set_held, set_clock = (
            self._set("tracked"),
            self._set("held"),
            self._set("terminal_at"),
        )
        with self.db.write() as tx:
            for job_id in dict.fromkeys(job_ids):
                found = tx.rows(lookup, {"provider": provider, "job_id": job_id})
                changes: dict[str, Any] = {}
                if not found:
                    row = new_job(provider, job_id, now, tracked=True)
                    row["held"] = hold
                    self.db.insert_job(tx, {**row, "terminal_at": finished_at})
                    result.added.append(job_id)
                    changes |= {"new": True, **clock}
                    state, was_held = INITIAL_STATE, False
                else:
                    pk, was_tracked, was_held, state, terminal_at = found[0]
                    if not was_tracked:
                        tx.run(set_tracked, {"pk": pk, "value": True, "now": now})
                        changes["new"] = False
                    if _clock_starts(state, terminal_at, finished_at):
                        tx.run(set_clock, {"pk": pk, "value": finished_at, "now": now})
                        changes |= clock
                    if hold and not was_held:
                        tx.run(set_held, {"pk": pk, "value": True, "now": now})
                if changes:
                    result.changed.append(job_id)
                    self.db.audit(
                        tx,
                        provider=provider,
                        job_id=job_id,
                        event="tracked",
                        now=now,
                        actor=actor,
                        detail={**changes, **extra},
                    )
                if hold and not was_held:
                    result.held.append(job_id)
                    self.db.audit(
                        tx,
                        provider=provider,
                        job_id=job_id,
                        event="hold",
                        now=now,
                        actor=actor,
                        detail={"state": state, **extra},
                    )
        return result

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
                pk, _, was_held, state, _ = found[0]
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
