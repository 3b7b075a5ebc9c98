"""What a sweep's discovery writes: a provider's listing folded into the ledger, in bulk.

Not under any claim: only jobs still waiting in the initial state are updated, and each is
read again under its claim before anything happens to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from worker.domain import JobState, ListedJob, Phase, is_terminal, terminal_since
from worker.ledger.database import Database, new_job
from worker.ledger.schema import jobs


class Discovery:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record_listing(self, provider: str, listed: Sequence[ListedJob], now: datetime) -> int:
        """Fold one page of a provider's listing into the ledger; return how many were new.

        A job first seen terminal starts its retention clock now (the provider gave no
        timestamp). A job whose status went back to running has its clock reset. Only jobs
        waiting in the initial state are updated; the rest are read under their claim.
        """
        if not listed:
            return 0
        c = jobs.c
        ids = [item.job_id for item in listed]
        with self.db.tx() as conn:
            existing = {
                r.job_id: r
                for r in conn.execute(
                    sa.select(c.id, c.job_id, c.state, c.terminal_at).where(
                        c.provider == provider, c.job_id.in_(ids)
                    )
                )
            }
            new_rows = []
            updates: dict[tuple[str, ...], list[dict[str, object]]] = {}
            for item in listed:
                row = existing.get(item.job_id)
                terminal = is_terminal(item.phase)
                # A status word we do not know is not a fresh read we can use: the job stays
                # stale, so the sweep reads it itself and records why it is left alone.
                checked = None if item.phase == Phase.UNKNOWN else now
                if row is None:
                    new_rows.append(
                        new_job(provider, item.job_id, now)
                        | {
                            "provider_status": item.status[:64],
                            "phase": item.phase,
                            "last_checked_at": checked,
                            "finished_at": item.finished_at if terminal else None,
                            "terminal_at": terminal_since(item.finished_at, now)
                            if terminal
                            else None,
                        }
                    )
                    continue
                if row.state != JobState.PENDING:
                    continue
                values: dict[str, object] = {
                    "provider_status": item.status[:64],
                    "phase": item.phase,
                    "updated_at": now,
                }
                if checked is not None:
                    values["last_checked_at"] = checked
                if terminal:
                    # The same rule as a fresh read: the provider's finish time if it gave
                    # one, never later than our first sighting.
                    values["terminal_at"] = terminal_since(item.finished_at, row.terminal_at or now)
                    values["finished_at"] = item.finished_at
                else:
                    values["terminal_at"] = None
                # Rows that set the same columns go in one executemany, not one statement each:
                # a sweep re-reads every listed job, so this is per job on every sweep.
                updates.setdefault(tuple(sorted(values)), []).append(
                    {f"v_{k}": v for k, v in values.items()} | {"v_id": row.id}
                )
            for columns, rows in updates.items():
                conn.execute(
                    jobs.update()
                    .where(c.id == sa.bindparam("v_id"), c.state == JobState.PENDING)
                    .values({k: sa.bindparam(f"v_{k}") for k in columns}),
                    rows,
                )
            self.db.insert_missing(conn, new_rows)
        return len(new_rows)
