"""Unsiloed's vision API jobs (shared/providers.md section 4; seed 003).

* Auth: ``X-API-Key: <api_key>`` on every API call. The FAQ also shows ``Authorization:
  Bearer``; every jobs page shows X-API-Key, so that is what is sent [I].
* Discovery: none. Unsiloed has no list endpoint ("not currently implemented"), so jobs come
  from ``retention track``.
* Status: ``GET /jobs/{id}``, compared case-insensitively because the docs disagree
  (``PROCESSING``/``COMPLETED``/``FAILED`` on the status page, lower case on newer pages).
  ``completed`` and ``failed`` are terminal; ``queued``, ``processing`` and ``review`` are
  not (a job in review may still change, so it is left alone); any other word is unknown and
  never terminal. The retention clock starts at ``updated_at``; an unparseable or zoneless
  one leaves the worker's own first sighting in charge. A 404 means the job is gone.
* Outputs of a completed job: ``result.json``, the exact bytes of ``GET /jobs/{id}/result``
  fetched with the API key at archive time and stored byte for byte as Unsiloed returned
  them, including the presigned ``file_url`` inside (it expires about an hour after the
  read, so the archived copy holds a dead link, not a usable credential); and, when
  ``file_url`` is present, the source document it points to, as ``source/<file_name>``.
* The result is read once in ``artifacts`` to learn ``file_url`` and the names, under
  ``max_result_mib`` (64 MiB by default): reading stops at the cap and a larger answer is
  refused (permanently, naming the setting to raise). ``HttpApi`` reads the body into one
  buffer, parses it and lets the bytes go; the adapter keeps the parsed answer only for the
  walk over it. The parsed JSON is what costs memory (Python objects: up to 50 times the
  bytes, for a body of tiny containers), so the parse has a cap of its own, ``max_parse_mib``
  (256 MiB by default), counted on the raw bytes before anything is parsed
  (``parsing.parse_cost``): a result that could take more is a ``BadResponse`` naming the
  setting and how far to raise it, and the job stays at Unsiloed. Reading a result thus
  takes at most ``max_result_mib`` + ``max_parse_mib``. A result of small objects (OCR boxes)
  counts 13 (indented) to 30 (compact) times its size, so the default takes one of 9 MiB or
  more; a result of long texts counts about 3 times.
* The source document's ``Artifact.sha256`` comes from the record's ``pdf_hash`` when it is
  ``sha256:<64 hex>`` (the documented shape) or a bare 64-hex digest, lowercased; the
  pipeline checks the archived bytes against it. That ``pdf_hash`` is the digest of the very
  bytes ``file_url`` serves is an inference [I]: if it is not, the check fails and the job is
  kept, the safe direction. Every other form (another algorithm, a truncated digest, not a
  string) leaves ``sha256`` None: nothing is checked beyond the download's own size.
* What the delete destroys: "the job and all associated data including results" [V U-del]:
  the result and the source document. The whole-record walk (``providers/outputs.py``) over
  both answers, as ``job.*`` and ``result_json.*``: the documented fields of the job record
  (``id``, ``status``, ``type``, timestamps, ``pdf_name``, ``pdf_hash``, ``user_id``,
  ``error``) and of the result (``job_id``, ``status``, ``file_name``, timestamps,
  ``metadata.page_count`` and ``order``) name no data of their own; ``result`` and ``data``
  (the extracted values, shaped by the user's schema, archived inside result.json) and
  ``metadata.schema`` are content [I]; all are declared in ``INERT``. ``file_url`` maps to
  the source document. Every other reference in either answer (the older shape's
  ``visualization_paths``, a future ``*_url``, an ``s3_key``) is unrecognised and keeps the
  job (``Kept(reason="unrecognised_output")``) unless its top-level key is in
  ``ignore_outputs``.
* A completed job whose result gives no ``file_url`` (the older result shape has none, and
  a newer one may leave it out or null) would lose its source document to the delete, with
  nothing to fetch it from: it is kept (``Kept(reason="no_source")``). ``ignore_outputs =
  ["file_url"]`` accepts losing source documents: such a job is then deleted with
  result.json archived, and a linked source document is not archived either.
* A failed job has no result, and its delete removes the source document, which the worker
  cannot fetch: by default such a job is kept (``Kept(reason="failed_job")``). With
  ``delete_failed_jobs = true`` it is deleted with only its record archived, in the manifest.
* Delete: ``DELETE /jobs/{id}`` answers 200 ``{"message": ...}``; 403 means the key is not
  the job's creator [I], the only one allowed to delete it.
* "Gone" needs Unsiloed's own words: a 404 whose JSON body has Unsiloed's error shape. That
  shape is undocumented [?]; ``{"detail": ...}`` (FastAPI's), ``{"error": ...}`` and
  ``{"message": ...}`` count. On ``GET`` that is enough; a ``DELETE`` answered so is
  confirmed by a ``GET`` that answers the same. A bare 404 (HTML, an empty body, JSON of
  another shape: a gateway or a wrong ``base_url``) is ``BadResponse``: the job stays.
* Errors: the same three shapes are read for messages. What the API answers for ``/result``
  before completion is undocumented too [?]; the adapter never asks before ``completed``.
* Rate limits: 100 requests a minute on standard plans. Whether a 429 carries Retry-After is
  undocumented [?]; without it ``HttpApi`` backs off exponentially.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from urllib.parse import quote

import httpx

from worker.domain import (
    AlreadyGone,
    Artifact,
    DeleteAnswer,
    Deleted,
    JobGone,
    JobSnapshot,
    LinkOrigin,
    Phase,
    ProviderOrigin,
)
from worker.errors import BadResponse, Kept, ProviderError, ProviderRejected, WorkerError
from worker.json_types import JSONValue
from worker.keys import strip_query
from worker.providers.base import ApiOptions, BaseProvider, ErrorDetail, need
from worker.providers.outputs import Path, unclaimed, unrecognised
from worker.redact import Redactor
from worker.specs.unsiloed import SPEC, UnsiloedSettings

STATUSES = {
    "queued": Phase.RUNNING,
    "processing": Phase.RUNNING,
    "review": Phase.RUNNING,
    "completed": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
}
MIB = 1024 * 1024
# The fields of Unsiloed's error bodies (undocumented [?]).
ERROR_FIELDS = ("detail", "error", "message")
FILE_URL: Path = ("file_url",)
# Messages name a reference by the answer that holds it: `job.x` or `result_json.x`.
ANSWERS: tuple[Path, ...] = (("job",), ("result_json",))
# The fields of the job record and the result that name no data the delete destroys
# (specs/unsiloed.py).
INERT = SPEC.inert
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# A provider's error text is shown to people; a page of HTML or a stack trace is not useful.
MAX_DETAIL_CHARS = 300
# No job has this id; reading it is the cheapest request that needs the key [I].
PROBE_JOB_ID = "00000000-0000-0000-0000-000000000000"
RESULT_NAME = "result.json"
# Scrubs anything shaped like a credential (signed query strings, bearer tokens).
_PLAIN = Redactor()


def shown(value: JSONValue) -> str:
    """A provider's value, fit for an error message: short and without signed URLs."""
    return _PLAIN.scrub(repr(value))[:80]


