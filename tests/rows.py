"""A job's ledger row as tests arrange it: every field at its value for a job the ledger has
just heard of, and the ones a test names set to what it says."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from worker.domain import INITIAL_STATE, JobRow


def job_row(
    *,
    first_seen_at: datetime,
    pk: int = 1,
    provider: str = "daily",
    job_id: str = "j",
    **fields: Any,
) -> JobRow:
    """A ``JobRow`` of a job first seen at ``first_seen_at``, with ``fields`` set."""
    row = JobRow(
        pk=pk,
        provider=provider,
        job_id=job_id,
        state=INITIAL_STATE,
        tracked=False,
        held=False,
        provider_status=None,
        phase=None,
        first_seen_at=first_seen_at,
        last_checked_at=None,
        finished_at=None,
        terminal_at=None,
        attempts=0,
        last_error=None,
        next_attempt_at=None,
        lease_owner=None,
        lease_expires_at=None,
        archived_at=None,
        manifest_key=None,
        files_count=None,
        bytes_archived=None,
        delete_requested_at=None,
        delete_handle=None,
        delete_answer=None,
        provider_deleted_at=None,
        deleted_at=None,
        receipt_key=None,
    )
    return dataclasses.replace(row, **fields)
