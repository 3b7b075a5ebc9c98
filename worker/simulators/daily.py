"""A simulator of Daily's Batch Processor API (shared/providers.md section 1).

Faithful where the docs are clear, configurable where they are not:

* ``Authorization: Bearer <key>``: missing gives 400 ``authorization-header-error``, wrong
  gives 401 ``authentication-error``;
* ``GET /v1/batch-processor``: reverse-chronological, ``limit`` (max 100, default 100),
  ``starting_after`` and ``ending_before`` cursors, ``{total_count, data:[{id, preset,
  status}]}``;
* ``GET /v1/batch-processor/:id``; ``DELETE /v1/batch-processor/:id`` answers with the job
  and removes its files from Daily's bucket, leaving files in a custom bucket;
* ``GET /v1/batch-processor/:id/access-link``: 404 for an unknown job, 400 unless
  ``finished``; links are signed and expire after ``link_ttl`` seconds. Whether Daily also
  hands out links for custom-bucket outputs is not documented; ``links_for_custom_buckets``
  chooses;
* ``POST /v1/batch-processor`` submits a job (``{"id": ...}``);
* errors are ``{"error", "info"}``; 429 and 5xx on demand through ``inject`` or
  ``rate_limit``.

Shapes the docs do not show, served on demand so adapters can be tested against them:

* output items that carry only a ``link`` (no ``s3Config``), and output sections Daily does
  not document (``add_job(linked=..., extra=...)``);
* a finished job whose ``output`` is ``{}``, null or absent (``add_job(output_as=...)``);
* a delete that answers 200 with Daily's partial-failure ``error`` ("Failed to delete
  transcriptions", ``fail_next_delete``); whether Daily then keeps the job record is [?],
  ``keeps_job`` chooses;
* what a path Daily does not serve answers (``unknown_route``): Daily's error shape by
  default, or a bare 404 (HTML or an empty body) as a gateway or a wrong base URL would give.
  A bare 404 on a real route comes from ``inject(status=404, body="<html>...")``.

Downloads are served under ``/files/`` on the same port, like a CDN, and need no
credentials; the request log records whether a download carried any.
"""

from __future__ import annotations

import hmac
import itertools
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.simulators.blobs import Content
from worker.simulators.files import SignedFiles
from worker.simulators.http import Request, Response, SimServer, route

# Writes a custom-bucket object: (bucket, key, content).
BucketWriter = Callable[[str, str, Content], None]
OutputAs = Literal["object", "null", "absent"]
UnknownRoute = Literal["daily", "html", "empty"]
PARTIAL_DELETE_ERROR = "Failed to delete transcriptions"


@dataclass
class SimOutput:
    section: str  # "transcription", "summary", "soap"...
    format: str
    key: str
    bucket: str
    region: str
    content: Content
    # False: the item carries only a signed ``link``, no s3Config (an undocumented shape).
    located: bool = True


@dataclass
class SimJob:
    id: str
    preset: str
    status: str
    seq: int
    outputs: list[SimOutput] = field(default_factory=list)
    error: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    # How an empty output is served: {}, null, or no "output" key at all.
    output_as: OutputAs = "object"


def _daily_error(kind: str, info: str, status: int) -> Response:
    return Response.json({"error": kind, "info": info}, status=status)


