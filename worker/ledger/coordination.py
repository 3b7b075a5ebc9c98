"""What keeps sweeps apart and bounded when no Redis is configured: sweep leases in the ledger,
and each sweep's delete budget (which lives here always, so that the delete gate can take
from it in the same transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from worker.ledger.database import Database
from worker.ledger.schema import leases, sweep_budgets

# A budget row outlives its sweep by this much, for a job task still queued; then it goes.
BUDGET_RETENTION = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class LeaseState:
    owner: str
    renewed_at: datetime | None
    expires_at: datetime


class Coordination:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- sweep leases ----------------------------------------------------------------------

    def acquire(self, name: str, *, owner: str, ttl: timedelta, now: datetime) -> bool:
        """Take a named lease if it is free, expired or already ours."""
        with self.db.tx() as conn:
            exists = conn.execute(sa.select(leases.c.name).where(leases.c.name == name)).first()
            if exists is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            leases.insert().values(
                                name=name,
                                owner=owner,
                                expires_at=now + ttl,
                                acquired_at=now,
                                renewed_at=now,
                            )
                        )
                    return True
                except sa.exc.IntegrityError:
                    pass
            result = conn.execute(
                leases.update()
                .where(
                    leases.c.name == name,
                    sa.or_(
                        leases.c.owner.is_(None),
                        leases.c.expires_at < now,
                        leases.c.owner == owner,
                    ),
                )
                .values(owner=owner, expires_at=now + ttl, acquired_at=now, renewed_at=now)
            )
            return result.rowcount == 1

    def renew(self, name: str, *, owner: str, ttl: timedelta, now: datetime) -> bool:
        with self.db.tx() as conn:
            result = conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.owner == owner)
                .values(expires_at=now + ttl, renewed_at=now)
            )
        return result.rowcount == 1

    def release(self, name: str, *, owner: str) -> None:
        with self.db.tx() as conn:
            conn.execute(
                leases.update()
                .where(leases.c.name == name, leases.c.owner == owner)
                .values(owner=None, expires_at=None)
            )

    def holder(self, name: str, *, now: datetime) -> LeaseState | None:
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(leases.c.owner, leases.c.expires_at, leases.c.renewed_at).where(
                    leases.c.name == name
                )
            ).first()
        if row is None or row.owner is None or row.expires_at is None or row.expires_at < now:
            return None
        return LeaseState(str(row.owner), row.renewed_at, row.expires_at)

    # -- delete budgets --------------------------------------------------------------------

    def open_budget(self, budget: str, provider: str, max_deletes: int, *, now: datetime) -> None:
        """A sweep's delete budget, taken from by ``JobWrites.open_delete_gate``."""
        with self.db.tx() as conn:
            conn.execute(
                sweep_budgets.delete().where(sweep_budgets.c.created_at < now - BUDGET_RETENTION)
            )
            conn.execute(
                sweep_budgets.insert().values(
                    id=budget, provider=provider, max_deletes=max_deletes, used=0, created_at=now
                )
            )

    def budget_left(self, budget: str) -> int:
        """Deletes the sweep may still start (0 once spent, or for an unknown budget)."""
        with self.db.read() as conn:
            row = conn.execute(
                sa.select(sweep_budgets.c.max_deletes, sweep_budgets.c.used).where(
                    sweep_budgets.c.id == budget
                )
            ).first()
        return 0 if row is None else max(0, int(row.max_deletes) - int(row.used))
