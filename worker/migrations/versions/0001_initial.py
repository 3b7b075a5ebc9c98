"""The initial ledger: jobs, archived files, the audit trail and leases.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ledger.schema import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("job_id", sa.String(512), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tracked", sa.Boolean, nullable=False),
        sa.Column("held", sa.Boolean, nullable=False),
        sa.Column("provider_status", sa.String(64)),
        sa.Column("phase", sa.String(16)),
        sa.Column("first_seen_at", UTCDateTime, nullable=False),
        sa.Column("last_checked_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("terminal_at", UTCDateTime),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_at", UTCDateTime),
        sa.Column("next_attempt_at", UTCDateTime),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.Column("archived_at", UTCDateTime),
        sa.Column("manifest_key", sa.String(1100)),
        sa.Column("files_count", sa.Integer),
        sa.Column("bytes_archived", sa.BigInteger),
        sa.Column("delete_requested_at", UTCDateTime),
        sa.Column("delete_handle", sa.String(255)),
        sa.Column("delete_answer", sa.JSON),
        sa.Column("provider_deleted_at", UTCDateTime),
        sa.Column("deleted_at", UTCDateTime),
        sa.Column("receipt_key", sa.String(1100)),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("provider", "job_id", name="uq_jobs_provider_job"),
    )
    op.create_index("ix_jobs_provider_state_terminal", "jobs", ["provider", "state", "terminal_at"])
    op.create_index("ix_jobs_state", "jobs", ["state"])

    op.create_table(
        "archive_files",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("job_pk", _ID, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(1100), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("etag", sa.String(128)),
        sa.Column("version_id", sa.String(1024)),
        sa.Column("origin_bucket", sa.String(63)),
        sa.Column("origin_key", sa.String(1100)),
        sa.Column("stored_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("job_pk", "key", name="uq_archive_files_job_key"),
    )

    op.create_table(
        "audit_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("job_id", sa.String(512)),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_provider_job", "audit_events", ["provider", "job_id"])
    op.create_index("ix_audit_at", "audit_events", ["at"])

    op.create_table(
        "leases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(128)),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("acquired_at", UTCDateTime),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_audit_at", "audit_events")
    op.drop_index("ix_audit_provider_job", "audit_events")
    op.drop_table("audit_events")
    op.drop_table("archive_files")
    op.drop_index("ix_jobs_state", "jobs")
    op.drop_index("ix_jobs_provider_state_terminal", "jobs")
    op.drop_table("jobs")