class DailySimulator(SimServer):
    def __init__(
        self,
        api_key: str,
        *,
        domain: str = "acme",
        daily_bucket: str = "daily-prod-batch",
        region: str = "us-west-2",
        link_ttl: float = 3600.0,
        bucket_writer: BucketWriter | None = None,
        links_for_custom_buckets: bool = False,
        unknown_route: UnknownRoute = "daily",
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.domain = domain
        self.daily_bucket = daily_bucket
        self.region = region
        self.bucket_writer = bucket_writer
        self.links_for_custom_buckets = links_for_custom_buckets
        self.unknown_route: UnknownRoute = unknown_route
        # job id -> (error, keeps_job) for its next delete.
        self.failing_deletes: dict[str, tuple[str, bool]] = {}
        self.jobs: dict[str, SimJob] = {}
        self.deleted: list[str] = []
        self._seq = itertools.count()
        # Files in Daily's bucket, behind signed links.
        self.files = SignedFiles(lambda: self.origin, ttl=link_ttl)
        self._state = threading.RLock()

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def provider_table(self, **extra: Any) -> dict[str, Any]:
        """This account's ``[providers.NAME]`` table: type, base URL and credentials, plus
        ``extra`` keys (the registry every configuration of a simulated account reads)."""
        return {"type": "daily", "base_url": self.base_url, "api_key": self.api_key, **extra}

    # -- arranging state -------------------------------------------------------------------

    def add_job(
        self,
        status: str = "finished",
        *,
        preset: str = "transcript",
        transcription: Sequence[tuple[str, Content]] = (),
        summary: tuple[str, Content] | None = None,
        extra: dict[str, tuple[str, Content]] | None = None,
        linked: Mapping[str, Sequence[tuple[str, Content]]] | None = None,
        output_as: OutputAs = "object",
        bucket: str | None = None,
        error: str | None = None,
        job_id: str | None = None,
    ) -> str:
        """Add a job. Outputs go to Daily's bucket unless ``bucket`` names a custom one.

        ``extra`` adds one-object sections with an s3Config (``soap``, or one Daily does not
        document); ``linked`` adds sections of list items that carry only a ``link`` (kept in
        Daily's bucket). ``output_as`` says how a job without outputs serves ``output``.
        """
        job_id = job_id or str(uuid.uuid4())
        target = bucket or self.daily_bucket
        outputs: list[SimOutput] = []

        def add(
            section: str, fmt: str, content: Content, index: int, *, located: bool = True
        ) -> None:
            folder = "summary" if section == "summary" else "transcript"
            listed = section == "transcription" or not located
            name = f"out-{index}.{fmt}" if listed else f"{section}.{fmt}"
            if not located:
                name = f"{section}-{name}"
            key = f"{self.domain}/{job_id}/{folder}/{name}"
            where = target if located else self.daily_bucket
            outputs.append(SimOutput(section, fmt, key, where, self.region, content, located))

        for index, (fmt, content) in enumerate(transcription):
            add("transcription", fmt, content, index)
        if summary is not None:
            add("summary", summary[0], summary[1], 0)
        for section, (fmt, content) in (extra or {}).items():
            add(section, fmt, content, 0)
        for section, items in (linked or {}).items():
            for index, (fmt, content) in enumerate(items):
                add(section, fmt, content, index, located=False)
        job = SimJob(
            job_id,
            preset,
            status,
            next(self._seq),
            outputs,
            error,
            {"sourceType": "uri", "uri": "https://example.invalid/recording.mp4"},
            output_as,
        )
        with self._state:
            self.jobs[job_id] = job
            for out in outputs:
                if out.bucket == self.daily_bucket:
                    self.files.put(out.key, out.content)
                elif self.bucket_writer is not None:
                    self.bucket_writer(out.bucket, out.key, out.content)
        return job_id

    def add_output(
        self, job_id: str, section: str, fmt: str, content: Content, *, located: bool = True
    ) -> str:
        """Give a job one more output, as a vendor does when it generates a file later (a
        summary, a re-run); its s3Config key is returned."""
        with self._state:
            job = self.jobs[job_id]
            index = sum(o.section == section for o in job.outputs)
            folder = "summary" if section == "summary" else "transcript"
            name = f"{section}-{index}.{fmt}" if located else f"{section}-link-{index}.{fmt}"
            key = f"{self.domain}/{job_id}/{folder}/{name}"
            out = SimOutput(section, fmt, key, self.daily_bucket, self.region, content, located)
            job.outputs.append(out)
            self.files.put(key, content)
        return key

    def set_status(self, job_id: str, status: str) -> None:
        with self._state:
            self.jobs[job_id].status = status

    def fail_next_delete(
        self, job_id: str, error: str = PARTIAL_DELETE_ERROR, *, keeps_job: bool = False
    ) -> None:
        """The job's next delete answers 200 with ``error`` set, as Daily does when the storage
        cleanup partly fails [V D-del]. Its files stay in Daily's bucket; with ``keeps_job``
        the job record stays too (which Daily does is [?])."""
        with self._state:
            self.failing_deletes[job_id] = (error, keeps_job)

    def deletes_of(self, job_id: str) -> int:
        return len(self.seen("DELETE", f"/batch-processor/{job_id}$"))

    # -- the API ---------------------------------------------------------------------------

    def _auth(self, request: Request) -> Response | None:
        header = request.header("authorization")
        if not header:
            return _daily_error("authorization-header-error", "Missing Authorization header", 400)
        if not hmac.compare_digest(header, f"Bearer {self.api_key}"):
            return _daily_error("authentication-error", "Invalid API key", 401)
        return None

    def _job_json(self, job: SimJob) -> dict[str, Any]:
        output: dict[str, Any] = {}
        for out in job.outputs:
            entry: dict[str, Any] = {"format": out.format}
            if out.located:
                entry["s3Config"] = {"key": out.key, "bucket": out.bucket, "region": out.region}
            else:
                entry["link"] = self.files.sign(out.key)
            if out.section == "transcription" or not out.located:
                output.setdefault(out.section, []).append(entry)
            else:
                output[out.section] = entry
        body: dict[str, Any] = {
            "id": job.id,
            "preset": job.preset,
            "status": job.status,
            "input": job.input,
        }
        if output or job.output_as == "object":
            body["output"] = output
        elif job.output_as == "null":
            body["output"] = None
        if job.error:
            body["error"] = job.error
        return body

    @route("GET", "/v1/batch-processor")
    def list_jobs(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            limit = int(request.arg("limit", "100") or 100)
        except ValueError:
            return _daily_error("invalid-request-error", "limit must be a number", 400)
        if not 1 <= limit <= 100:
            return _daily_error("invalid-request-error", "limit must be between 1 and 100", 400)
        with self._state:
            ordered = sorted(self.jobs.values(), key=lambda j: (-j.seq, j.id))
        after, before = request.arg("starting_after"), request.arg("ending_before")
        if after:
            ids = [j.id for j in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        if before and before != "OLDEST":
            ids = [j.id for j in ordered]
            ordered = ordered[: ids.index(before)] if before in ids else []
            ordered = ordered[-limit:]
        elif before == "OLDEST":
            ordered = ordered[-limit:]
        page = ordered[:limit]
        with self._state:
            total = len(self.jobs)
        return Response.json(
            {
                "total_count": total,
                "data": [{"id": j.id, "preset": j.preset, "status": j.status} for j in page],
            }
        )

    @route("POST", "/v1/batch-processor")
    def submit(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            body = request.json()
        except ValueError:
            return _daily_error("json-parsing-error", "Body is not JSON", 400)
        preset = body.get("preset") if isinstance(body, dict) else None
        if preset not in ("transcript", "summarize"):
            return _daily_error(
                "invalid-request-error", "preset must be transcript or summarize", 400
            )
        return Response.json({"id": self.add_job("submitted", preset=preset)})

    @route("GET", "/v1/batch-processor/(?P<job_id>[^/]+)")
    def get_job(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        with self._state:
            job = self.jobs.get(request.params["job_id"])
            if job is None:
                return _daily_error("not-found", "job not found", 404)
            return Response.json(self._job_json(job))

    @route("GET", "/v1/batch-processor/(?P<job_id>[^/]+)/access-link")
    def access_link(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        with self._state:
            job = self.jobs.get(request.params["job_id"])
            if job is None:
                return _daily_error("not-found", "job not found", 404)
            if job.status != "finished":
                return _daily_error(
                    "invalid-request-error", f"job is {job.status}, not finished", 400
                )
            body: dict[str, Any] = {"id": job.id, "preset": job.preset, "status": job.status}
            for out in job.outputs:
                if out.bucket != self.daily_bucket and not self.links_for_custom_buckets:
                    continue
                entry = {"format": out.format, "link": self.files.sign(out.key)}
                if out.section == "transcription" or not out.located:
                    body.setdefault(out.section, []).append(entry)
                else:
                    body[out.section] = entry
        return Response.json(body)

    @route("DELETE", "/v1/batch-processor/(?P<job_id>[^/]+)")
    def delete_job(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        with self._state:
            job_id = request.params["job_id"]
            failing = self.failing_deletes.pop(job_id, None)
            if failing is not None and job_id in self.jobs:
                error, keeps_job = failing
                partly = self.jobs[job_id] if keeps_job else self.jobs.pop(job_id)
                return Response.json({**self._job_json(partly), "error": error})
            job = self.jobs.pop(job_id, None)
            if job is None:
                return _daily_error("not-found", "job not found", 404)
            for out in job.outputs:
                if out.bucket == self.daily_bucket:
                    self.files.drop(out.key)
            self.deleted.append(job.id)
            return Response.json(self._job_json(job))

    def not_found(self, request: Request) -> Response:
        if self.unknown_route == "html":
            page = b"<html><body><h1>404 Not Found</h1></body></html>"
            return Response(404, page, {"Content-Type": "text/html"})
        if self.unknown_route == "empty":
            return Response(404, b"")
        return super().not_found(request)

    # -- downloads -------------------------------------------------------------------------

    @property
    def issued_signatures(self) -> list[str]:
        return self.files.issued_signatures

    @route("GET", "/files/(?P<key>.+)")
    def download(self, request: Request) -> Response:
        return self.files.serve(request, request.params["key"])
