"""What a compliance officer asks for: what was deleted and when, and each job back on demand.

``report`` lists every deleted job with when it became due, was archived and was deleted,
where its archive is, and what the provider answered. ``restore`` reads an archived job's
files back, each checked against its manifest (size and SHA-256), optionally writing them to
a folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from worker.archive import Archive
from worker.domain import due_at
from worker.errors import ConfigError, WorkerError
from worker.keys import MANIFEST_NAME, RECEIPT_NAME, job_folder
from worker.ledger import Ledger
from worker.manifest import parse_manifest
from worker.settings import Settings

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

REPORT_FIELDS = (
    "provider",
    "job_id",
    "due_at",
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
) -> Iterator[dict[str, Any]]:
    for row, keys in ledger.deleted_jobs(since=since, provider=provider):
        retain = (
            settings.policy(row.provider).retain_days if row.provider in settings.providers else 0
        )
        answer = row.delete_answer if isinstance(row.delete_answer, dict) else {}
        yield {
            "provider": row.provider,
            "job_id": row.job_id,
            "due_at": _iso(due_at(row.terminal_at, retain)) if row.terminal_at else None,
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


@dataclass(frozen=True)
class Restored:
    key: str
    path: Path | None
    size: int
    ok: bool
    problem: str | None = None


def restore(
    archive: Archive, settings: Settings, provider: str, job_id: str, *, to: Path | None
) -> Iterator[Restored]:
    """Read every file of an archived job back, verifying it against the manifest; write it
    under ``to`` (keys relative to the job's folder) unless ``to`` is None."""
    folder = job_folder(settings.archive.prefix, provider, job_id)
    manifest_key = folder + MANIFEST_NAME
    document = archive.get_json(manifest_key)
    if document is None:
        raise WorkerError(
            f"there is no manifest at s3://{archive.bucket}/{manifest_key}",
            provider=provider,
            job_id=job_id,
            hint="Check the provider name and job id (`retention report` lists deleted jobs)",
        )
    files = parse_manifest(document, provider=provider, job_id=job_id, key=manifest_key)
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
        root = to.resolve()
    for entry in files:
        if not entry.key.startswith(folder):
            yield Restored(entry.key, None, 0, False, "the manifest lists a key outside the job")
            continue
        path = None
        if to is not None:
            path = (root / entry.key[len(folder) :]).resolve()
            if not path.is_relative_to(root):
                yield Restored(entry.key, None, 0, False, "refused: it would land outside --to")
                continue
        yield _restore_one(archive, entry.key, entry.size, entry.sha256, path)
    if to is not None:
        for name in (MANIFEST_NAME, RECEIPT_NAME):
            if archive.get_json(folder + name) is not None:
                with (root / name).open("wb") as out:
                    archive.read_back_sha256(folder + name, sink=out.write)


def _restore_one(archive: Archive, key: str, size: int, sha256: str, path: Path | None) -> Restored:
    try:
        if path is None:
            got_size, got_sha = archive.read_back_sha256(key)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                got_size, got_sha = archive.read_back_sha256(key, sink=out.write)
    except WorkerError as exc:
        return Restored(key, path, 0, False, f"missing or unreadable: {exc}")
    if got_size != size:
        return Restored(key, path, got_size, False, f"{got_size} bytes, the manifest says {size}")
    if got_sha != sha256:
        return Restored(
            key,
            path,
            got_size,
            False,
            f"SHA-256 {got_sha[:16]}..., the manifest says {sha256[:16]}...",
        )
    return Restored(key, path, got_size, True)
