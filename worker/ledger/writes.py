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

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from worker.domain import (
    KEEP_RECHECK,
    LIFECYCLE,
    OPEN_STATES,
    Event,
    JobRow,
    JobSnapshot,
    JobState,
    Phase,
    allows,
    terminal_since,
)
from worker.errors import BrakeEngaged, LedgerError
from worker.json_types import JSONValue
from worker.ledger.database import Database, Tx, new_job
from worker.ledger.schema import (
    FileRecord,
    actor_name,
    archive_files,
    jobs,
    open_jobs_condition,
    sweep_budgets,
)
from worker.outputs import OutputRecord, marked_rerun

# What the ledger keeps of an archive's outputs: written as OutputRecords, read back as JSON.
Outputs = Sequence[OutputRecord] | JSONValue

# What each event is called in the audit trail; events left out are not audited (a status
# read, a file stored, a deferral: the log has them, the trail keeps what a person asks about).
AUDIT_NAMES = {
    Event.GONE: "gone",
    Event.KEEP: "kept",
    Event.ARCHIVE: "archived",
    Event.REOPEN: "reopened",
    Event.AMEND: "amended",
    Event.KEEP_PAST_GATE: "kept",
    Event.OPEN_GATE: "delete_requested",
    Event.DELETE_PENDING: "delete_pending",
    Event.DROP_HANDLE: "delete_handle_dropped",
    Event.PROVIDER_DELETED: "provider_deleted",
    Event.FINISH: "deleted",
    Event.FAIL: "failed",
    Event.RETRY: "retry",
}
_FENCE_REFUSAL = "this worker no longer holds the job's claim, or the job moved on"

# What an event's UPDATE requires beyond its source states and the claim. The delete gate
# opens only for a job with a manifest on record that nobody holds: part of the event, so no
# caller can open the gate without it.
_GUARDS: Mapping[Event, tuple[sa.ColumnElement[bool], ...]] = {
    Event.OPEN_GATE: (jobs.c.manifest_key.is_not(None), jobs.c.held.is_(False)),
}


class Sql(enum.Enum):
    """A value ``transition`` sets in SQL rather than binds."""

    # The column's value plus one, counted by the database: a person's `retention retry`
    # resets the count, and the worker's row may not have seen it.
    PLUS_ONE = "plus_one"


def transition(
    db: Database,
    row: JobRow,
    event: Event,
    *,
    owner: str | None,
    now: datetime,
    values: Mapping[str, object] | None = None,
    detail: Mapping[str, object] | None = None,
    refusal: str = _FENCE_REFUSAL,
    also: Callable[[Tx], None] | None = None,
    fresh: bool = True,
) -> JobRow:
    """One UPDATE for ``event``, its audit event, ``also`` and the fresh row: one transaction.

    The row must be in the event's source states (and meet the event's guard); with an
    ``owner`` the UPDATE is fenced on the claim (``owner=None`` only for a person's
    command). If it matches no row, nothing changes and LedgerError says why. An event that
    leaves the job in a state no worker acts on (deleted, gone, failed) also ends the claim
    in the same UPDATE: ``Claim`` then has nothing to release.

    The UPDATE is prepared once per event and set of columns; each call binds its values.
    With ``fresh=False`` the row is not read back, and the row given is returned as it was.
    """
    move = LIFECYCLE[event]
    sets = dict(values or {})
    if move.target is not None:
        sets["state"] = move.target
        if move.target not in OPEN_STATES:
            sets["lease_owner"] = None
            sets["lease_expires_at"] = None
    sets["updated_at"] = now
    params: dict[str, object] = {"pk": row.pk}
    counted = []
    for column, value in sets.items():
        if value is Sql.PLUS_ONE:
            counted.append(column)
        else:
            params["v_" + column] = value
    fenced = owner is not None
    if fenced:
        params["owner"] = owner
    columns = tuple(sets)
    key = ("transition", event, fenced, columns, tuple(counted))

    def build() -> sa.Update:
        return _fenced_update(event, fenced, columns, counted)

    with db.write() as tx:
        if also is not None:
            also(tx)
        if fresh:
            changed = db.update_one(
                tx, key, build, params, provider=row.provider, job_id=row.job_id
            )
        else:
            changed = row if tx.run(db.prepared(key, build), params) == 1 else None
        if changed is None:
            raise LedgerError(
                refusal, provider=row.provider, job_id=row.job_id, hint="Nothing was changed"
            )
        name = AUDIT_NAMES.get(event)
        if name is not None:
            db.audit(
                tx,
                provider=row.provider,
                job_id=row.job_id,
                event=name,
                now=now,
                actor=owner or actor_name(),
                detail=detail,
            )
    return changed


