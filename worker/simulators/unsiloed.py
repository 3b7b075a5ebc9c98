"""A simulator of Unsiloed's vision API jobs (shared/providers.md section 4).

Faithful where the docs are clear, configurable where they are not:

* ``X-API-Key: <key>`` on every jobs endpoint; ``Authorization: Bearer <key>`` (the FAQ's
  form) is accepted too unless ``accept_bearer`` is off [I]. A missing or wrong key answers
  ``auth_failure_status`` (401 by default [?]);
* no list endpoint: the docs say it is "not currently implemented";
* ``GET /jobs/{id}``: ``{id, status, type, created_at, updated_at, pdf_name, pdf_hash,
  user_id}`` plus ``error`` when failed. The docs disagree on casing, so ``status_case``
  chooses: ``lower`` (newer pages), ``upper``, ``status-page`` (``queued`` then
  ``PROCESSING``/``COMPLETED``/``FAILED``) or ``as-given``;
* ``GET /jobs/{id}/result``: the result when ``completed`` or ``review`` (the newer page says
  both are populated). Its ``file_url`` is a freshly signed link on every read, like
  Unsiloed's presigned S3 URL. What it answers before then is undocumented [?]:
  ``result_not_ready_status`` (400 by default, with an error body; 200 serves the envelope
  with ``"result": null``). Every body served is kept in ``results_served``;
* ``DELETE /jobs/{id}``: 200 ``{"message": "Job <id> deleted"}``, then 404. Keys in
  ``other_keys`` belong to teammates: they can read every job but only its creator may
  delete it (403 [I]). Whether a running job can be deleted is undocumented [?]:
  ``delete_while_running``;
* errors are ``{"detail": "..."}``, ``{"error": "..."}`` or ``{"message": "..."}`` as
  ``error_shape`` says [?]; 429 (with ``rate_limit_headers``, none by default [?]) and 5xx on
  demand through ``inject`` or ``rate_limit``;
* ``pdf_hash`` is ``sha256:<hex>`` of the document, the documented shape. For a ``Blob``
  document the digest is a stand-in unless ``hash_blobs`` is on (hashing gigabytes takes
  time); ``add_job(pdf_hash=...)`` serves any other value (a bare digest, another
  algorithm, a wrong digest) or none;
* a path Unsiloed does not serve answers FastAPI's ``{"detail": "Not Found"}``, or a bare
  404 (HTML or an empty body, as a gateway or a wrong base URL would give) as
  ``unknown_route`` says. A bare 404 on a real route comes from ``inject``.

Source documents are served under ``/files/`` on the same port, like S3, and need no
credentials; every signature handed out is kept in ``issued_signatures``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from worker.simulators.blobs import Blob, Content
from worker.simulators.files import SignedFiles
from worker.simulators.http import Request, Response, SimServer, route

StatusCase = Literal["lower", "upper", "status-page", "as-given"]
ErrorShape = Literal["detail", "error", "message"]
UnknownRoute = Literal["api", "html", "empty"]


class _Default(enum.Enum):
    TOKEN = 0


DEFAULT = _Default.TOKEN
# In a result given as bytes, this stands for the freshly signed file_url (inside quotes).
FILE_URL = b"{{file_url}}"
RESULT_READY = frozenset({"completed", "review"})
RUNNING = frozenset({"queued", "processing"})


@dataclass
class SimJob:
    id: str
    status: str
    owner: str  # the API key that created it
    type: str
    created_at: str
    updated_at: str
    file_name: str | None
    pdf_name: str | None
    result: dict[str, Any] | bytes | None
    document: Content | None
    error: str | None
    # What the record's pdf_hash says; None leaves it out.
    pdf_hash: str | None = None


def iso(moment: datetime) -> str:
    """Unsiloed's timestamps: milliseconds and a ``Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class UnsiloedSimulator(SimServer):
    credential_headers: ClassVar[tuple[str, ...]] = ("x-api-key", "authorization")

    def __init__(
        self,
        api_key: str,
        *,
        other_keys: tuple[str, ...] = (),
        status_case: StatusCase = "lower",
        error_shape: ErrorShape = "detail",
        accept_bearer: bool = True,
        auth_failure_status: int = 401,
        result_not_ready_status: int = 400,
        delete_while_running: bool = True,
        rate_limit_headers: dict[str, str] | None = None,
        link_ttl: float = 3600.0,
        hash_blobs: bool = False,
        unknown_route: UnknownRoute = "api",
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.keys = (api_key, *other_keys)
        self.status_case: StatusCase = status_case
        self.error_shape: ErrorShape = error_shape
        self.accept_bearer = accept_bearer
        self.auth_failure_status = auth_failure_status
        self.result_not_ready_status = result_not_ready_status
        self.delete_while_running = delete_while_running
        self.rate_limit_headers = dict(rate_limit_headers or {})
        self.hash_blobs = hash_blobs
        self.unknown_route: UnknownRoute = unknown_route
        self.jobs: dict[str, SimJob] = {}
        self.deleted: list[str] = []
        # (job id, body) of every /result answer, so tests can compare what was stored.
        self.results_served: list[tuple[str, bytes]] = []
        # Every signature handed out, so tests can check none of them reaches a log.
        # Source documents behind signed links.
        self.files = SignedFiles(lambda: self.origin, ttl=link_ttl, content_type="application/pdf")
        self._state = threading.RLock()

    @property
    def base_url(self) -> str:
        return self.origin

    def provider_table(self, **extra: Any) -> dict[str, Any]:
        """This account's ``[providers.NAME]`` table: type, base URL and credentials, plus
        ``extra`` keys (the registry every configuration of a simulated account reads)."""
        return {"type": "unsiloed", "base_url": self.base_url, "api_key": self.api_key, **extra}

    # -- arranging state -------------------------------------------------------------------

    def add_job(
        self,
        status: str = "completed",
        *,
        result: dict[str, Any] | bytes | None = None,
        document: Content | None = None,
        file_name: str | None = "document.pdf",
        pdf_name: str | None = None,
        updated_at: datetime | str | None = None,
        created_at: datetime | str | None = None,
        job_type: str = "extraction",
        error: str | None = None,
        owner: str | None = None,
        job_id: str | None = None,
        pdf_hash: str | _Default | None = DEFAULT,
    ) -> str:
        """Add a job. ``result`` as a dict is wrapped in Unsiloed's result envelope; as bytes
        it is served verbatim, with ``{{file_url}}`` replaced by a fresh signed link.
        ``pdf_hash`` defaults to ``sha256:<hex>`` of ``document`` (none without one)."""
        job_id = job_id or str(uuid.uuid4())
        now = datetime.now(UTC)
        stamp = {
            name: value if isinstance(value, str) else iso(value or now)
            for name, value in (("created", created_at), ("updated", updated_at))
        }
        if error is None and status.lower() == "failed":
            error = "Processing failed: the document could not be parsed"
        if isinstance(pdf_hash, _Default):
            pdf_hash = None if document is None else "sha256:" + self._digest(document)
        job = SimJob(
            id=job_id,
            status=status,
            owner=owner or self.api_key,
            type=job_type,
            created_at=stamp["created"],
            updated_at=stamp["updated"],
            file_name=file_name,
            pdf_name=pdf_name if pdf_name is not None else file_name,
            result=result,
            document=document,
            error=error,
            pdf_hash=pdf_hash,
        )
        with self._state:
            self.jobs[job_id] = job
            if document is not None:
                self.files.put(self._file_key(job), document)
        return job_id

    def set_status(self, job_id: str, status: str, *, updated_at: datetime | None = None) -> None:
        with self._state:
            job = self.jobs[job_id]
            job.status = status
            job.updated_at = iso(updated_at or datetime.now(UTC))

    def deletes_of(self, job_id: str) -> int:
        return len(self.seen("DELETE", f"^/jobs/{job_id}$"))

    # -- rendering -------------------------------------------------------------------------

    def _error(self, status: int, message: str) -> Response:
        return Response.json({self.error_shape: message}, status=status)

    def rate_limit_response(self) -> Response:
        return Response.json(
            {self.error_shape: "Rate limit exceeded"}, 429, dict(self.rate_limit_headers)
        )

    def not_found(self, request: Request) -> Response:
        if self.unknown_route == "html":
            page = b"<html><body><h1>404 Not Found</h1></body></html>"
            return Response(404, page, {"Content-Type": "text/html"})
        if self.unknown_route == "empty":
            return Response(404, b"")
        return self._error(404, "Not Found")

    def _digest(self, content: Content) -> str:
        if isinstance(content, Blob) and not self.hash_blobs:
            # A stand-in: hashing a multi-gigabyte blob costs seconds per job.
            return hashlib.sha256(f"blob:{content.size}:{content.seed}".encode()).hexdigest()
        if isinstance(content, Blob):
            return content.sha256()
        return hashlib.sha256(content).hexdigest()

    def _served_status(self, status: str) -> str:
        if self.status_case == "lower":
            return status.lower()
        if self.status_case == "upper":
            return status.upper()
        if self.status_case == "status-page":
            return status.lower() if status.lower() == "queued" else status.upper()
        return status

    def _user_id(self, key: str) -> str:
        return f"user_{self.keys.index(key) + 1}" if key in self.keys else "user_unknown"

    def _job_json(self, job: SimJob) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": job.id,
            "status": self._served_status(job.status),
            "type": job.type,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "user_id": self._user_id(job.owner),
        }
        if job.pdf_name is not None:
            record["pdf_name"] = job.pdf_name
        if job.pdf_hash is not None:
            record["pdf_hash"] = job.pdf_hash
        if job.error is not None and job.status.lower() == "failed":
            record["error"] = job.error
        return record

    def _result_body(self, job: SimJob) -> bytes:
        link = self.files.sign(self._file_key(job)) if job.document is not None else None
        if isinstance(job.result, bytes):
            return job.result.replace(FILE_URL, (link or "").encode())
        envelope: dict[str, Any] = {
            "job_id": job.id,
            "status": self._served_status(job.status),
            "created_at": job.created_at,
            "updated_at": job.updated_at,
        }
        if job.file_name is not None:
            envelope["file_name"] = job.file_name
        if link is not None:
            envelope["file_url"] = link
        envelope["metadata"] = {"page_count": 1, "order": "page", "schema": None}
        envelope["result"] = job.result
        return json.dumps(envelope).encode()

    # -- the API ---------------------------------------------------------------------------

    def _caller(self, request: Request) -> str | Response:
        """The known key a request carries, or the answer refusing it."""
        key = request.header("x-api-key")
        bearer = request.header("authorization") or ""
        if key is None and self.accept_bearer and bearer[:7].lower() == "bearer ":
            key = bearer[7:].strip()
        if not key:
            return self._error(self.auth_failure_status, "API key is required")
        for known in self.keys:
            if hmac.compare_digest(key.encode(), known.encode()):
                return known
        return self._error(self.auth_failure_status, "Invalid API key")

    @route("GET", "/jobs/(?P<job_id>[^/]+)")
    def get_job(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        with self._state:
            job = self.jobs.get(request.params["job_id"])
            if job is None:
                return self._error(404, "Job not found")
            return Response.json(self._job_json(job))

    @route("GET", "/jobs/(?P<job_id>[^/]+)/result")
    def get_result(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        with self._state:
            job = self.jobs.get(request.params["job_id"])
            if job is None:
                return self._error(404, "Job not found")
            status = job.status.lower()
            if status not in RESULT_READY and self.result_not_ready_status != 200:
                reason = f": {job.error}" if status == "failed" and job.error else ""
                return self._error(
                    self.result_not_ready_status,
                    f"Job {job.id} is {status}{reason}; results are available once it is completed",
                )
            body = self._result_body(job)
            self.results_served.append((job.id, body))
        return Response(200, body, {"Content-Type": "application/json"})

    @route("DELETE", "/jobs/(?P<job_id>[^/]+)")
    def delete_job(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        with self._state:
            job = self.jobs.get(request.params["job_id"])
            if job is None:
                return self._error(404, "Job not found")
            if job.owner != caller:
                return self._error(403, "Permission denied: only the job's creator may delete it")
            if not self.delete_while_running and job.status.lower() in RUNNING:
                return self._error(409, f"Job {job.id} is still {job.status.lower()}")
            del self.jobs[job.id]
            self.files.drop(self._file_key(job))
            self.deleted.append(job.id)
        return Response.json({"message": f"Job {job.id} deleted"})

    # -- downloads -------------------------------------------------------------------------

    def _file_key(self, job: SimJob) -> str:
        return f"uploads/{self._user_id(job.owner)}/{job.id}/{quote(job.file_name or 'file')}"

    @property
    def issued_signatures(self) -> list[str]:
        return self.files.issued_signatures

    @property
    def link_ttl(self) -> float:
        return self.files.ttl

    @link_ttl.setter
    def link_ttl(self, seconds: float) -> None:
        self.files.ttl = seconds

    @route("GET", "/files/(?P<key>.+)")
    def download(self, request: Request) -> Response:
        return self.files.serve(request, request.params["key"])
