"""A partial index of the jobs a sweep may still act on.

Picking a sweep's next batch walked the primary key past every job ever deleted; with this
index it reads only the open backlog (pending, archived, deleting, cleaning).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# The open states as this revision knew them; 0003 adds `kept`. A migration never reads the
# current code's sets, so it creates the same index whenever it runs.
OPEN_JOBS = sa.text("state IN ('pending', 'archived', 'deleting', 'cleaning')")

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_open",
        "jobs",
        ["provider", "id"],
        sqlite_where=OPEN_JOBS,
        postgresql_where=OPEN_JOBS,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_open", "jobs")