# The statements, built the first time a ledger needs each (``Database.prepared``). Each
# takes its values as parameters: ``pk``, ``owner``, ``v_<column>`` and so on.


def _fenced_update(
    event: Event, fenced: bool, columns: Sequence[str], counted: Sequence[str]
) -> sa.Update:
    """``event``'s UPDATE: the row ``pk`` in one of the event's source states, meeting its
    guard and, if ``fenced``, still claimed by ``owner``. Each of ``columns`` is set to its
    ``v_<column>`` parameter, or for the ``counted`` ones to itself plus one."""
    return (
        jobs.update()
        .where(
            _BY_PK,
            sa.text(open_jobs_condition(LIFECYCLE[event].sources)),
            *_GUARDS.get(event, ()),
            *([jobs.c.lease_owner == sa.bindparam("owner")] if fenced else []),
        )
        .values(
            {
                name: jobs.c[name] + 1
                if name in counted
                else sa.bindparam(f"v_{name}", type_=jobs.c[name].type)
                for name in columns
            }
        )
    )


# A claim may be taken when the job's lease is free, expired or already the caller's.
_FREE = sa.or_(
    jobs.c.lease_owner.is_(None),
    jobs.c.lease_expires_at.is_(None),
    jobs.c.lease_expires_at < sa.bindparam("now"),
    jobs.c.lease_owner == sa.bindparam("owner"),
)
_BY_KEY = (jobs.c.provider == sa.bindparam("provider"), jobs.c.job_id == sa.bindparam("job_id"))
_BY_PK = jobs.c.id == sa.bindparam("pk")
_HELD_BY_OWNER = (_BY_PK, jobs.c.lease_owner == sa.bindparam("owner"))
_FILE_COLUMNS = (*FileRecord.__dataclass_fields__, "job_pk", "stored_at")


def _claim_lock() -> sa.Select[Any]:
    """PostgreSQL: the job's row if its lease is free, locked unless another worker holds
    the lock this instant."""
    return sa.select(jobs.c.id).where(*_BY_KEY, _FREE).with_for_update(skip_locked=True)


def _claim_update(where: Sequence[sa.ColumnElement[bool]], *, owner: bool = True) -> sa.Update:
    """The lease of the row ``where`` selects: to ``owner`` (unless ``owner`` is False: a
    renewal), until ``expires``."""
    expires = sa.bindparam("expires", type_=jobs.c.lease_expires_at.type)
    lease: dict[str, object] = {"lease_owner": sa.bindparam("owner")} if owner else {}
    return jobs.update().where(*where).values({**lease, "lease_expires_at": expires})


