"""In-memory fakes of the ports a job goes through (``worker/ports.py``), and a runtime of them.

After cosmicpython's ``FakeRepository``: each fake subclasses its port, so mypy holds it to
the same signatures as the real class, and ``tests/pipeline/test_ports.py`` runs one contract
against both (moto for the archive, SQLite for the ledger, the Daily adapter over its
simulator for the provider). A fake that fails the contract lies, and every test built on it
with it.

* ``FakeArchive``: a bucket of bytes; never overwrites a key with other bytes; ``lose`` and
  ``fail`` stand in for a lifecycle rule and an S3 fault.
* ``FakeLedger``: the jobs table, the archived files and the audit trail in dicts. Every
  transition is checked as the ledger's one UPDATE checks it: the event's source states
  (``domain.LIFECYCLE``), its guard, and the claim.
* ``FakeProvider``: jobs with files, read fresh on every ``get_job``; deletes recorded, and
  faults queued per call with ``fail``.

``fake_runtime`` puts them in a ``Runtime`` for ``job.process_job``: a job's whole lifecycle
in a few milliseconds, with no server, socket or file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, cast

import httpx

from tests.helpers import config_data, settings_of
from tests.rows import job_row
from worker.archive import Archive, StoredObject, Verified
from worker.bootstrap import Runtime
from worker.domain import (
    KEEP_RECHECK,
    LIFECYCLE,
    OPEN_STATES,
    AlreadyGone,
    Artifact,
    DeleteAnswer,
    Deleted,
    DeletePending,
    Event,
    JobGone,
    JobRow,
    JobSnapshot,
    JobState,
    ListedJob,
    Phase,
    ProviderOrigin,
    allows,
    terminal_since,
)
from worker.errors import ArchiveError, BrakeEngaged, Kept, LedgerError, WorkerError
from worker.fetch import Fetcher, make_download_client
from worker.ledger import Ledger
from worker.ledger.schema import FileRecord, actor_name
from worker.ledger.writes import AUDIT_NAMES
from worker.outputs import marked_rerun
from worker.ports import ArchiveStore, JobLedger, JobOperations, JobReads
from worker.providers.base import Provider
from worker.source_bucket import SourceBucket, SourceObject

# -- the archive ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    body: bytes
    etag: str
    version_id: str | None = None


class FakeArchive(ArchiveStore):
    """The archive bucket in memory. ``sources`` holds the user's own buckets' objects, by
    (bucket, key), for ``copy_from``."""

    def __init__(self) -> None:
        self.objects: dict[str, _Stored] = {}
        self.sources: dict[tuple[str, str], bytes] = {}
        self._faults: dict[str, list[WorkerError]] = defaultdict(list)

    # -- arranging, and looking -------------------------------------------------------------

    def fail(self, operation: str, error: WorkerError, *, times: int = 1) -> None:
        """Raise ``error`` from the next ``times`` calls of ``operation`` (a method name)."""
        self._faults[operation].extend([error] * times)

    def lose(self, key: str) -> None:
        """The object at ``key`` is gone (a lifecycle rule, a person with the console)."""
        del self.objects[key]

    def replace(self, key: str, body: bytes) -> None:
        """Something else is written at ``key`` behind the worker's back."""
        self.objects[key] = _Stored(body, _etag(body))

    def read(self, key: str) -> bytes:
        return self.objects[key].body

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))

    # -- the port ---------------------------------------------------------------------------

    def store_stream(
        self,
        key: str,
        chunks: Iterator[bytes],
        *,
        size_hint: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
    ) -> StoredObject:
        self._fault("store_stream")
        body = b"".join(chunks)  # a stream that fails part-way stores nothing
        return self._store(key, body)

    def copy_from(self, source: SourceObject, dest_key: str) -> StoredObject:
        self._fault("copy_from")
        body = self.sources.get((source.bucket, source.key))
        if body is None:
            raise ArchiveError(f"s3://{source.bucket}/{source.key} does not exist", permanent=True)
        return self._store(dest_key, body)

    def exists_unchanged(
        self, key: str, *, size: int, etag: str | None, version_id: str | None = None
    ) -> bool:
        self._fault("exists_unchanged")
        return self._holds(Verified(key, size, etag, version_id))

    def missing(self, objects: Sequence[Verified]) -> list[str]:
        self._fault("missing")
        return [o.key for o in objects if not self._holds(o)]

    def get_json(self, key: str, *, version_id: str | None = None) -> Any:
        self._fault("get_json")
        found = self.objects.get(key)
        if found is None:
            return None
        try:
            return json.loads(found.body)
        except ValueError:
            raise ArchiveError(f"s3://fake-archive/{key} is not valid JSON") from None

    def put_json(
        self, key: str, payload: Any, *, same: Callable[[Any], bool] | None = None
    ) -> StoredObject:
        self._fault("put_json")
        body = json.dumps(payload, indent=2, sort_keys=True, default=str).encode() + b"\n"
        found = self.objects.get(key)
        if found is not None and found.body != body:
            if same is None or not same(json.loads(found.body)):
                raise _taken(key)
            return _stored(key, found)
        return self._store(key, body)

    # -- inside -----------------------------------------------------------------------------

    def _fault(self, operation: str) -> None:
        queued = self._faults[operation]
        if queued:
            raise queued.pop(0)

    def _store(self, key: str, body: bytes) -> StoredObject:
        found = self.objects.get(key)
        if found is not None and found.body != body:
            raise _taken(key)
        stored = found or _Stored(body, _etag(body))
        self.objects[key] = stored
        return _stored(key, stored)

    def _holds(self, expected: Verified) -> bool:
        found = self.objects.get(expected.key)
        return found is not None and expected.held_by(len(found.body), found.etag)