def phase_of(status: JSONValue) -> Phase:
    return STATUSES.get(status.lower(), Phase.UNKNOWN) if isinstance(status, str) else Phase.UNKNOWN


def parse_time(value: JSONValue) -> datetime | None:
    """An ISO-8601 timestamp with a zone (``...Z``), or None when it is anything else.

    A timestamp without a zone could be any local time; the worker's own sighting is the
    safer clock then.
    """
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def error_detail_for(api_key: str) -> ErrorDetail:
    """Read ``detail`` or ``error`` from an error body, never echoing the key or a signed URL."""
    redactor = Redactor([api_key])

    def detail(status: int, data: JSONValue) -> str | None:
        if not isinstance(data, dict):
            return None
        for field in ("detail", "error", "message"):
            value = data.get(field)
            if isinstance(value, str) and value:
                return redactor.scrub(value)[:MAX_DETAIL_CHARS]
            # FastAPI's validation errors: [{"loc": [...], "msg": "...", "type": "..."}].
            if isinstance(value, list):
                messages = [m["msg"] for m in value if isinstance(m, dict) and "msg" in m]
                texts = [m for m in messages if isinstance(m, str)]
                if texts:
                    return redactor.scrub("; ".join(texts))[:MAX_DETAIL_CHARS]
        return None

    return detail


