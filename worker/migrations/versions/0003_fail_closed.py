"""Failing closed: kept jobs, sweep delete budgets, lease renewals, exact cleanup.

* `kept` joins the open states, so the partial index of open jobs is rebuilt with it;
* `sweep_budgets`: each sweep's max_deletes_per_sweep, taken from at the delete gate by
  every worker that serves the sweep;
* `leases.renewed_at`: a busy sweep names when its holder last renewed;
* `archive_files.origin_etag` and `origin_version_id`: the user's own object as archived, so
  that cleanup removes that object and never a newer one at the same key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ledger.schema import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_BEFORE = "state IN ('pending', 'archived', 'deleting', 'cleaning')"
OPEN_AFTER = "state IN ('pending', 'kept', 'archived', 'deleting', 'cleaning')"


def _open_index(condition: str) -> None:
    op.drop_index("ix_jobs_open", "jobs")
    op.create_index(
        "ix_jobs_open",
        "jobs",
        ["provider", "id"],
        sqlite_where=sa.text(condition),
        postgresql_where=sa.text(condition),
    )


def upgrade() -> None:
    _open_index(OPEN_AFTER)
    op.create_table(
        "sweep_budgets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("max_deletes", sa.Integer, nullable=False),
        sa.Column("used", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_sweep_budgets_created", "sweep_budgets", ["created_at"])
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("renewed_at", UTCDateTime))
    with op.batch_alter_table("archive_files") as batch:
        batch.add_column(sa.Column("origin_etag", sa.String(128)))
        batch.add_column(sa.Column("origin_version_id", sa.String(1024)))


def downgrade() -> None:
    with op.batch_alter_table("archive_files") as batch:
        batch.drop_column("origin_version_id")
        batch.drop_column("origin_etag")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("renewed_at")
    op.drop_index("ix_sweep_budgets_created", "sweep_budgets")
    op.drop_table("sweep_budgets")
    _open_index(OPEN_BEFORE)