def _etag(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def _stored(key: str, stored: _Stored) -> StoredObject:
    sha = hashlib.sha256(stored.body).hexdigest()
    return StoredObject(key, len(stored.body), sha, stored.etag, stored.version_id, "checksum")


def _taken(key: str) -> ArchiveError:
    return ArchiveError(
        f"s3://fake-archive/{key} already holds different content, and archived objects "
        "are never overwritten",
        permanent=True,
    )


# -- the ledger ----------------------------------------------------------------------------

# What ``transition`` sets in SQL as the column plus one (``writes.Sql.PLUS_ONE``).
PLUS_ONE = object()
_ROW_FIELDS = frozenset(JobRow.__dataclass_fields__)
# The columns the ledger keeps as JSON: read back as JSON gives them (a datetime as its str).
_JSON_FIELDS = ("delete_answer", "archived_outputs")
_REFUSED = "this worker no longer holds the job's claim, or the job moved on"


def _as_json(value: Any) -> Any:
    return None if value is None else json.loads(json.dumps(value, default=str))


@dataclass
class _Tables:
    rows: dict[int, JobRow] = field(default_factory=dict)
    keys: dict[tuple[str, str], int] = field(default_factory=dict)
    files: dict[int, dict[str, FileRecord]] = field(default_factory=dict)
    audit: list[dict[str, Any]] = field(default_factory=list)
    # A sweep's delete budget: id -> [used, max_deletes].
    budgets: dict[str, list[int]] = field(default_factory=dict)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))