def is_unsiloed_error(data: JSONValue) -> bool:
    """Whether a body has one of the shapes Unsiloed's errors are read in."""
    if not isinstance(data, dict):
        return False
    return any(isinstance(data.get(f), str | list) and data.get(f) for f in ERROR_FIELDS)


def sha256_of(pdf_hash: JSONValue) -> str | None:
    """The lowercase hex digest of ``sha256:<hex>`` or a bare 64-hex digest; None otherwise."""
    if not isinstance(pdf_hash, str):
        return None
    text = pdf_hash.strip()
    if text[:7].lower() == "sha256:":
        text = text[7:]
    return text.lower() if _SHA256.fullmatch(text) else None


def failed_job() -> Kept:
    return Kept(
        "the job failed, so it has no result, and Unsiloed's delete would also remove its "
        "source document, which the worker cannot fetch: nothing deleted",
        reason="failed_job",
        hint="Set delete_failed_jobs = true for this provider to delete failed jobs anyway, "
        "with only their record archived; until then the job stays at Unsiloed",
    )


def no_source() -> Kept:
    return Kept(
        "the result gives no file_url for the job's source document, which Unsiloed's "
        "delete would also remove and the worker cannot fetch: nothing deleted",
        reason="no_source",
        hint='If you keep the source documents yourself, add "file_url" to ignore_outputs '
        "for this provider to delete such jobs with only result.json archived; until then "
        "the job stays at Unsiloed and is looked at again on a later sweep",
    )


def record_of(job_id: str, data: JSONValue) -> tuple[str, dict[str, JSONValue]]:
    """The status and record of ``GET /jobs/{id}``, or BadResponse."""
    what = f"Unsiloed's record of job {job_id}"
    status = need(data, "status", str, what=what)
    assert isinstance(data, dict)  # need() refused any other
    for field in ("id", "job_id"):
        returned = data.get(field)
        if returned is not None and returned != job_id:
            raise BadResponse(
                f"asked for job {job_id}, Unsiloed answered with job {shown(returned)}"
            )
    return status, dict(data)


@dataclass(frozen=True, slots=True)
class Source:
    """The source document a result points to."""

    name: str  # the artifact name: "source/<file_name>"
    link: str  # presigned: never logged or recorded whole


def source_of(job_id: str, result: JSONValue, record: Mapping[str, JSONValue]) -> Source | None:
    """The source document a result points to, if it has one; BadResponse for a result that
    is not Unsiloed's. Reads only ``job_id``, ``file_url``, ``file_name`` and ``pdf_name``."""
    what = f"Unsiloed's result of job {job_id}"
    if not isinstance(result, dict):
        raise BadResponse(f"{what} is not a JSON object")
    returned = result.get("job_id")
    if returned is not None and returned != job_id:
        raise BadResponse(f"asked for the result of job {job_id}, got job {shown(returned)}'s")
    link = result.get("file_url")
    if link is None or link == "":
        return None
    if not isinstance(link, str):
        raise BadResponse(f"{what} has a file_url that is not a string")
    for candidate in (result.get("file_name"), result.get("pdf_name"), record.get("pdf_name")):
        if isinstance(candidate, str) and candidate.strip("/ "):
            return Source(f"source/{candidate}", link)
    return Source("source/document", link)


