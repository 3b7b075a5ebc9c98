"""A simulator of Loom Analytics' Claudio API (shared/providers.md section 2; seed 001).

Faithful where the docs are clear, configurable where they are not:

* every call is a POST [I] whose JSON body carries ``key`` and ``secret``; a missing or wrong
  pair answers 401 "User not authorized", a body that is not JSON answers 400 "Unexpected
  error occurred" (both body shapes are [?]: ``{"msg": "ERROR: ..."}`` like the rest);
* ``/api/jobs/<ref>/details`` answers ``{success, msg, job_data: {job_info, job_files}}`` with
  the documented ``SUCCESS:`` / ``NOTICE:`` / ``ERROR:`` messages; ``output_files`` is null
  until the job completed. ``job_info.status`` says "completed" in every state, as every
  example in the docs does; ``info_status`` changes that, since other literals are [?].
  A failed job's details come with ``failed_status`` (200 [?]);
* ``/api/jobs/<ref>/poll`` answers the lighter documented poll shape (error body [?]);
* ``/api/jobs/<ref>/delete`` removes the job and every file and answers ``SUCCESS: ...
  deleted``; deleting it again answers the documented ``SUCCESS: NOTICE: Unexpected error
  during delete ... not deleted``; an unknown ref, on any endpoint, answers
  ``ERR_C_TA_DJTA_001`` with ``not_found_status`` (400 [I]);
* every API answer waits ``latency`` seconds first (the docs expect up to about 30 s);
* no rate limit is documented [?]: ``rate_limit`` and ``inject`` give 429 and 5xx on demand.

Shapes the docs do not show, served on demand so adapters can be tested against them:

* ``output_files`` keys Loom does not document (``add_job(extra_outputs=...)``), each a list
  of ``{filename, download_url}`` like the documented ones;
* a delete that fails for some parts (``fail_next_delete``): Loom's ``SUCCESS:`` message with
  "NOTICE: Unexpected error during delete ... not deleted" for those parts and "deleted" for
  the others, while the job stays (its details still answer). With every part failing it
  reads exactly like the documented answer for a job already deleted.

Files are served under ``/files/`` on the same port, like S3, through signed links that need
no credentials and expire after ``link_ttl`` seconds (the TTL is [?]). Every details or poll
answer mints fresh links; ``issued_signatures`` keeps every signature handed out.

The request log's ``authorization`` flag is true when a request carried credentials of any
kind: the key or secret in its body (Loom's way), or an ``Authorization`` header. Requests
whose URL carried the key or secret are listed in ``urls_with_credentials``.
"""

from __future__ import annotations

import enum
import hmac
import itertools
import json
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from worker.simulators.blobs import Content, size_of
from worker.simulators.files import SignedFiles
from worker.simulators.http import Request, Response, SimServer, route

GONE_CODE = "ERR_C_TA_DJTA_001"
MESSAGES = {
    "completed": "SUCCESS: Job completed successfully.",
    "in_progress": "NOTICE: Job is currently being processed.",
    "error": "ERROR: Job processing failed.",
}
DELETED_MSG = (
    "SUCCESS: Finished Transcript deleted.\nFormatted Transcript deleted. Audio file deleted. "
)
ALREADY_DELETED_MSG = (
    "SUCCESS: NOTICE: Unexpected error during delete.\nFinished Transcript not deleted.\n"
    "NOTICE: Unexpected error during delete.\nFormatted Transcript not deleted.\n"
    "NOTICE: Unexpected error during delete.\nAudio file not deleted. "
)
NOT_FOUND_MSG = "ERROR: Unexpected error occured. ERROR: Job data not found. "
# The parts a delete answer names, in the documented order.
DELETE_PARTS = ("Finished Transcript", "Formatted Transcript", "Audio file")
DOCUMENTED_OUTPUTS = ("transcripts", "processed_input_media")


def delete_message(not_deleted: Sequence[str]) -> str:
    """A delete answer naming each part deleted or, with Loom's notice, not deleted."""
    lines = [
        f"NOTICE: Unexpected error during delete.\n{part} not deleted."
        if part in not_deleted
        else f"{part} deleted."
        for part in DELETE_PARTS
    ]
    return "SUCCESS: " + "\n".join(lines) + " "


