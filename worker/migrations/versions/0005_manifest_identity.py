"""The manifest's identity: the ETag and version of the manifest object as it was written.

The ledger records the manifest by key; these say which object at that key the job was
archived with, so it can be told from one written at the same key later. Jobs archived
before this revision have none.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("manifest_etag", sa.String(128)))
        batch.add_column(sa.Column("manifest_version_id", sa.String(1024)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("manifest_version_id")
        batch.drop_column("manifest_etag")
