"""`retention scrub`: re-verify the archive in bulk, as `restic check --read-data-subset` and
`rclone check` do.

For every job with a written manifest (archived, being deleted, or deleted):

* the manifest is read and must be this job's, listing exactly the files the ledger
  verified, with their sizes and SHA-256;
* each file is looked at with a HEAD at the version that was verified: it must exist, with
  the size in the manifest, the ETag recorded when it was verified, and, where the server
  stores the whole object's SHA-256, that digest; a newer version or a delete marker at its
  key is reported;
* with ``read_fraction`` (``--read-data N%``), that share of the files, drawn at random, is
  read back and hashed, the proof that needs no trust in the server's metadata. Files in a
  cold storage class cannot be read without a restore and are counted apart.

Nothing is changed anywhere: a scrub reports, and a person decides (a damaged archive of a
job still at the provider is archived again by the next sweep once `retention retry` or the
delete gate's own check sends it back).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from worker.errors import ArchiveError, WorkerError
from worker.manifest import ManifestFile, parse_manifest

if TYPE_CHECKING:
    from worker.archive import Archive
    from worker.domain import JobRow
    from worker.ledger import FileRecord, Ledger

BATCH = 200


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with the archive of one job: a file (or its manifest) and what."""

    provider: str
    job_id: str
    key: str
    problem: str


@dataclass
class ScrubReport:
    jobs: int = 0
    files: int = 0
    # Files read back and hashed (--read-data), and their bytes.
    read: int = 0
    bytes_read: int = 0
    # Files the sample drew that sit in a cold class: checked by HEAD only.
    cold_skipped: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings


def scrub_archive(
    archive: Archive,
    ledger: Ledger,
    *,
    provider: str | None = None,
    since: datetime | None = None,
    read_fraction: float = 0.0,
    on_job: Callable[[JobRow, list[Finding]], None] | None = None,
) -> ScrubReport:
    """`retention scrub`: the bucket, then every archived job. An archive that cannot be
    reached is one error (exit 3), not a finding per job; any other answer is left to the
    scrub, which names what it finds per file."""
    from worker.exits import is_unreachable

    try:
        archive.check_bucket()
    except ArchiveError as exc:
        if is_unreachable(exc):
            raise
    return scrub(
        archive,
        ledger,
        provider=provider,
        since=since,
        read_fraction=read_fraction,
        on_job=on_job,
    )


def scrub(
    archive: Archive,
    ledger: Ledger,
    *,
    provider: str | None = None,
    since: datetime | None = None,
    read_fraction: float = 0.0,
    on_job: Callable[[JobRow, list[Finding]], None] | None = None,
    draw: Callable[[], float] = random.random,
) -> ScrubReport:
    """Re-verify every archived job (of ``provider``, archived since ``since``)."""
    if not 0.0 <= read_fraction <= 1.0:
        raise ValueError("read_fraction must be between 0 and 1")
    report = ScrubReport()
    after = 0
    while True:
        rows = ledger.query.archived_jobs(
            provider=provider, since=since, after_pk=after, limit=BATCH
        )
        if not rows:
            return report
        after = rows[-1].pk
        for row in rows:
            found = _scrub_job(archive, ledger, row, report, read_fraction, draw)
            report.jobs += 1
            report.findings.extend(found)
            if on_job is not None:
                on_job(row, found)


def _scrub_job(
    archive: Archive,
    ledger: Ledger,
    row: JobRow,
    report: ScrubReport,
    read_fraction: float,
    draw: Callable[[], float],
) -> list[Finding]:
    assert row.manifest_key is not None

    def finding(key: str, problem: str) -> Finding:
        return Finding(row.provider, row.job_id, key, problem)

    try:
        document = archive.get_json(row.manifest_key)
    except WorkerError as exc:
        return [finding(row.manifest_key, f"the manifest cannot be read: {exc}")]
    if document is None:
        return [finding(row.manifest_key, "the manifest is missing")]
    try:
        files = parse_manifest(
            document, provider=row.provider, job_id=row.job_id, key=row.manifest_key
        )
    except WorkerError as exc:
        return [finding(row.manifest_key, str(exc))]
    records = ledger.query.files(row.pk)
    found = [finding(row.manifest_key, p) for p in _against_ledger(files, records)]
    for entry in files:
        report.files += 1
        record = records.get(entry.key)
        version = entry.version_id or (record.version_id if record else None)
        try:
            problems = _examine(archive, entry, record, version)
            if not problems and read_fraction and draw() < read_fraction:
                problems = _read(archive, entry, version, report)
        except WorkerError as exc:
            problems = [f"cannot be read: {exc}"]
        found.extend(finding(entry.key, problem) for problem in problems)
    return found


def _against_ledger(files: list[ManifestFile], records: dict[str, FileRecord]) -> list[str]:
    """The manifest must list exactly the files the ledger verified, with their digests."""
    problems = []
    listed = {entry.key for entry in files}
    for entry in files:
        record = records.get(entry.key)
        if record is None:
            problems.append(f"lists {entry.key}, which the ledger has no record of")
        elif (record.size, record.sha256) != (entry.size, entry.sha256):
            problems.append(f"lists {entry.key} with another size or SHA-256 than the ledger")
    unlisted = sorted(set(records) - listed)
    if unlisted:
        problems.append(f"leaves out {len(unlisted)} verified file(s): {', '.join(unlisted[:3])}")
    return problems


def _examine(
    archive: Archive, entry: ManifestFile, record: FileRecord | None, version: str | None
) -> list[str]:
    """What a HEAD of the verified version shows, against the manifest and the ledger."""
    state = archive.stat(entry.key, version_id=version)
    if state is None:
        return ["missing" + (f" (version {version})" if version else "")]
    problems = []
    if state.size != entry.size:
        problems.append(f"holds {state.size} bytes; the manifest says {entry.size}")
    if state.sha256 is not None and state.sha256 != entry.sha256:
        problems.append(
            f"the server's SHA-256 is {state.sha256[:16]}...; the manifest says "
            f"{entry.sha256[:16]}..."
        )
    if record is not None and record.etag and state.etag and state.etag != record.etag:
        problems.append(f"ETag {state.etag}; it was {record.etag} when verified")
    newer = archive.superseded(entry.key, version)
    if newer is not None:
        problems.append(newer)
    return problems


def _read(
    archive: Archive, entry: ManifestFile, version: str | None, report: ScrubReport
) -> list[str]:
    """Read the file back and hash it (a cold one is counted, not read)."""
    state = archive.stat(entry.key, version_id=version)
    if state is not None and state.cold:
        report.cold_skipped += 1
        return []
    size, sha256 = archive.read_back_sha256(entry.key, version)
    report.read += 1
    report.bytes_read += size
    if (size, sha256) != (entry.size, entry.sha256):
        return [
            f"read back as {size} bytes with SHA-256 {sha256[:16]}...; the manifest says "
            f"{entry.size} bytes, {entry.sha256[:16]}..."
        ]
    return []