class _Default(enum.Enum):
    TOKEN = 0


DEFAULT = _Default.TOKEN


@dataclass
class SimFile:
    section: str  # "input_files", "transcripts", "processed_input_media", "extracted_fields"
    filename: str
    content: Content
    path: str  # under /files/, URL-quoted
    file_type: str | None = None
    file_subtype: str | None = None
    # What ``file_size`` says; DEFAULT means the real size. Anything JSON can hold.
    declared_size: Any = DEFAULT


@dataclass
class SimJob:
    ref: str
    name: str
    state: str
    files: list[SimFile]
    submitted_at: str
    completed_at: str | None
    msg: str | None = None
    success: bool | None = None
    profile_name: str = "General Transcription"
    error_message: str | None = None
    seq: int = 0
    # output_files keys Loom does not document, in the order given.
    extra_sections: tuple[str, ...] = ()

    def in_section(self, section: str) -> list[SimFile]:
        return [f for f in self.files if f.section == section]


def _loom_error(msg: str, status: int, err_code: str | None = None) -> Response:
    body: dict[str, Any] = {"msg": msg}
    if err_code:
        body["err_code"] = err_code
    return Response.json(body, status=status)


class LoomSimulator(SimServer):
    credential_headers: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        key: str,
        secret: str,
        *,
        link_ttl: float = 3600.0,
        latency: float = 0.0,
        not_found_status: int = 400,
        failed_status: int = 200,
        info_status: dict[str, str] | None = None,
        time_format: str = "%Y-%m-%d %H:%M:%S",
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.key = key
        self.secret = secret
        # Every input and output, behind signed links.
        self.files = SignedFiles(lambda: self.origin, ttl=link_ttl)
        self.latency = latency
        self.not_found_status = not_found_status
        self.failed_status = failed_status
        # job_info.status per state; the docs show "completed" for all of them.
        self.info_status = info_status or {}
        self.time_format = time_format
        self.jobs: dict[str, SimJob] = {}
        self.deleted: list[str] = []
        # ref -> the parts its next delete reports not deleted (the job then stays).
        self.failing_deletes: dict[str, tuple[str, ...]] = {}
        self.urls_with_credentials: list[str] = []
        self._seq = itertools.count(1)
        self._state = threading.RLock()

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api"

    def provider_table(self, **extra: Any) -> dict[str, Any]:
        """This account's ``[providers.NAME]`` table: type, base URL and credentials, plus
        ``extra`` keys (the registry every configuration of a simulated account reads)."""
        table = {"type": "loom", "base_url": self.base_url, "key": self.key}
        return {**table, "secret": self.secret, **extra}

    # -- arranging state -------------------------------------------------------------------

    def add_job(
        self,
        state: str = "completed",
        *,
        inputs: Sequence[tuple[str, str, Content]] = (),
        transcripts: Sequence[tuple[str, Content]] = (),
        processed: Sequence[tuple[str, Content]] = (),
        extracted_fields: Content | None = None,
        extra_outputs: Mapping[str, Sequence[tuple[str, Content]]] | None = None,
        completed_at: str | _Default | None = DEFAULT,
        msg: str | None = None,
        success: bool | None = None,
        ref: str | None = None,
        name: str | None = None,
    ) -> str:
        """Add a job and return its reference id.

        ``state`` is "completed", "in_progress" or "error"; any other state needs ``msg``.
        Outputs are listed only for a "completed" job, as Loom does. ``completed_at``
        defaults to the submission time, as in every example of the docs.
        ``extra_outputs`` adds ``output_files`` keys Loom does not document.
        """
        if msg is None and state not in MESSAGES:
            raise ValueError(f"state {state!r} needs a msg")
        seq = next(self._seq)
        ref = ref or f"R{seq:06d}{secrets.token_hex(3)}"
        submitted = datetime.now(UTC).strftime(self.time_format)
        files: list[SimFile] = []

        def add(section: str, filename: str, content: Content, **extra: Any) -> None:
            path = f"{quote(ref, safe='')}/{section}/{len(files)}/{quote(filename, safe='')}"
            files.append(SimFile(section, filename, content, path, **extra))

        for filename, file_type, content in inputs:
            add("input_files", filename, content, file_type=file_type)
        for filename, content in transcripts:
            add("transcripts", filename, content, file_subtype="final_transcript")
        for filename, content in processed:
            add("processed_input_media", filename, content, file_subtype="merged_filename")
        if extracted_fields is not None:
            add("extracted_fields", "extracted_fields.json", extracted_fields)
        for section, items in (extra_outputs or {}).items():
            for filename, content in items:
                add(section, filename, content)
        job = SimJob(
            ref=ref,
            name=name or f"job-{seq}",
            state=state,
            files=files,
            submitted_at=submitted,
            completed_at=submitted if isinstance(completed_at, _Default) else completed_at,
            msg=msg,
            success=success,
            seq=seq,
            extra_sections=tuple(extra_outputs or ()),
        )
        with self._state:
            self.jobs[ref] = job
            for file in files:
                self.files.put(file.path, file.content)
        return ref

    def set_state(self, ref: str, state: str, *, msg: str | None = None) -> None:
        with self._state:
            job = self.jobs[ref]
            job.state = state
            job.msg = msg

    def declare_size(self, ref: str, filename: str, size: Any) -> None:
        """Make an input's ``file_size`` say ``size`` (the served bytes do not change)."""
        with self._state:
            for file in self.jobs[ref].in_section("input_files"):
                if file.filename == filename:
                    file.declared_size = size

    def fail_next_delete(self, ref: str, parts: Sequence[str] = ("Audio file",)) -> None:
        """The job's next delete reports ``parts`` not deleted (of ``DELETE_PARTS``) and the
        rest deleted, and the job stays: its details still answer."""
        with self._state:
            self.failing_deletes[ref] = tuple(parts)

    def deletes_of(self, ref: str) -> int:
        return len(self.seen("POST", f"/jobs/{quote(ref, safe='')}/delete$"))

    # -- the API ---------------------------------------------------------------------------

    def _open(self, request: Request) -> Response | None:
        """Latency, then authentication; None when the request may proceed."""
        if self.latency:
            time.sleep(self.latency)
        try:
            body = request.json()
        except ValueError:
            return _loom_error("ERROR: Unexpected error occurred. ", 400)
        key = body.get("key") if isinstance(body, dict) else None
        secret = body.get("secret") if isinstance(body, dict) else None
        if not isinstance(key, str) or not isinstance(secret, str):
            return _loom_error("ERROR: User not authorized. ", 401)
        key_ok = hmac.compare_digest(key.encode(), self.key.encode())
        secret_ok = hmac.compare_digest(secret.encode(), self.secret.encode())
        if not (key_ok and secret_ok):
            return _loom_error("ERROR: User not authorized. ", 401)
        return None

    def _not_found(self) -> Response:
        return _loom_error(NOT_FOUND_MSG, self.not_found_status, GONE_CODE)

    def _message(self, job: SimJob) -> str:
        return job.msg if job.msg is not None else MESSAGES[job.state]

    def _details_json(self, job: SimJob) -> dict[str, Any]:
        inputs = []
        for file in job.in_section("input_files"):
            declared = file.declared_size
            inputs.append(
                {
                    "filename": file.filename,
                    "file_type": file.file_type,
                    "file_size": size_of(file.content)
                    if isinstance(declared, _Default)
                    else declared,
                    "download_url": self.files.sign(file.path),
                }
            )
        output_files: dict[str, Any] | None = None
        if job.state == "completed":
            fields = job.in_section("extracted_fields")
            output_files = {
                section: [
                    {
                        "filename": f.filename,
                        "file_subtype": f.file_subtype,
                        "download_url": self.files.sign(f.path),
                        **({"language_code": "en"} if section == "transcripts" else {}),
                    }
                    for f in job.in_section(section)
                ]
                for section in (*DOCUMENTED_OUTPUTS, *job.extra_sections)
            }
            output_files["extracted_fields_url"] = (
                self.files.sign(fields[0].path) if fields else None
            )
        success = job.success if job.success is not None else job.state != "error"
        return {
            "success": success,
            "msg": self._message(job),
            "job_data": {
                "job_info": {
                    "job_reference_id": job.ref,
                    "job_name": job.name,
                    "status": self.info_status.get(job.state, "completed"),
                    "profile_name": job.profile_name,
                    "submitted_at": job.submitted_at,
                    "completed_at": job.completed_at,
                    "total_audio_length": "1843",
                    "is_blank_audio": False,
                    "error_message": job.error_message,
                },
                "job_files": {"input_files": inputs, "output_files": output_files},
            },
        }

    @route("POST", "/api/jobs/(?P<ref>[^/]+)/details")
    def details(self, request: Request) -> Response:
        if (denied := self._open(request)) is not None:
            return denied
        with self._state:
            job = self.jobs.get(unquote(request.params["ref"]))
            if job is None:
                return self._not_found()
            status = self.failed_status if job.state == "error" else 200
            return Response.json(self._details_json(job), status=status)

    @route("POST", "/api/jobs/(?P<ref>[^/]+)/poll")
    def poll(self, request: Request) -> Response:
        if (denied := self._open(request)) is not None:
            return denied
        with self._state:
            job = self.jobs.get(unquote(request.params["ref"]))
            if job is None:
                return self._not_found()
            if job.state == "in_progress":
                return Response.json(
                    {
                        "msg": "NOTICE: The job is in progress.\nPlease try again after sometime. ",
                        "media_files": [],
                    }
                )
            if job.state == "error":
                return Response.json(
                    {"msg": "ERROR: Job processing failed. "}, status=self.failed_status
                )
            if job.state != "completed":
                return Response.json({"msg": self._message(job)})
            return Response.json(
                {
                    "msg": "SUCCESS: Job completed. ",
                    "transcript_url": [
                        self.files.sign(f.path) for f in job.in_section("transcripts")
                    ],
                    "media_files": [
                        self.files.sign(f.path) for f in job.in_section("processed_input_media")
                    ],
                    "extracted_fields": [
                        self.files.sign(f.path) for f in job.in_section("extracted_fields")
                    ],
                    "return": "msg, transcript_url, media_files, extracted_fields",
                }
            )

    @route("POST", "/api/jobs/(?P<ref>[^/]+)/delete")
    def delete(self, request: Request) -> Response:
        if (denied := self._open(request)) is not None:
            return denied
        ref = unquote(request.params["ref"])
        with self._state:
            failing = self.failing_deletes.pop(ref, None)
            if failing is not None and ref in self.jobs:
                return Response.json({"msg": delete_message(failing)})
            job = self.jobs.pop(ref, None)
            if job is None:
                if ref in self.deleted:
                    return Response.json({"msg": ALREADY_DELETED_MSG})
                return self._not_found()
            for file in job.files:
                self.files.drop(file.path)
            self.deleted.append(ref)
        return Response.json({"msg": DELETED_MSG})

    def rate_limit_response(self) -> Response:
        # Loom documents no rate limit and no 429 body [?].
        return _loom_error("ERROR: Too many requests. ", 429)

    def not_found(self, request: Request) -> Response:
        return _loom_error("ERROR: Unexpected error occurred. ", 404)

    # -- the request log -------------------------------------------------------------------

    def carries_credentials(self, request: Request) -> bool:
        """Loom's credentials travel in the JSON body, so the body counts too."""
        if self._in_url(request):
            with self._lock:
                self.urls_with_credentials.append(request.path)
            return True
        if "authorization" in request.headers:
            return True
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        if isinstance(body, dict) and ("key" in body or "secret" in body):
            return True
        return any(s.encode() in request.body for s in (self.key, self.secret))

    def _in_url(self, request: Request) -> bool:
        values = [request.path, *(v for vs in request.query.values() for v in vs)]
        values += list(request.query)
        return any(s in v for v in values for s in (self.key, self.secret))

    # -- downloads -------------------------------------------------------------------------

    @property
    def issued_signatures(self) -> list[str]:
        return self.files.issued_signatures

    @route("GET", "/files/(?P<path>.+)")
    def download(self, request: Request) -> Response:
        return self.files.serve(request, request.params["path"])