class FakeJobOperations(JobOperations):
    def __init__(self, tables: _Tables) -> None:
        self.t = tables

    # -- claims ----------------------------------------------------------------------------

    def claim(
        self, provider: str, job_id: str, *, owner: str, ttl: timedelta, now: datetime
    ) -> JobRow | None:
        pk = self.t.keys.get((provider, job_id))
        if pk is None:
            pk = self.add(provider, job_id, now=now)
        row = self.t.rows[pk]
        free = (
            row.lease_owner is None
            or row.lease_expires_at is None
            or row.lease_expires_at < now
            or row.lease_owner == owner
        )
        if not free:
            return None
        return self._put(dataclasses.replace(row, lease_owner=owner, lease_expires_at=now + ttl))

    def renew(self, pk: int, *, owner: str, ttl: timedelta, now: datetime) -> bool:
        row = self.t.rows.get(pk)
        if row is None or row.lease_owner != owner:
            return False
        self._put(dataclasses.replace(row, lease_expires_at=now + ttl))
        return True

    def release(self, pk: int, *, owner: str) -> None:
        row = self.t.rows.get(pk)
        if row is not None and row.lease_owner == owner:
            self._put(dataclasses.replace(row, lease_owner=None, lease_expires_at=None))

    # -- transitions -----------------------------------------------------------------------

    def record_status(
        self, row: JobRow, snapshot: JobSnapshot, *, owner: str, now: datetime
    ) -> JobRow:
        terminal_at = None
        if snapshot.terminal:
            terminal_at = terminal_since(snapshot.finished_at, row.terminal_at or now)
        values: dict[str, Any] = {
            "provider_status": snapshot.status[:64],
            "phase": snapshot.phase,
            "finished_at": snapshot.finished_at,
            "terminal_at": terminal_at,
            "last_checked_at": now,
        }
        event = Event.READ if allows(Event.READ, row.state) else Event.REREAD
        if event == Event.REREAD and not snapshot.terminal and snapshot.phase != Phase.UNKNOWN:
            values["archived_outputs"] = marked_rerun(row.archived_outputs)
        return self._transition(row, event, owner=owner, now=now, values=values)

    def mark_gone(self, row: JobRow, answer: Any, *, owner: str, now: datetime) -> JobRow:
        values = {"last_checked_at": now, "delete_answer": answer}
        return self._transition(
            row, Event.GONE, owner=owner, now=now, values=values, detail={"answer": answer}
        )

    def keep(self, row: JobRow, reason: str, message: str, *, owner: str, now: datetime) -> JobRow:
        return self._keep(Event.KEEP, row, reason, message, owner=owner, now=now)

    def keep_past_gate(
        self, row: JobRow, reason: str, message: str, *, owner: str, now: datetime
    ) -> JobRow:
        return self._keep(Event.KEEP_PAST_GATE, row, reason, message, owner=owner, now=now)

    def _keep(
        self, event: Event, row: JobRow, reason: str, message: str, *, owner: str, now: datetime
    ) -> JobRow:
        values = {
            "attempts": PLUS_ONE,
            "last_error": message[:4000],
            "next_attempt_at": now + KEEP_RECHECK,
            "kept_reason": reason[:64],
        }
        detail = {"reason": reason, "message": message[:4000]}
        return self._transition(row, event, owner=owner, now=now, values=values, detail=detail)

    def record_file(self, row: JobRow, record: FileRecord, *, owner: str, now: datetime) -> None:
        self._transition(row, Event.FILE_STORED, owner=owner, now=now, values={})
        self.t.files.setdefault(row.pk, {})[record.key] = record

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
    ) -> JobRow:
        # As the ledger does: past the gate, the same write records an amend.
        event = Event.ARCHIVE if allows(Event.ARCHIVE, row.state) else Event.AMEND
        values: dict[str, Any] = (
            {"retain_days": retain_days, "due_at": due_at, "due_reason": due_reason}
            if event == Event.ARCHIVE
            else {"kept_reason": None}
        )
        return self._archived(
            event,
            row,
            owner,
            manifest_key,
            files,
            now,
            outputs,
            values,
            manifest_etag,
            manifest_version_id,
        )

    def _archived(
        self,
        event: Event,
        row: JobRow,
        owner: str,
        manifest_key: str,
        files: Sequence[FileRecord],
        now: datetime,
        outputs: Any,
        values: dict[str, Any],
        manifest_etag: str | None,
        manifest_version_id: str | None,
    ) -> JobRow:
        total = sum(f.size for f in files)
        values = {
            "archived_at": now,
            "manifest_key": manifest_key,
            "manifest_etag": manifest_etag,
            "manifest_version_id": manifest_version_id,
            "files_count": len(files),
            "bytes_archived": total,
            "archived_outputs": outputs,
            "archive_revision": PLUS_ONE,
            "last_error": None,
            "next_attempt_at": None,
            **values,
        }
        detail: dict[str, Any] = {
            "manifest_key": manifest_key,
            "files": [{"key": f.key, "size": f.size, "sha256": f.sha256} for f in files],
            "bytes": total,
        }
        if manifest_etag is not None or manifest_version_id is not None:
            detail |= {"manifest_etag": manifest_etag, "manifest_version_id": manifest_version_id}
        return self._transition(row, event, owner=owner, now=now, values=values, detail=detail)

    def reopen(
        self, row: JobRow, missing: Sequence[str], reason: str, *, owner: str, now: datetime
    ) -> JobRow:
        missing = list(missing)
        values = {
            "manifest_key": None,
            "manifest_etag": None,
            "manifest_version_id": None,
            "archive_revision": row.archive_revision - 1 if missing else row.archive_revision,
        }
        detail = {"reason": reason, "missing": missing, "manifest_key": row.manifest_key}
        changed = self._transition(
            row, Event.REOPEN, owner=owner, now=now, values=values, detail=detail
        )
        for key in missing:
            self.t.files.get(row.pk, {}).pop(key, None)
        return changed

    def open_delete_gate(
        self, row: JobRow, *, owner: str, now: datetime, budget: str | None = None
    ) -> JobRow:
        requested = row.delete_requested_at if row.state == JobState.DELETING else None
        current = self.t.rows.get(row.pk)
        guard = current is not None and current.manifest_key is not None and not current.held
        if guard and budget is not None and self._fenced(current, Event.OPEN_GATE, owner):
            used, most = self.t.budgets.get(budget, [0, 0])
            if used >= most:
                raise BrakeEngaged(
                    "max_deletes_per_sweep reached: this sweep started as many deletes as it "
                    "may; the job stays archived and the next sweep deletes it",
                    provider=row.provider,
                    job_id=row.job_id,
                )
            self.t.budgets[budget][0] += 1
        return self._transition(
            row,
            Event.OPEN_GATE,
            owner=owner,
            now=now,
            values={"delete_requested_at": requested or now},
            detail={"manifest_key": row.manifest_key, "resend": row.state == JobState.DELETING},
            guard=guard,
            refusal="the delete gate stayed shut: the job is not archived with a manifest, "
            "is held, or is claimed by another worker",
        )

    def record_delete_pending(
        self, row: JobRow, handle: str, answer: Any, *, owner: str, now: datetime
    ) -> JobRow:
        values = {"delete_handle": handle, "delete_answer": answer}
        return self._transition(
            row,
            Event.DELETE_PENDING,
            owner=owner,
            now=now,
            values=values,
            detail={"handle": handle},
        )

    def forget_delete_handle(
        self, row: JobRow, reason: str, *, owner: str, now: datetime
    ) -> JobRow:
        values = {"delete_handle": None, "delete_requested_at": None}
        detail = {"handle": row.delete_handle, "reason": reason}
        return self._transition(
            row, Event.DROP_HANDLE, owner=owner, now=now, values=values, detail=detail
        )

    def record_provider_deleted(
        self, row: JobRow, answer: Any, *, owner: str, now: datetime
    ) -> JobRow:
        values = {"delete_answer": answer, "provider_deleted_at": now, "kept_reason": None}
        return self._transition(
            row,
            Event.PROVIDER_DELETED,
            owner=owner,
            now=now,
            values=values,
            detail={"answer": answer},
        )

    def mark_deleted(self, row: JobRow, *, receipt_key: str, owner: str, now: datetime) -> JobRow:
        values = {
            "receipt_key": receipt_key,
            "deleted_at": now,
            "last_error": None,
            "next_attempt_at": None,
        }
        return self._transition(
            row,
            Event.FINISH,
            owner=owner,
            now=now,
            values=values,
            detail={"receipt_key": receipt_key},
        )

    def audit_event(
        self, row: JobRow, event: str, detail: dict[str, Any], *, owner: str, now: datetime
    ) -> None:
        self._audit(row, event, detail, actor=owner, now=now)

    def defer(
        self, row: JobRow, error: str, *, owner: str, now: datetime, retry_at: datetime
    ) -> JobRow:
        values = {
            "attempts": PLUS_ONE,
            "last_error": error[:4000],
            "next_attempt_at": retry_at,
        }
        return self._transition(row, Event.DEFER, owner=owner, now=now, values=values)

    def fail(self, row: JobRow, error: str, *, owner: str, now: datetime) -> JobRow:
        values = {"attempts": PLUS_ONE, "last_error": error[:4000]}
        return self._transition(
            row, Event.FAIL, owner=owner, now=now, values=values, detail={"error": error[:4000]}
        )

    # -- arranging --------------------------------------------------------------------------

    def add(
        self, provider: str, job_id: str, *, now: datetime, tracked: bool = False, **values: Any
    ) -> int:
        """Record a job the ledger has not seen, as ``claim`` (or ``track``) first does;
        ``values`` set its columns as a test arranges them."""
        pk = next(self.t.ids)
        row = job_row(first_seen_at=now, pk=pk, provider=provider, job_id=job_id, tracked=tracked)
        self.t.keys[(provider, job_id)] = pk
        self._put(dataclasses.replace(row, **values))
        return pk

    def set(self, provider: str, job_id: str, **values: Any) -> JobRow:
        """Change a job's columns as a person or an earlier version would have."""
        return self._put(
            dataclasses.replace(self.t.rows[self.t.keys[(provider, job_id)]], **values)
        )

    # -- inside -----------------------------------------------------------------------------

    def _put(self, row: JobRow) -> JobRow:
        self.t.rows[row.pk] = row
        return row

    @staticmethod
    def _fenced(current: JobRow | None, event: Event, owner: str | None) -> bool:
        if current is None or current.state not in LIFECYCLE[event].sources:
            return False
        return owner is None or current.lease_owner == owner

    def _transition(
        self,
        row: JobRow,
        event: Event,
        *,
        owner: str | None,
        now: datetime,
        values: Mapping[str, Any],
        detail: dict[str, Any] | None = None,
        guard: bool = True,
        refusal: str = _REFUSED,
    ) -> JobRow:
        """``writes.transition``: the row in one of the event's source states, meeting its
        guard and still claimed by ``owner``; else LedgerError and nothing changed."""
        current = self.t.rows.get(row.pk)
        if current is None or not guard or not self._fenced(current, event, owner):
            raise LedgerError(
                refusal, provider=row.provider, job_id=row.job_id, hint="Nothing was changed"
            )
        sets = {k: v for k, v in values.items() if k in _ROW_FIELDS}
        for name, value in sets.items():
            if value is PLUS_ONE:
                sets[name] = getattr(current, name) + 1
            elif name in _JSON_FIELDS:
                sets[name] = _as_json(value)
        target = LIFECYCLE[event].target
        if target is not None:
            sets["state"] = target
            if target not in OPEN_STATES:
                sets["lease_owner"] = None
                sets["lease_expires_at"] = None
        changed = self._put(dataclasses.replace(current, **sets))
        audited = AUDIT_NAMES.get(event)
        if audited is not None:
            self._audit(row, audited, detail, actor=owner or actor_name(), now=now)
        return changed

    def _audit(
        self, row: JobRow, event: str, detail: dict[str, Any] | None, *, actor: str, now: datetime
    ) -> None:
        self.t.audit.append(
            {
                "id": len(self.t.audit) + 1,
                "at": now,
                "provider": row.provider,
                "job_id": row.job_id,
                "event": event,
                "actor": actor,
                "detail": _as_json(detail or {}),
            }
        )


