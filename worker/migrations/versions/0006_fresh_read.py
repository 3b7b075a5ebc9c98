"""What an archive recorded of a job's outputs, how many times the job was archived, and
why the worker keeps it.

* ``archived_outputs``: each output's name, the key that holds it and what the provider
  declared of it (size, SHA-256, ETag, version). The read taken right before the delete is
  held to it. Jobs archived before this revision have none: their next read before a delete
  archives them again (files still stored are not fetched again), so they are proved too.
* ``archive_revision``: 1 for a job archived once; a job archived again after it changed
  at the provider gets a new manifest beside the old one, named by this number.
* ``kept_reason``: the ``Kept`` reason while the worker keeps the job, also for a job whose
  delete may already have been sent (it stays DELETING, waiting for a person).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("archived_outputs", sa.JSON))
        batch.add_column(
            sa.Column("archive_revision", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("kept_reason", sa.String(64)))
    jobs = sa.table(
        "jobs",
        sa.column("archive_revision", sa.Integer),
        sa.column("archived_at", sa.DateTime),
        sa.column("manifest_key", sa.String),
    )
    op.execute(
        jobs.update()
        .where(sa.or_(jobs.c.archived_at.is_not(None), jobs.c.manifest_key.is_not(None)))
        .values(archive_revision=1)
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("kept_reason")
        batch.drop_column("archive_revision")
        batch.drop_column("archived_outputs")