def _take_delete() -> sa.Update:
    """One delete from the sweep's budget ``budget``, if any is left."""
    return (
        sweep_budgets.update()
        .where(
            sweep_budgets.c.id == sa.bindparam("budget"),
            sweep_budgets.c.used < sweep_budgets.c.max_deletes,
        )
        .values(used=sweep_budgets.c.used + 1)
    )


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
        db = self.db
        params: dict[str, object] = {
            "provider": provider,
            "job_id": job_id,
            "owner": owner,
            "now": now,
            "expires": now + ttl,
        }
        with db.write() as tx:
            if db.pk_of(tx, provider, job_id) is None:
                db.insert_job(tx, new_job(provider, job_id, now))
            key = "claim"
            where: tuple[sa.ColumnElement[bool], ...] = (*_BY_KEY, _FREE)
            if db.is_postgres:
                # Never wait on a row another worker is claiming this instant; move on.
                locked = tx.rows(db.prepared("claim_lock", _claim_lock), params)
                if not locked:
                    return None
                params["pk"] = locked[0][0]
                key, where = "claim_locked", (_BY_PK,)
            return db.update_one(
                tx,
                key,
                lambda: _claim_update(where),
                params,
                provider=provider,
                job_id=job_id,
            )

    def renew(self, pk: int, *, owner: str, ttl: timedelta, now: datetime) -> bool:
        stmt = self.db.prepared("renew", lambda: _claim_update(_HELD_BY_OWNER, owner=False))
        with self.db.write() as tx:
            return tx.run(stmt, {"pk": pk, "owner": owner, "expires": now + ttl}) == 1

    def release(self, pk: int, *, owner: str) -> None:
        """Give the claim up. A transition into a state no worker acts on has already done
        so in its own UPDATE; this is for a claim that ends anywhere else."""
        stmt = self.db.prepared(
            "release",
            lambda: (
                jobs.update().where(*_HELD_BY_OWNER).values(lease_owner=None, lease_expires_at=None)
            ),
        )
        with self.db.write() as tx:
            tx.run(stmt, {"pk": pk, "owner": owner})

    # -- reading the provider --------------------------------------------------------------

    def record_status(
        self, row: JobRow, snapshot: JobSnapshot, *, owner: str, now: datetime
    ) -> JobRow:
        """Store a fresh read of the job's status; start or reset its retention clock.

        An archived job read again before its delete keeps its state. If it is running again
        at the provider, what its archive holds is no longer known to be what the provider
        holds: every output is marked to be fetched again once it has finished.
        """
        terminal_at = None
        if snapshot.terminal:
            terminal_at = terminal_since(snapshot.finished_at, row.terminal_at or now)
        values: dict[str, object] = {
            "provider_status": snapshot.status[:64],
            "phase": snapshot.phase,
            "finished_at": snapshot.finished_at,
            "terminal_at": terminal_at,
            "last_checked_at": now,
        }
        event = Event.READ if allows(Event.READ, row.state) else Event.REREAD
        if event == Event.REREAD and not snapshot.terminal and snapshot.phase != Phase.UNKNOWN:
            values["archived_outputs"] = marked_rerun(row.archived_outputs)
        return transition(self.db, row, event, owner=owner, now=now, values=values)

    def mark_gone(self, row: JobRow, answer: JSONValue, *, owner: str, now: datetime) -> JobRow:
        """The provider no longer has the job; nothing is left to do, so the claim ends too."""
        values = {"last_checked_at": now, "delete_answer": answer}
        return transition(
            self.db, row, Event.GONE, owner=owner, now=now, values=values, detail={"answer": answer}
        )

    def keep(self, row: JobRow, reason: str, message: str, *, owner: str, now: datetime) -> JobRow:
        """Keep the job at the provider, with why; it is looked at again after KEEP_RECHECK."""
        return self._keep(Event.KEEP, row, reason, message, owner=owner, now=now)

    def keep_past_gate(
        self, row: JobRow, reason: str, message: str, *, owner: str, now: datetime
    ) -> JobRow:
        """Keep a job whose delete may have been sent, with why: it stays past the gate (it
        never goes back before it), nothing more is sent, and it is looked at again after
        KEEP_RECHECK. ``retention status`` lists it with the kept jobs."""
        return self._keep(Event.KEEP_PAST_GATE, row, reason, message, owner=owner, now=now)

    def _keep(
        self, event: Event, row: JobRow, reason: str, message: str, *, owner: str, now: datetime
    ) -> JobRow:
        values = {
            "attempts": Sql.PLUS_ONE,
            "last_error": message[:4000],
            "last_error_at": now,
            "next_attempt_at": now + KEEP_RECHECK,
            "kept_reason": reason[:64],
        }
        detail = {"reason": reason, "message": message[:4000]}
        return transition(self.db, row, event, owner=owner, now=now, values=values, detail=detail)

    # -- the archive -----------------------------------------------------------------------

    def record_file(self, row: JobRow, record: FileRecord, *, owner: str, now: datetime) -> None:
        """Remember one verified object, so a resumed job does not fetch it again."""
        db = self.db
        forget = db.prepared("forget_file", _forget_file)
        insert = db.prepared(
            "insert_file", lambda: archive_files.insert().inline(), column_keys=_FILE_COLUMNS
        )
        values = {name: getattr(record, name) for name in FileRecord.__dataclass_fields__}

        def store(tx: Tx) -> None:
            tx.run(forget, {"pk": row.pk, "key": record.key})
            tx.run(insert, values | {"job_pk": row.pk, "stored_at": now})

        transition(self.db, row, Event.FILE_STORED, owner=owner, now=now, also=store, fresh=False)

    def mark_archived(
        self,
        row: JobRow,
        *,
        owner: str,
        manifest_key: str,
        files: Sequence[FileRecord],
        now: datetime,
        outputs: Outputs = None,
        retain_days: int | None = None,
        due_at: datetime | None = None,
        due_reason: str | None = None,
        manifest_etag: str | None = None,
        manifest_version_id: str | None = None,
    ) -> JobRow:
        """The archive is complete; the policy that made the job due is kept with it, and so
        is the manifest's identity: its ETag and (where the bucket keeps versions) version,
        which tell the object written as the manifest from any other at ``manifest_key``, and
        what the archive recorded of the job's ``outputs``, which the read before the delete
        is held to.

        A job whose delete may have been sent (past the gate) changed at the provider, and
        what is new is archived: its new manifest becomes the one the delete rests on
        (``Event.AMEND``). It stays past the gate, under the policy it was archived with.
        """
        event = Event.ARCHIVE if allows(Event.ARCHIVE, row.state) else Event.AMEND
        values: dict[str, object] = (
            {"retain_days": retain_days, "due_at": due_at, "due_reason": due_reason}
            if event == Event.ARCHIVE
            else {"kept_reason": None}
        )
        return _record_archive(
            self.db,
            event,
            row,
            owner=owner,
            manifest_key=manifest_key,
            files=files,
            now=now,
            outputs=outputs,
            values=values,
            manifest_etag=manifest_etag,
            manifest_version_id=manifest_version_id,
        )

    def reopen(
        self, row: JobRow, missing: Iterable[str], reason: str, *, owner: str, now: datetime
    ) -> JobRow:
        """Send an archived job back to be archived again: its archive lost something (the
        ``missing`` keys), or the job changed at the provider since (nothing missing).

        The provider still has the job (the gate never opened), so the worker fetches again
        what vanished or changed; files that are still there are kept, and so is the old
        manifest: the next archive writes a new one beside it.
        """
        missing = list(missing)
        forget_file = self.db.prepared("forget_file", _forget_file)

        def forget(tx: Tx) -> None:
            tx.run_many(forget_file, [{"pk": row.pk, "key": key} for key in missing])

        return transition(
            self.db,
            row,
            Event.REOPEN,
            owner=owner,
            now=now,
            values={
                "manifest_key": None,
                "manifest_etag": None,
                "manifest_version_id": None,
                # Repairing what the bucket lost rewrites the same archive (its manifest, at
                # its key); a job that changed gets a new one beside it.
                "archive_revision": row.archive_revision - 1 if missing else row.archive_revision,
            },
            detail={"reason": reason, "missing": missing, "manifest_key": row.manifest_key},
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

        def take_one(tx: Tx) -> None:
            take = self.db.prepared("take_delete", _take_delete)
            if tx.run(take, {"budget": budget}) != 1:
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
            detail={"manifest_key": row.manifest_key, "resend": row.state == JobState.DELETING},
            refusal="the delete gate stayed shut: the job is not archived with a manifest, "
            "is held, or is claimed by another worker",
            also=None if budget is None else take_one,
        )

    def record_delete_pending(
        self, row: JobRow, handle: str, answer: JSONValue, *, owner: str, now: datetime
    ) -> JobRow:
        """Store an asynchronous delete's handle before the first poll, so a crash resumes it."""
        values = {"delete_handle": handle, "delete_answer": answer}
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
        self, row: JobRow, answer: JSONValue, *, owner: str, now: datetime
    ) -> JobRow:
        values = {"delete_answer": answer, "provider_deleted_at": now, "kept_reason": None}
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
        """The receipt is written and the job is done. The claim ends in the same UPDATE: the
        row returned has no lease, and ``Claim`` has nothing left to release."""
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
        self, row: JobRow, event: str, detail: Mapping[str, object], *, owner: str, now: datetime
    ) -> None:
        with self.db.write() as tx:
            self.db.audit(
                tx,
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
            "attempts": Sql.PLUS_ONE,
            "last_error": error[:4000],
            "last_error_at": now,
            "next_attempt_at": retry_at,
        }
        return transition(self.db, row, Event.DEFER, owner=owner, now=now, values=values)

    def fail(self, row: JobRow, error: str, *, owner: str, now: datetime) -> JobRow:
        """A permanent failure before the delete gate: the job waits for a person, and the
        claim ends in the same UPDATE."""
        values = {
            "attempts": Sql.PLUS_ONE,
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


def _record_archive(
    db: Database,
    event: Event,
    row: JobRow,
    *,
    owner: str,
    manifest_key: str,
    files: Sequence[FileRecord],
    now: datetime,
    outputs: Outputs,
    values: dict[str, object],
    manifest_etag: str | None,
    manifest_version_id: str | None,
) -> JobRow:
    """The archive ``event`` (ARCHIVE, AMEND): the manifest that lists ``files``, their
    totals, and what the archive recorded of the job's outputs, in the row and its audit."""
    total = sum(f.size for f in files)
    values = {
        "archived_at": now,
        "manifest_key": manifest_key,
        "manifest_etag": manifest_etag,
        "manifest_version_id": manifest_version_id,
        "files_count": len(files),
        "bytes_archived": total,
        "archived_outputs": outputs,
        "archive_revision": Sql.PLUS_ONE,
        "last_error": None,
        "next_attempt_at": None,
        **values,
    }
    detail = {
        "manifest_key": manifest_key,
        "files": [{"key": f.key, "size": f.size, "sha256": f.sha256} for f in files],
        "bytes": total,
    }
    if manifest_etag is not None or manifest_version_id is not None:
        detail |= {"manifest_etag": manifest_etag, "manifest_version_id": manifest_version_id}
    return transition(db, row, event, owner=owner, now=now, values=values, detail=detail)


def _forget_file() -> sa.Delete:
    return archive_files.delete().where(
        archive_files.c.job_pk == sa.bindparam("pk"), archive_files.c.key == sa.bindparam("key")
    )
