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
  ``file_url`` is present, the source document it points to, as ``source/<file_name>``. A
  failed job has no result: only its record is archived, in the manifest.
* Delete: ``DELETE /jobs/{id}`` answers 200 ``{"message": ...}``; 404 means already gone;
  403 means the key is not the job's creator [I], the only one allowed to delete it.
* Errors: the body shape is undocumented [?]; ``{"detail": ...}`` (as FastAPI answers) and
  ``{"error": ...}`` are both read. What the API answers for ``/result`` before completion
  is undocumented too [?]; the adapter never asks before ``completed``.
* Rate limits: 100 requests a minute on standard plans. Whether a 429 carries Retry-After is
  undocumented [?]; without it ``HttpApi`` backs off exponentially.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
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
from worker.errors import BadResponse, ProviderError, ProviderRejected, WorkerError
from worker.keys import strip_query
from worker.providers.base import ApiOptions, BaseProvider, ErrorDetail, need
from worker.redact import Redactor
from worker.settings import UnsiloedSettings

STATUSES = {
    "queued": Phase.RUNNING,
    "processing": Phase.RUNNING,
    "review": Phase.RUNNING,
    "completed": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
}
# An extraction result with visualisations and citations for a long document runs to tens of
# megabytes; HttpApi's default cap is for API answers, not documents.
MAX_RESULT_BYTES = 256 * 1024 * 1024
# A provider's error text is shown to people; a page of HTML or a stack trace is not useful.
MAX_DETAIL_CHARS = 300
# No job has this id; reading it is the cheapest request that needs the key [I].
PROBE_JOB_ID = "00000000-0000-0000-0000-000000000000"
RESULT_NAME = "result.json"
# Scrubs anything shaped like a credential (signed query strings, bearer tokens).
_PLAIN = Redactor()


def shown(value: Any) -> str:
    """A provider's value, fit for an error message: short and without signed URLs."""
    return _PLAIN.scrub(repr(value))[:80]


def phase_of(status: Any) -> Phase:
    return STATUSES.get(status.lower(), Phase.UNKNOWN) if isinstance(status, str) else Phase.UNKNOWN


def parse_time(value: Any) -> datetime | None:
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

    def detail(status: int, data: Any) -> str | None:
        if not isinstance(data, Mapping):
            return None
        for field in ("detail", "error", "message"):
            value = data.get(field)
            if isinstance(value, str) and value:
                return redactor.scrub(value)[:MAX_DETAIL_CHARS]
            # FastAPI's validation errors: [{"loc": [...], "msg": "...", "type": "..."}].
            if isinstance(value, list):
                messages = [m["msg"] for m in value if isinstance(m, Mapping) and "msg" in m]
                texts = [m for m in messages if isinstance(m, str)]
                if texts:
                    return redactor.scrub("; ".join(texts))[:MAX_DETAIL_CHARS]
        return None

    return detail


def record_of(job_id: str, data: Any) -> tuple[str, dict[str, Any]]:
    """The status and record of ``GET /jobs/{id}``, or BadResponse."""
    what = f"Unsiloed's record of job {job_id}"
    status = need(data, "status", str, what=what)
    for field in ("id", "job_id"):
        returned = data.get(field)
        if returned is not None and returned != job_id:
            raise BadResponse(
                f"asked for job {job_id}, Unsiloed answered with job {shown(returned)}"
            )
    return status, dict(data)


def source_of(job_id: str, result: Any, record: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(artifact name, link)`` of the source document a result points to, if it has one."""
    what = f"Unsiloed's result of job {job_id}"
    if not isinstance(result, Mapping):
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
            return f"source/{candidate}", link
    return "source/document", link


class UnsiloedProvider(BaseProvider[UnsiloedSettings]):
    type: ClassVar[str] = "unsiloed"
    lists_jobs: ClassVar[bool] = False

    @classmethod
    def api_options(cls, settings: UnsiloedSettings) -> ApiOptions:
        key = settings.api_key.get_secret_value()
        return {
            "headers": {"X-API-Key": key, "Accept": "application/json"},
            "error_detail": error_detail_for(key),
        }

    def _path(self, job_id: str, suffix: str = "") -> str:
        return f"/jobs/{quote(job_id, safe='')}{suffix}"

    def get_job(self, job_id: str) -> JobSnapshot | JobGone:
        answer = self.api.request(
            "GET", self._path(job_id), accept=(404,), what=f"reading job {job_id}"
        )
        if answer.status == 404:
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
        if snapshot.phase == Phase.FAILED:
            # A failed job has no result; its record goes into the manifest.
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
        # Read once to learn where the source document is; result.json itself is fetched
        # again at archive time so the stored bytes are exactly the ones served then.
        answer = self.api.request(
            "GET",
            path,
            accept=(400, 404, 409),
            what=f"reading the result of job {job_id}",
            max_body=MAX_RESULT_BYTES,
        )
        if answer.status != 200:
            # The job said completed a moment ago: most likely it was deleted or cleaned up
            # in between. The next sweep reads its status again and finds out.
            raise ProviderError(
                f"Unsiloed answered {answer.status} for the result of a completed job",
                provider=self.name,
                job_id=job_id,
                hint="The job will be read again on a later sweep",
                permanent=False,
            )
        artifacts = [
            Artifact(
                name=RESULT_NAME,
                source=f"{self.settings.base_url}{path}",
                origin=ProviderOrigin(path=path),
            )
        ]
        source = source_of(job_id, answer.data, snapshot.record)
        if source is not None:
            name, link = source
            artifacts.append(Artifact(name=name, source=strip_query(link), origin=LinkOrigin(link)))
        return artifacts

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
        answer = self.api.request(
            "DELETE",
            self._path(job_id),
            ok=(200,),
            accept=(403, 404),
            what=f"deleting job {job_id}",
        )
        if answer.status == 404:
            return AlreadyGone(status_code=404, body=answer.data)
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
        # needs the key: 404 means the key was accepted.
        self.api.request(
            "GET", self._path(PROBE_JOB_ID), accept=(404,), what="checking the API key"
        )
