"""Claims and transitions: every write a worker makes to a job's row while it holds the job.

* A **claim** is a lease on the job's row, taken with a conditional UPDATE (``WHERE the
  lease is free or expired``). It works the same on SQLite and PostgreSQL; on PostgreSQL the
  row is selected ``FOR UPDATE SKIP LOCKED`` so two workers take different rows.
* A **transition** is one fenced UPDATE named by a lifecycle event: the row must be in the
  event's source states (``domain.LIFECYCLE``) and still claimed by the caller
  (``lease_owner = me``). A worker that stalled past its lease cannot move a job another
  worker has since claimed: the UPDATE matches nothing and raises ``LedgerError``. The audit
  event, and any rows that go with it, are written in the same transaction.

``transition`` is the only code that writes a job's state; ``open_delete_gate`` is the
ledger half of the one rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.domain import (
    KEEP_RECHECK,
    LIFECYCLE,
    Event,
    JobRow,
    JobSnapshot,
    JobState,
    terminal_since,
)
from worker.errors import BrakeEngaged, LedgerError
from worker.ledger.database import Database, json_safe, new_job
from worker.ledger.schema import (
    FileRecord,
    actor_name,
    archive_files,
    job_row,
    jobs,
    sweep_budgets,
)

# What each event is called in the audit trail; events left out are not audited (a status
# read, a file stored, a deferral: the log has them, the trail keeps what a person asks about).
AUDIT_NAMES = {
    Event.GONE: "gone",
    Event.KEEP: "kept",
    Event.ARCHIVE: "archived",
    Event.REOPEN: "reopened",
    Event.OPEN_GATE: "delete_requested",
    Event.DELETE_PENDING: "delete_pending",
    Event.DROP_HANDLE: "delete_handle_dropped",
    Event.PROVIDER_DELETED: "provider_deleted",
    Event.FINISH: "deleted",
    Event.FAIL: "failed",
    Event.RETRY: "retry",
}
_FENCE_REFUSAL = "this worker no longer holds the job's claim, or the job moved on"


def transition(
    db: Database,
    row: JobRow,
    event: Event,
    *,
    owner: str | None,
    now: datetime,
    values: dict[str, Any] | None = None,
    extra: Sequence[Any] = (),
    detail: dict[str, Any] | None = None,
    refusal: str = _FENCE_REFUSAL,
    also: Callable[[Connection], None] | None = None,
) -> JobRow:
    """One UPDATE for ``event``, its audit event, ``also`` and the fresh row: one transaction.

    The row must be in the event's source states; with an ``owner`` the UPDATE is fenced on
    the claim (``owner=None`` only for a person's command). If it matches no row, nothing
    changes and LedgerError says why.
    """
    move = LIFECYCLE[event]
    sets = dict(values or {})
    if move.target is not None:
        sets["state"] = move.target
    where = [jobs.c.id == row.pk, jobs.c.state.in_(sorted(move.sources)), *extra]
    if owner is not None:
        where.append(jobs.c.lease_owner == owner)
    with db.tx() as conn:
        if also is not None:
            also(conn)
        fresh = db.update_one(
            conn, jobs.update().where(*where).values(**sets, updated_at=now), jobs.c.id == row.pk
        )
        if fresh is None:
            raise LedgerError(
                refusal, provider=row.provider, job_id=row.job_id, hint="Nothing was changed"
            )
        name = AUDIT_NAMES.get(event)
        if name is not None:
            db.audit(
                conn,
                provider=row.provider,
                job_id=row.job_id,
                event=name,
                now=now,
                actor=owner or actor_name(),
                detail=detail,
            )
    return job_row(fresh)


class JobWrites:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- claims ----------------------------------------------------------------------------

    def claim(
        self, provider: str, job_id: str, *, owner: str, ttl: timedelta, now: datetime
    ) -> JobRow | None:
        """Take the job's lease if it is free or expired; return the row, or None if busy.

        A job the ledger has never seen is recorded first (a tracked id, or one fanned out
        from a listing that a dry run did not store).
        """
        c = jobs.c
        free = sa.or_(
            c.lease_owner.is_(None),
            c.lease_expires_at.is_(None),
            c.lease_expires_at < now,
            c.lease_owner == owner,
        )
        with self.db.tx() as conn:
            exists = conn.execute(
                sa.select(c.id).where(c.provider == provider, c.job_id == job_id)
            ).first()
            if exists is None:
                self.db.insert_missing(conn, [new_job(provider, job_id, now)])
            where: list[Any] = [c.provider == provider, c.job_id == job_id, free]
            if self.db.is_postgres:
                # Never wait on a row another worker is claiming this instant; move on.
                locked = conn.execute(
                    sa.select(c.id).where(*where).with_for_update(skip_locked=True)
                ).first()
                if locked is None:
                    return None
                where = [c.id == locked.id]
            row = self.db.update_one(
                conn,
                jobs.update().where(*where).values(lease_owner=owner, lease_expires_at=now + ttl),
                key=sa.and_(c.provider == provider, c.job_id == job_id),
            )
        return None if row is None else job_row(row)

    def renew(self, pk: int, *, owner: str, ttl: timedelta, now: datetime) -> bool:
        with self.db.tx() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.id == pk, jobs.c.lease_owner == owner)
                .values(lease_expires_at=now + ttl)
            )
        return result.rowcount == 1

    def release(self, pk: int, *, owner: str) -> None:
        with self.db.tx() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == pk, jobs.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    # -- reading the provider --------------------------------------------------------------

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
        return transition(self.db, row, Event.READ, owner=owner, now=now, values=values)

    def mark_gone(self, row: JobRow, answer: Any, *, owner: str, now: datetime) -> JobRow:
        values = {"last_checked_at": now, "delete_answer": json_safe(answer)}
        return transition(
            self.db, row, Event.GONE, owner=owner, now=now, values=values, detail={"answer": answer}
        )

    def keep(self, row: JobRow, reason: str, message: str, *, owner: str, now: datetime) -> JobRow:
        """Keep the job at the provider, with why; it is looked at again after KEEP_RECHECK."""
        values = {
            "attempts": jobs.c.attempts + 1,
            "last_error": message[:4000],
            "last_error_at": now,
            "next_attempt_at": now + KEEP_RECHECK,
        }
        detail = {"reason": reason, "message": message[:4000]}
        return transition(
            self.db, row, Event.KEEP, owner=owner, now=now, values=values, detail=detail
        )

    # -- the archive -----------------------------------------------------------------------

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
                    stored_at=now,
                    **{name: getattr(record, name) for name in FileRecord.__dataclass_fields__},
                )
            )

        transition(self.db, row, Event.FILE_STORED, owner=owner, now=now, also=store)

    def mark_archived(
        self,
        row: JobRow,
        *,
        owner: str,
        manifest_key: str,
        files: Sequence[FileRecord],
        now: datetime,
        retain_days: int | None = None,
        due_at: datetime | None = None,
        due_reason: str | None = None,
    ) -> JobRow:
        """The archive is complete; the policy that made the job due is kept with it."""
        total = sum(f.size for f in files)
        values = {
            "archived_at": now,
            "manifest_key": manifest_key,
            "files_count": len(files),
            "bytes_archived": total,
            "last_error": None,
            "next_attempt_at": None,
            "retain_days": retain_days,
            "due_at": due_at,
            "due_reason": due_reason,
        }
        detail = {
            "manifest_key": manifest_key,
            "files": [{"key": f.key, "size": f.size, "sha256": f.sha256} for f in files],
            "bytes": total,
        }
        return transition(
            self.db, row, Event.ARCHIVE, owner=owner, now=now, values=values, detail=detail
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

        return transition(
            self.db,
            row,
            Event.REOPEN,
            owner=owner,
            now=now,
            values={"manifest_key": None},
            detail={"reason": reason, "missing": missing},
            also=forget,
        )

    # -- the delete ------------------------------------------------------------------------

    def open_delete_gate(
        self, row: JobRow, *, owner: str, now: datetime, budget: str | None = None
    ) -> JobRow:
        """The ledger half of the one rule: move to DELETING only from a verified archive.

        One conditional UPDATE: archived (or a delete whose answer was lost), a manifest on
        record, not held, and claimed by ``owner``. Anything else raises LedgerError. With a
        sweep's ``budget``, the same transaction takes one delete from it; a spent budget
        raises BrakeEngaged and changes nothing.
        """
        # The first request's time is kept while a delete is resent or polled: it is when the
        # delete was asked for, and how old a pending asynchronous delete is.
        requested = row.delete_requested_at if row.state == JobState.DELETING else None

        def take_one(conn: Connection) -> None:
            if budget is None:
                return
            taken = conn.execute(
                sweep_budgets.update()
                .where(
                    sweep_budgets.c.id == budget,
                    sweep_budgets.c.used < sweep_budgets.c.max_deletes,
                )
                .values(used=sweep_budgets.c.used + 1)
            )
            if taken.rowcount != 1:
                raise BrakeEngaged(
                    "max_deletes_per_sweep reached: this sweep started as many deletes as it "
                    "may; the job stays archived and the next sweep deletes it",
                    provider=row.provider,
                    job_id=row.job_id,
                    hint="Raise max_deletes_per_sweep if this backlog is expected",
                )

        return transition(
            self.db,
            row,
            Event.OPEN_GATE,
            owner=owner,
            now=now,
            values={"delete_requested_at": requested or now},
            extra=[jobs.c.manifest_key.is_not(None), jobs.c.held.is_(False)],
            detail={"manifest_key": row.manifest_key, "resend": row.state == JobState.DELETING},
            refusal="the delete gate stayed shut: the job is not archived with a manifest, "
            "is held, or is claimed by another worker",
            also=take_one,
        )

    def record_delete_pending(
        self, row: JobRow, handle: str, answer: Any, *, owner: str, now: datetime
    ) -> JobRow:
        """Store an asynchronous delete's handle before the first poll, so a crash resumes it."""
        values = {"delete_handle": handle, "delete_answer": json_safe(answer)}
        return transition(
            self.db,
            row,
            Event.DELETE_PENDING,
            owner=owner,
            now=now,
            values=values,
            detail={"handle": handle},
        )

    def forget_delete_handle(
        self, row: JobRow, reason: str, *, owner: str, now: datetime
    ) -> JobRow:
        """Drop a spent asynchronous delete; the next attempt sends a new one."""
        return transition(
            self.db,
            row,
            Event.DROP_HANDLE,
            owner=owner,
            now=now,
            values={"delete_handle": None, "delete_requested_at": None},
            detail={"handle": row.delete_handle, "reason": reason},
        )

    def record_provider_deleted(
        self, row: JobRow, answer: Any, *, owner: str, now: datetime
    ) -> JobRow:
        values = {"delete_answer": json_safe(answer), "provider_deleted_at": now}
        return transition(
            self.db,
            row,
            Event.PROVIDER_DELETED,
            owner=owner,
            now=now,
            values=values,
            detail={"answer": answer},
        )

    def mark_deleted(self, row: JobRow, *, receipt_key: str, owner: str, now: datetime) -> JobRow:
        values = {
            "receipt_key": receipt_key,
            "deleted_at": now,
            "last_error": None,
            "next_attempt_at": None,
        }
        return transition(
            self.db,
            row,
            Event.FINISH,
            owner=owner,
            now=now,
            values=values,
            detail={"receipt_key": receipt_key},
        )

    def audit_event(
        self, row: JobRow, event: str, detail: dict[str, Any], *, owner: str, now: datetime
    ) -> None:
        with self.db.tx() as conn:
            self.db.audit(
                conn,
                provider=row.provider,
                job_id=row.job_id,
                event=event,
                now=now,
                actor=owner,
                detail=detail,
            )

    # -- failures --------------------------------------------------------------------------

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
        return transition(self.db, row, Event.DEFER, owner=owner, now=now, values=values)

    def fail(self, row: JobRow, error: str, *, owner: str, now: datetime) -> JobRow:
        """A permanent failure before the delete gate: the job waits for a person."""
        values = {
            "attempts": jobs.c.attempts + 1,
            "last_error": error[:4000],
            "last_error_at": now,
        }
        return transition(
            self.db,
            row,
            Event.FAIL,
            owner=owner,
            now=now,
            values=values,
            detail={"error": error[:4000]},
        )
