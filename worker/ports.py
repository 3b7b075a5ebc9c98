"""The ports a job is carried through: the archive, the ledger's job operations, the provider.

``job.process_job`` reaches the outside world only through these, on the runtime:
``rt.archive`` (``ArchiveStore``), ``rt.ledger.jobs`` and ``rt.ledger.query``
(``JobOperations`` and ``JobReads``), and ``rt.provider(name)`` (``providers.base.Provider``).

Each has its real implementation (``archive.Archive`` on S3; ``ledger.JobWrites`` and
``ledger.Queries`` on SQLite or PostgreSQL; an adapter per vendor) and an in-memory fake in
``tests/fakes.py``. One contract, ``tests/pipeline/test_ports.py``, runs against both: a fake
that passed none would let the fake-backed pipeline tests prove things about a world that
does not exist. The fakes subclass these Protocols, and the real classes are held to them by
mypy in the same tests, so a method added to one side and not the other fails the type check.

Only what the pipeline asks for is here: what `retention scrub`, `restore` and the sweep ask
of the same objects is not a port the job path depends on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from worker.archive import StoredObject, Verified
    from worker.domain import JobRow, JobSnapshot
    from worker.ledger.schema import FileRecord
    from worker.source_bucket import SourceObject


class ArchiveStore(Protocol):
    """The archive bucket, as a job uses it: store and verify each file, write the manifest
    and the receipt, and prove at the delete gate that all of it is still there."""

    def store_stream(
        self,
        key: str,
        chunks: Iterator[bytes],
        *,
        size_hint: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
    ) -> StoredObject:
        """Stream ``chunks`` into ``key`` and verify what was stored. A key already taken
        by other bytes is never overwritten: a permanent ArchiveError. A stream that fails
        part-way stores nothing."""
        ...

    def copy_from(self, source: SourceObject, dest_key: str) -> StoredObject:
        """Copy an object from the user's own bucket into ``dest_key``, verified."""
        ...

    def exists_unchanged(
        self, key: str, *, size: int, etag: str | None, version_id: str | None = None
    ) -> bool:
        """Whether ``key`` still holds the object as it was verified."""
        ...

    def missing(self, objects: Sequence[Verified]) -> list[str]:
        """The keys of ``objects`` no longer held as verified."""
        ...

    def get_json(self, key: str, *, version_id: str | None = None) -> Any:
        """The JSON document at ``key``; None when there is none."""
        ...

    def put_json(
        self, key: str, payload: Any, *, same: Callable[[Any], bool] | None = None
    ) -> StoredObject:
        """Write a JSON document; a taken key is kept when ``same(existing)``, else a
        permanent ArchiveError."""
        ...


class JobOperations(Protocol):
    """The ledger's writes to one job: a claim, and the fenced transitions of the lifecycle
    (each raises LedgerError, changing nothing, when the row is not in one of its source
    states or no longer claimed by ``owner``)."""

    def claim(
        self, provider: str, job_id: str, *, owner: str, ttl: timedelta, now: datetime
    ) -> JobRow | None: ...

    def renew(self, pk: int, *, owner: str, ttl: timedelta, now: datetime) -> bool: ...

    def release(self, pk: int, *, owner: str) -> None: ...

    def record_status(
        self, row: JobRow, snapshot: JobSnapshot, *, owner: str, now: datetime
    ) -> JobRow: ...

    def mark_gone(self, row: JobRow, answer: Any, *, owner: str, now: datetime) -> JobRow: ...

    def keep(
        self, row: JobRow, reason: str, message: str, *, owner: str, now: datetime
    ) -> JobRow: ...

    def keep_past_gate(
        self, row: JobRow, reason: str, message: str, *, owner: str, now: datetime
    ) -> JobRow: ...

    def record_file(
        self, row: JobRow, record: FileRecord, *, owner: str, now: datetime
    ) -> None: ...

    def mark_archived(
        self,
        row: JobRow,
        *,
        owner: str,
        manifest_key: str,
        files: Sequence[FileRecord],
        now: datetime,
        outputs: Any = None,
        retain_days: int | None = None,
        due_at: datetime | None = None,
        due_reason: str | None = None,
        manifest_etag: str | None = None,
        manifest_version_id: str | None = None,
    ) -> JobRow: ...

    def reopen(
        self, row: JobRow, missing: Sequence[str], reason: str, *, owner: str, now: datetime
    ) -> JobRow: ...

    def open_delete_gate(
        self, row: JobRow, *, owner: str, now: datetime, budget: str | None = None
    ) -> JobRow: ...

    def record_delete_pending(
        self, row: JobRow, handle: str, answer: Any, *, owner: str, now: datetime
    ) -> JobRow: ...

    def forget_delete_handle(
        self, row: JobRow, reason: str, *, owner: str, now: datetime
    ) -> JobRow: ...

    def record_provider_deleted(
        self, row: JobRow, answer: Any, *, owner: str, now: datetime
    ) -> JobRow: ...

    def mark_deleted(
        self, row: JobRow, *, receipt_key: str, owner: str, now: datetime
    ) -> JobRow: ...

    def audit_event(
        self, row: JobRow, event: str, detail: dict[str, Any], *, owner: str, now: datetime
    ) -> None: ...

    def defer(
        self, row: JobRow, error: str, *, owner: str, now: datetime, retry_at: datetime
    ) -> JobRow: ...

    def fail(self, row: JobRow, error: str, *, owner: str, now: datetime) -> JobRow: ...


class JobReads(Protocol):
    """What a job reads back from the ledger: its row, its verified files, its trail."""

    def get(self, provider: str, job_id: str) -> JobRow | None: ...

    def files(self, pk: int) -> dict[str, FileRecord]: ...

    def audit_trail(self, provider: str, job_id: str) -> list[dict[str, Any]]: ...


class JobLedger(Protocol):
    """The ledger as a job's claim and steps use it (``ledger.Ledger``)."""

    @property
    def jobs(self) -> JobOperations: ...

    @property
    def query(self) -> JobReads: ...