class FakeJobReads(JobReads):
    def __init__(self, tables: _Tables) -> None:
        self.t = tables

    def get(self, provider: str, job_id: str) -> JobRow | None:
        pk = self.t.keys.get((provider, job_id))
        return None if pk is None else self.t.rows[pk]

    def files(self, pk: int) -> dict[str, FileRecord]:
        return dict(self.t.files.get(pk, {}))

    def audit_trail(self, provider: str, job_id: str) -> list[dict[str, Any]]:
        return [
            dict(e) for e in self.t.audit if e["provider"] == provider and e["job_id"] == job_id
        ]


class FakeLedger(JobLedger):
    """The ledger's jobs, files and audit trail, in memory."""

    def __init__(self) -> None:
        self.tables = _Tables()
        self._jobs = FakeJobOperations(self.tables)
        self._query = FakeJobReads(self.tables)

    @property
    def jobs(self) -> FakeJobOperations:
        return self._jobs

    @property
    def query(self) -> FakeJobReads:
        return self._query

    def budget(self, name: str, max_deletes: int) -> str:
        """A sweep's delete budget (``coord`` in the real ledger)."""
        self.tables.budgets[name] = [0, max_deletes]
        return name

    def close(self) -> None:
        return


# -- the provider ----------------------------------------------------------------------------