def unrecognised_of(
    record: Mapping[str, JSONValue], result: JSONValue, ignored: frozenset[str] = frozenset()
) -> list[Path]:
    """References in the job record, or in the result beyond ``file_url``, that ``INERT`` does
    not declare, less the top-level keys in ``ignored``. The record's are prefixed ``job.``,
    the result's ``result_json.`` so a message says which answer holds them."""
    answers: JSONValue = {str(ANSWERS[0][0]): dict(record), str(ANSWERS[1][0]): result}
    claimed = {(*ANSWERS[1], *FILE_URL)}
    return unclaimed(answers, claimed=claimed, inert=INERT, ignored=ignored, containers=ANSWERS)


class UnsiloedProvider(BaseProvider[UnsiloedSettings]):
    type: ClassVar[str] = SPEC.type
    lists_jobs: ClassVar[bool] = SPEC.lists_jobs

    @classmethod
    def api_options(cls, settings: UnsiloedSettings) -> ApiOptions:
        key = settings.api_key.get_secret_value()
        return {
            "headers": {"X-API-Key": key, "Accept": "application/json"},
            "error_detail": error_detail_for(key),
        }

    def _path(self, job_id: str, suffix: str = "") -> str:
        return f"/jobs/{quote(job_id, safe='')}{suffix}"

    def _not_unsiloeds(self, what: str, job_id: str | None = None) -> BadResponse:
        error = BadResponse(
            f'{what} answered 404 without an Unsiloed error body ({{"detail": ...}}): the '
            "answer is not Unsiloed's",
            hint=f"Check base_url ({self.settings.base_url}); nothing is marked gone, and the "
            "job is read again on a later sweep",
        )
        if job_id is not None:
            error.for_job(self.name, job_id)
        return error

    def get_job(self, job_id: str) -> JobSnapshot | JobGone:
        what = f"reading job {job_id}"
        answer = self.api.request("GET", self._path(job_id), accept=(404,), what=what)
        if answer.status == 404:
            if not is_unsiloed_error(answer.data):
                raise self._not_unsiloeds(what, job_id)
            return JobGone(job_id=job_id, answer={"status_code": 404, "body": answer.data})
        status, record = record_of(job_id, answer.data)
        return JobSnapshot(
            job_id=job_id,
            status=status,
            phase=phase_of(status),
            finished_at=parse_time(record.get("updated_at")),
            record=record,
        )

    def artifacts(self, snapshot: JobSnapshot) -> list[Artifact]:
        ignored = frozenset(self.settings.ignore_outputs)
        if snapshot.phase == Phase.FAILED:
            if not self.settings.delete_failed_jobs:
                raise failed_job().for_job(self.name, snapshot.job_id)
            # The operator accepted losing the source: only the record, in the manifest.
            unknown = unrecognised_of(snapshot.record, None, ignored)
            if unknown:
                raise unrecognised(unknown, containers=ANSWERS).for_job(self.name, snapshot.job_id)
            return []
        if snapshot.phase != Phase.SUCCEEDED:
            # "Nothing to archive" would open the delete gate: never say it of a live job.
            raise WorkerError(
                f"asked for the outputs of a job in status {shown(snapshot.status)}, "
                "which is not terminal",
                provider=self.name,
                job_id=snapshot.job_id,
                permanent=True,
            )
        job_id = snapshot.job_id
        path = self._path(job_id, "/result")
        status, source, unknown = self._read_result(job_id, path, snapshot.record, ignored)
        if status != 200:
            # The job said completed a moment ago: most likely it was deleted or cleaned up
            # in between. The next sweep reads its status again and finds out.
            raise ProviderError(
                f"Unsiloed answered {status} for the result of a completed job",
                provider=self.name,
                job_id=job_id,
                hint="The job will be read again on a later sweep",
                permanent=False,
            )
        if unknown:
            raise unrecognised(unknown, containers=ANSWERS).for_job(self.name, job_id)
        source_accepted_lost = FILE_URL[0] in ignored
        if source is None and not source_accepted_lost:
            raise no_source().for_job(self.name, job_id)
        artifacts = [
            Artifact(
                name=RESULT_NAME,
                source=f"{self.settings.base_url}{path}",
                origin=ProviderOrigin(path=path),
            )
        ]
        if source is not None and not source_accepted_lost:
            artifacts.append(
                Artifact(
                    name=source.name,
                    source=strip_query(source.link),
                    origin=LinkOrigin(source.link),
                    sha256=sha256_of(snapshot.record.get("pdf_hash")),
                )
            )
        return artifacts

    def _read_result(
        self, job_id: str, path: str, record: Mapping[str, JSONValue], ignored: frozenset[str]
    ) -> tuple[int, Source | None, list[Path]]:
        """Read the result once, under ``max_result_mib``, for what ``artifacts`` needs: its
        status, the source document, and the references nobody claims. result.json itself is
        fetched again at archive time, so the stored bytes are exactly the ones served then.
        """
        cap = self.settings.max_result_mib * MIB
        try:
            answer = self.api.request(
                "GET",
                path,
                accept=(400, 404, 409),
                what=f"reading the result of job {job_id}",
                max_body=cap,
            )
        except BadResponse as exc:
            if f"larger than {cap} bytes" not in exc.message:
                raise
            raise ProviderError(
                f"the result is larger than max_result_mib ({self.settings.max_result_mib} "
                "MiB), so the worker did not read it: nothing deleted",
                provider=self.name,
                job_id=job_id,
                hint=f"Raise max_result_mib for provider {self.name} above the result's "
                "size (memory use grows with it), then `retention retry` the job",
                permanent=True,
            ) from None
        if answer.status != 200:
            return answer.status, None, []
        data = answer.data
        del answer  # only the parsed answer is needed, and only for the walk
        source = source_of(job_id, data, record)
        unknown = unrecognised_of(record, data, ignored)
        return 200, source, unknown

    def open_artifact(
        self, artifact: Artifact
    ) -> contextlib.AbstractContextManager[httpx.Response]:
        origin = artifact.origin
        if not isinstance(origin, ProviderOrigin) or not origin.path.startswith("/jobs/"):
            raise WorkerError(
                f"{artifact.name} is not a result served by Unsiloed's API",
                provider=self.name,
                permanent=True,
            )
        return self.api.stream("GET", origin.path, what=f"downloading {artifact.source}")

    def delete(self, job_id: str) -> DeleteAnswer:
        what = f"deleting job {job_id}"
        answer = self.api.request(
            "DELETE", self._path(job_id), ok=(200,), accept=(403, 404), what=what
        )
        if answer.status == 404:
            if not is_unsiloed_error(answer.data):
                raise self._not_unsiloeds(what, job_id)
            # Confirmed by a read: a wrong delete route answers 404 while the job is there.
            if isinstance(self.get_job(job_id), JobGone):
                return AlreadyGone(status_code=404, body=answer.data)
            raise BadResponse(
                "Unsiloed answered the delete with 404, yet still describes the job when asked",
                provider=self.name,
                job_id=job_id,
                hint=f"Check base_url ({self.settings.base_url}); the delete is sent again on "
                "a later sweep",
            )
        if answer.status == 403:
            detail = self.api.error_detail(403, answer.data) if self.api.error_detail else None
            raise ProviderRejected(
                "Unsiloed refused the delete (403"
                + (f": {detail}" if detail else "")
                + "); only the job's creator may delete it",
                provider=self.name,
                job_id=job_id,
                hint="Configure the API key of the account that created the job, or hold it",
            )
        return Deleted(status_code=answer.status, body=answer.data)

    def check_credentials(self) -> None:
        # With no list endpoint, reading a job that cannot exist is the cheapest request that
        # needs the key: Unsiloed's own 404 means the key was accepted.
        what = "checking the API key"
        answer = self.api.request("GET", self._path(PROBE_JOB_ID), accept=(404,), what=what)
        if answer.status == 404 and not is_unsiloed_error(answer.data):
            raise self._not_unsiloeds(what)
