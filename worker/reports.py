"""What a compliance officer asks for: every deleted job, when it became due, was archived
and was deleted, where its archive is, and what the provider answered."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TypedDict

from worker.domain import due_at
from worker.errors import ConfigError
from worker.json_types import JSONValue
from worker.ledger import Ledger
from worker.settings import Settings

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

REPORT_FIELDS = (
    "provider",
    "job_id",
    "due_at",
    "retain_days",
    "due_reason",
    "archived_at",
    "deleted_at",
    "files",
    "bytes",
    "manifest_key",
    "receipt_key",
    "archive_keys",
    "provider_answer",
    "provider_status_code",
)


class ReportRow(TypedDict):
    """One deleted job in the report (the columns of ``REPORT_FIELDS``): times in ISO 8601,
    the provider's answer to the delete as the ledger recorded it."""

    provider: str
    job_id: str
    due_at: str | None
    retain_days: int | None
    due_reason: str | None
    archived_at: str | None
    deleted_at: str | None
    files: int
    bytes: int
    manifest_key: str | None
    receipt_key: str | None
    archive_keys: list[str]
    provider_answer: JSONValue
    provider_status_code: JSONValue


def parse_since(text: str, now: datetime) -> datetime:
    """``30d``, ``12h``, ``2w`` back from now, or an ISO date or time (UTC if no zone)."""
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r} is neither a duration (30d, 12h, 2w) nor an ISO date"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=now.tzinfo)


def report(
    ledger: Ledger, settings: Settings, *, since: datetime, provider: str | None
) -> Iterator[ReportRow]:
    """Every job deleted since ``since``, with the policy in force when it was archived.

    The due time, retention and reason are the ones stored at archive time, so a later
    change of configuration (or a provider removed from it) rewrites nothing already
    reported. A job archived before they were stored shows them computed from today's
    configuration, and says so in ``due_reason``.
    """
    for row, keys in ledger.query.deleted_jobs(since=since, provider=provider):
        retain, due, reason = row.retain_days, row.due_at, row.due_reason
        if retain is None and row.terminal_at is not None and row.provider in settings.providers:
            retain = settings.policy(row.provider).retain_days
            due = due_at(row.terminal_at, retain)
            reason = "computed from today's configuration (archived before policies were kept)"
        answer = row.delete_answer if isinstance(row.delete_answer, dict) else {}
        yield {
            "provider": row.provider,
            "job_id": row.job_id,
            "due_at": _iso(due),
            "retain_days": retain,
            "due_reason": reason,
            "archived_at": _iso(row.archived_at),
            "deleted_at": _iso(row.provider_deleted_at or row.deleted_at),
            "files": row.files_count or 0,
            "bytes": row.bytes_archived or 0,
            "manifest_key": row.manifest_key,
            "receipt_key": row.receipt_key,
            "archive_keys": keys,
            "provider_answer": answer.get("result"),
            "provider_status_code": answer.get("status_code"),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")