@dataclass
class FakeJob:
    job_id: str
    status: str
    phase: Phase
    files: dict[str, bytes] = field(default_factory=dict)
    finished_at: datetime | None = None
    # Set: ``artifacts`` keeps the job, for this reason (an output it does not recognise).
    kept: str | None = None


class FakeProvider(Provider):
    """A provider account in memory: jobs with files, read fresh each time.

    ``fail(method, error)`` queues an error for the next call of a method; ``async_polls``
    makes deletes asynchronous (``DeletePending``, then ``Deleted`` after that many polls);
    ``on_delete`` is called with each job id before its delete is carried out, so a test can
    check what must hold by then.
    """

    type: ClassVar[str] = "fake"
    lists_jobs: ClassVar[bool] = True
    lookup_batch_size: ClassVar[int] = 0

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.jobs: dict[str, FakeJob] = {}
        self.deleted: list[str] = []
        self.delete_requests: list[str] = []
        self.reads: list[str] = []
        self.async_polls = 0
        self.on_delete: Callable[[str], None] | None = None
        self._polls: dict[str, int] = {}
        self._faults: dict[str, list[WorkerError]] = defaultdict(list)

    # -- arranging --------------------------------------------------------------------------

    def add_job(
        self,
        status: str = "finished",
        *,
        files: Mapping[str, bytes] | None = None,
        job_id: str | None = None,
        finished_at: datetime | None = None,
        kept: str | None = None,
    ) -> str:
        job_id = job_id or str(uuid.uuid4())
        files = {"out.txt": b"output\n"} if files is None else files
        self.jobs[job_id] = FakeJob(
            job_id, status, _PHASES.get(status, Phase.UNKNOWN), dict(files), finished_at, kept
        )
        return job_id

    def fail(self, method: str, error: WorkerError, *, times: int = 1) -> None:
        """Raise ``error`` from the next ``times`` calls of ``method``."""
        self._faults[method].extend([error] * times)

    def deletes_of(self, job_id: str) -> int:
        return self.delete_requests.count(job_id)

    # -- the port ---------------------------------------------------------------------------

    def list_jobs(self) -> Iterator[list[ListedJob]]:
        self._fault("list_jobs")
        yield [ListedJob(j.job_id, j.status, j.phase, j.finished_at) for j in self.jobs.values()]

    def get_job(self, job_id: str) -> JobSnapshot | JobGone:
        self._fault("get_job")
        self.reads.append(job_id)
        job = self.jobs.get(job_id)
        if job is None:
            return JobGone(job_id, {"error": "not-found"})
        return JobSnapshot(job_id, job.status, job.phase, job.finished_at, _record(job))

    def lookup(self, job_ids: list[str]) -> list[ListedJob]:
        return []

    def artifacts(self, snapshot: JobSnapshot) -> list[Artifact]:
        self._fault("artifacts")
        job = self.jobs.get(snapshot.job_id)
        if job is None:
            return []
        if job.kept is not None:
            raise Kept(
                f"the job names outputs the worker does not recognise ({job.kept}): nothing "
                "deleted",
                reason="unrecognised_output",
            )
        return [
            Artifact(
                name,
                source=f"fake://{self.name}/{job.job_id}/{name}",
                origin=ProviderOrigin(f"/jobs/{job.job_id}/files/{name}"),
                size=len(body),
            )
            for name, body in job.files.items()
        ]

    @contextlib.contextmanager
    def open_artifact(self, artifact: Artifact) -> Iterator[httpx.Response]:
        self._fault("open_artifact")
        assert isinstance(artifact.origin, ProviderOrigin)
        _, _, job_id, _, name = artifact.origin.path.split("/", 4)
        job = self.jobs.get(job_id)
        url = f"http://{self.name}.fake.invalid{artifact.origin.path}"
        if job is None or name not in job.files:
            yield httpx.Response(404, request=httpx.Request("GET", url))
            return
        body = job.files[name]
        # Streamed, as a real response is: the pipeline reads it in chunks as it stores it.
        yield httpx.Response(
            200,
            headers={"Content-Length": str(len(body))},
            stream=httpx.ByteStream(body),
            request=httpx.Request("GET", url),
        )

    def delete(self, job_id: str) -> DeleteAnswer:
        self.delete_requests.append(job_id)
        if self.on_delete is not None:
            self.on_delete(job_id)
        self._fault("delete")
        if job_id not in self.jobs:
            return AlreadyGone(404, {"error": "not-found"})
        if self.async_polls:
            self._polls[job_id] = self.async_polls
            return DeletePending(f"handle-{job_id}", 202, {"status": "queued"})
        return self._carry_out(job_id)

    def poll_delete(self, job_id: str, handle: str) -> DeleteAnswer:
        self._fault("poll_delete")
        left = self._polls.get(job_id, 0)
        if left > 1:
            self._polls[job_id] = left - 1
            return DeletePending(handle, 202, {"status": "running"})
        self._polls.pop(job_id, None)
        if job_id not in self.jobs:
            return AlreadyGone(404, {"error": "not-found"})
        return self._carry_out(job_id)

    def check_credentials(self) -> None:
        self._fault("check_credentials")

    def close(self) -> None:
        return

    # -- inside -----------------------------------------------------------------------------

    def _fault(self, method: str) -> None:
        queued = self._faults[method]
        if queued:
            raise queued.pop(0)

    def _carry_out(self, job_id: str) -> Deleted:
        del self.jobs[job_id]
        self.deleted.append(job_id)
        return Deleted(200, {"id": job_id, "deleted": True})


