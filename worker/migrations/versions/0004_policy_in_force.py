"""The policy in force when a job was archived: its retention, when it became due and why.

`retention report` reads these instead of recomputing them from today's configuration, so a
later change of `retain_days`, or a provider removed from the configuration, rewrites no
history. Jobs archived before this revision have none; the report says so.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ledger.schema import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("retain_days", sa.Integer))
        batch.add_column(sa.Column("due_at", UTCDateTime))
        batch.add_column(sa.Column("due_reason", sa.String(300)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("due_reason")
        batch.drop_column("due_at")
        batch.drop_column("retain_days")