_PHASES = {
    "submitted": Phase.RUNNING,
    "running": Phase.RUNNING,
    "finished": Phase.SUCCEEDED,
    "error": Phase.FAILED,
}


def _record(job: FakeJob) -> dict[str, Any]:
    return {"id": job.job_id, "status": job.status, "files": sorted(job.files)}


# -- a runtime of fakes ------------------------------------------------------------------------


class NoOwnBuckets(SourceBucket):
    """The user's own buckets, where the fake runtime has none: its provider hands out no
    bucket origins, and anything that reaches for one fails the test. Outputs in the
    user's buckets and their cleanup are proven on moto (tests/e2e)."""

    def __init__(self) -> None:
        self.same_endpoint = True

    def head(self, bucket: str, key: str) -> SourceObject:
        raise AssertionError(f"the fake runtime has no bucket of the user's own ({bucket})")

    def open(self, bucket: str, key: str) -> Any:
        raise AssertionError(f"the fake runtime has no bucket of the user's own ({bucket})")

    def remove(self, bucket: str, key: str, *, etag: str | None, version_id: str | None) -> Any:
        raise AssertionError(f"the fake runtime has no bucket of the user's own ({bucket})")


@dataclass
class Fakes:
    """A runtime whose archive, ledger and provider are the fakes, and the fakes themselves."""

    rt: Runtime
    provider: FakeProvider
    archive: FakeArchive
    ledger: FakeLedger
    clock: list[datetime]

    def advance(self, delta: timedelta) -> None:
        """Move the runtime's clock on."""
        self.clock[0] += delta


def fake_runtime(
    provider: FakeProvider | None = None,
    *,
    now: datetime | None = None,
    same: Fakes | None = None,
    **policy: Any,
) -> Fakes:
    """A ``Runtime`` over the fakes, for ``process_job``: ``policy`` goes in the provider's
    ``[providers.NAME]`` table (``retain_days``, ``read_only``...). With ``same``, over the
    same provider, archive, ledger and clock (a later run under another configuration).

    The runtime's fields are typed by the real classes; the fakes stand in for them through
    their ports, which is all a job reaches (mypy holds both sides to the ports).
    """
    if same is not None:
        provider, archive, ledger, clock = same.provider, same.archive, same.ledger, same.clock
    else:
        provider = provider or FakeProvider()
        archive, ledger = FakeArchive(), FakeLedger()
        clock = [now or datetime.now(UTC)]
    data = config_data(
        bucket="fake-archive",
        endpoint_url="http://s3.fake.invalid",
        ledger_url="sqlite://",
        providers={
            provider.name: {
                "type": "daily",
                "base_url": "http://provider.fake.invalid/v1",
                "api_key": "fake-key",
                **policy,
            }
        },
    )
    settings = settings_of(data)
    rt = Runtime(
        settings=settings,
        ledger=cast(Ledger, ledger),
        archive=cast(Archive, archive),
        fetcher=Fetcher(make_download_client(settings.downloads), settings.downloads),
        providers={provider.name: provider},
        source_buckets={provider.name: NoOwnBuckets()},
        clock=lambda: clock[0],
    )
    return Fakes(rt, provider, archive, ledger, clock)


def _conforms(archive: Archive, ledger: Ledger) -> None:
    """Never called: mypy checks here that the real classes are what the ports say."""
    _archive: ArchiveStore = archive
    _ledger: JobLedger = ledger
    del _archive, _ledger


__all__ = [
    "FakeArchive",
    "FakeJob",
    "FakeLedger",
    "FakeProvider",
    "Fakes",
    "fake_runtime",
]
