"""A simulator of DatoCMS's Content Management API for upload tracks (providers.md section 5).

Faithful where the docs are clear, configurable where they are not:

* every request needs ``Authorization: Bearer <token>`` (else 401
  ``INVALID_AUTHORIZATION_HEADER``), ``Accept: application/json`` (else
  ``INVALID_ACCEPT_HEADER``) and ``X-Api-Version: 3`` (else ``INVALID_API_VERSION``);
  ``X-Environment`` is optional and must name the primary environment or one of
  ``sandboxes`` (else ``INVALID_ENVIRONMENT``). The HTTP status of each code is not
  documented [?]: ``error_statuses`` holds them;
* ``GET /uploads`` (``page[offset]``, ``page[limit]``, ``meta.total_count``) and
  ``GET /uploads/:id``;
* ``GET /uploads/:id/tracks``: every track of the upload in one answer (unpaginated [I]);
* ``DELETE /uploads/:upload_id/tracks/:track_id`` answers 202 ``{data: {type: "job", id}}``
  (404 ``NOT_FOUND`` for an unknown upload or track). ``GET /job-results/:id`` answers 404
  for the job's first ``pending_polls`` polls, then carries out the delete and answers 200
  with ``attributes.status`` and ``payload`` (the deleted track, or an error document). A
  track removed meanwhile gives ``status`` 404 ``NOT_FOUND``; ``delete_failure`` makes jobs
  fail with a code of one's choosing. Job results have ids of their own [?];
* in a sandbox environment deletes are refused with
  ``IMMUTABLE_UPLOAD_TRACKS_IN_SANDBOX_ENVIRONMENT``, on the DELETE itself or inside the job
  result (``sandbox_refusal``) [?];
* every answer carries ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining`` for the window
  in ``rate_limit`` (60 per 3 s), plus ``X-RateLimit-Reset`` once the window is spent; past
  it the answer is 429 ``RATE_LIMIT_EXCEEDED``. 5xx and other faults come from ``inject``.

Mux's stream host is served on the same port under ``/stream`` (``stream_base_url``), with
no credentials asked: ``GET /stream/PLAYBACK_ID/text/TRACK_ID.vtt`` answers a ready
subtitle track's WebVTT (``add_track(vtt=...)``, served as given, empty or not WebVTT
included), 404 for anything else (an audio track has no file of its own), and 403 for every
request to an upload whose ``playback_policy`` is ``"signed"`` (the worker holds no signing
key). An upload made with ``video=False`` has no ``mux_playback_id``. Stream requests count
in the simulated rate window, which the real stream host does not share (a simplification
no test depends on). No signed links are handed out, so ``issued_signatures`` stays empty.
"""

from __future__ import annotations

import functools
import hmac
import itertools
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote

from worker.simulators.http import Request, Response, Seen, SimServer, route

DOC_URL = "https://www.datocms.com/docs/content-management-api/errors"
ERROR_STATUSES = {
    "INVALID_AUTHORIZATION_HEADER": 401,
    "INVALID_ACCEPT_HEADER": 406,
    "INVALID_API_VERSION": 422,
    "INVALID_ENVIRONMENT": 422,
    "IMMUTABLE_UPLOAD_TRACKS_IN_SANDBOX_ENVIRONMENT": 422,
    "NOT_FOUND": 404,
    "RATE_LIMIT_EXCEEDED": 429,
}
MAX_PAGE = 500
# What a subtitle track's stream serves unless a test says otherwise.
WEBVTT = b"WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nBuongiorno a tutti.\n"


@dataclass
class SimTrack:
    id: str
    upload_id: str
    status: str = "ready"
    type: str = "subtitles"
    name: str | None = "Italiano"
    language_code: str = "it-IT"
    closed_captions: bool | None = False
    error: str | None = None
    # The bytes the stream host serves for a ready subtitle track.
    vtt: bytes = WEBVTT

    @property
    def job_id(self) -> str:
        return f"{self.upload_id}/{self.id}"


@dataclass
class SimUpload:
    id: str
    filename: str
    tracks: dict[str, SimTrack] = field(default_factory=dict)
    # Mux's playback id for the video; None for an upload without one.
    mux_playback_id: str | None = None
    # "public", or "signed": Mux then serves nothing without a token.
    playback_policy: Literal["public", "signed"] = "public"


@dataclass
class SimJob:
    id: str
    job_id: str  # UPLOAD_ID/TRACK_ID
    environment: str | None
    polls_left: int
    result: tuple[int, Any] | None = None


@dataclass(frozen=True)
class Failure:
    """How a job result fails: its status, the error code, and DatoCMS's transient flag."""

    status: int
    code: str
    transient: bool = False


def error_document(code: str, *, transient: bool = False) -> dict[str, Any]:
    return {
        "data": [
            {
                "id": secrets.token_hex(3),
                "type": "api_error",
                "attributes": {
                    "code": code,
                    "doc_url": f"{DOC_URL}#{code}",
                    "details": {},
                    "transient": transient,
                },
            }
        ]
    }


Route = Callable[["DatoCmsSimulator", Request], Response]


def _api(handler: Route) -> Route:
    """Header checks before the handler; rate-limit headers on whatever it answers."""

    @functools.wraps(handler)
    def serve(sim: DatoCmsSimulator, request: Request) -> Response:
        refused = sim._refusal(request)
        response = refused if refused is not None else handler(sim, request)
        response.headers.update(sim._window_headers())
        return response

    return serve


class DatoCmsSimulator(SimServer):
    credential_headers = ("authorization",)

    def __init__(
        self,
        api_token: str,
        *,
        pending_polls: int = 1,
        sandboxes: tuple[str, ...] = (),
        primary_environment: str = "main",
        sandbox_refusal: Literal["delete", "job"] = "delete",
        rate_limit: tuple[int, float] | None = (60, 3.0),
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.api_token = api_token
        # Polls of a job result answered 404 before the delete is carried out.
        self.pending_polls = pending_polls
        self.sandboxes = set(sandboxes)
        self.primary_environment = primary_environment
        self.sandbox_refusal = sandbox_refusal
        self.rate_limit = rate_limit
        self.error_statuses = dict(ERROR_STATUSES)
        # Set to make every job that completes from now on fail this way.
        self.delete_failure: Failure | None = None
        self.uploads: dict[str, SimUpload] = {}
        self.jobs: dict[str, SimJob] = {}
        # UPLOAD_ID/TRACK_ID of every track whose delete was carried out.
        self.deleted: list[str] = []
        self.issued_signatures: list[str] = []
        self._job_ids = itertools.count(4235)
        self._result_ids = itertools.count(34)
        self._state = threading.RLock()

    @property
    def base_url(self) -> str:
        return self.origin

    @property
    def stream_base_url(self) -> str:
        return f"{self.origin}/stream"

    def provider_table(self, **extra: Any) -> dict[str, Any]:
        """This account's ``[providers.NAME]`` table: type, base URL and credentials, plus
        ``extra`` keys (the registry every configuration of a simulated account reads)."""
        table = {
            "type": "datocms",
            "base_url": self.base_url,
            "api_token": self.api_token,
            "stream_base_url": self.stream_base_url,
        }
        return {**table, **extra}

    # -- arranging state -------------------------------------------------------------------

    def add_upload(
        self,
        upload_id: str | None = None,
        *,
        filename: str = "talk.mp4",
        video: bool = True,
        playback_policy: Literal["public", "signed"] = "public",
    ) -> str:
        upload_id = upload_id or secrets.token_urlsafe(16)
        playback_id = secrets.token_hex(16) if video else None
        with self._state:
            self.uploads[upload_id] = SimUpload(
                upload_id, filename, mux_playback_id=playback_id, playback_policy=playback_policy
            )
        return upload_id

    def add_track(
        self,
        upload_id: str,
        status: str = "ready",
        *,
        track_id: str | None = None,
        kind: str = "subtitles",
        name: str | None = "Italiano",
        language_code: str = "it-IT",
        closed_captions: bool | None = False,
        error: str | None = None,
        vtt: bytes = WEBVTT,
    ) -> str:
        """Add a track to an upload (created if unknown); return its job id UPLOAD/TRACK.
        ``vtt`` is what the stream host serves for it, as a ready subtitle track."""
        track = SimTrack(
            track_id or secrets.token_urlsafe(32),
            upload_id,
            status,
            kind,
            name,
            language_code,
            closed_captions,
            error,
            vtt,
        )
        with self._state:
            if upload_id not in self.uploads:
                self.add_upload(upload_id)
            self.uploads[upload_id].tracks[track.id] = track
        return track.job_id

    def set_status(self, job_id: str, status: str) -> None:
        with self._state:
            self._track(job_id).status = status

    def remove_track(self, job_id: str) -> None:
        """Someone else deletes the track (not counted in ``deleted``)."""
        upload_id, track_id = job_id.split("/")
        with self._state:
            self.uploads[upload_id].tracks.pop(track_id)

    def remove_upload(self, upload_id: str) -> None:
        with self._state:
            self.uploads.pop(upload_id)

    def has_track(self, job_id: str) -> bool:
        upload_id, _, track_id = job_id.partition("/")
        with self._state:
            upload = self.uploads.get(upload_id)
            return upload is not None and track_id in upload.tracks

    def _track(self, job_id: str) -> SimTrack:
        upload_id, track_id = job_id.split("/")
        return self.uploads[upload_id].tracks[track_id]

    def webvtt_url(self, job_id: str) -> str:
        """Where the stream host serves the track's WebVTT."""
        upload_id, track_id = job_id.split("/")
        with self._state:
            playback_id = self.uploads[upload_id].mux_playback_id
        return f"{self.stream_base_url}/{playback_id}/text/{quote(track_id, safe='')}.vtt"

    def webvtt_of(self, job_id: str) -> bytes:
        with self._state:
            return self._track(job_id).vtt

    # -- observations ----------------------------------------------------------------------

    def deletes_of(self, job_id: str) -> int:
        upload_id, _, track_id = job_id.partition("/")
        path = f"/uploads/{quote(upload_id, safe='')}/tracks/{quote(track_id, safe='')}"
        return len(self.seen("DELETE", f"^{re.escape(path)}$"))

    def handles_of(self, job_id: str) -> list[str]:
        """The async job ids handed out for deletes of ``job_id``, oldest first."""
        with self._state:
            return [job.id for job in self.jobs.values() if job.job_id == job_id]

    def stream_fetches(self) -> list[Seen]:
        """Requests to the stream host."""
        return self.seen("GET", "^/stream/")

    def polls_of(self, job_id: str) -> int:
        """Job-result requests for any delete of ``job_id``."""
        return sum(
            len(self.seen("GET", f"^/job-results/{re.escape(quote(handle, safe=''))}$"))
            for handle in self.handles_of(job_id)
        )

    # -- the protocol's edges --------------------------------------------------------------

    def error(self, code: str, *, status: int | None = None, transient: bool = False) -> Response:
        return Response.json(
            error_document(code, transient=transient),
            status=status or self.error_statuses.get(code, 422),
        )

    def _refusal(self, request: Request) -> Response | None:
        header = request.header("authorization") or ""
        if not hmac.compare_digest(header.encode(), f"Bearer {self.api_token}".encode()):
            return self.error("INVALID_AUTHORIZATION_HEADER")
        accept = request.header("accept") or ""
        if "application/json" not in accept and "application/vnd.api+json" not in accept:
            return self.error("INVALID_ACCEPT_HEADER")
        if request.header("x-api-version") != "3":
            return self.error("INVALID_API_VERSION")
        environment = request.header("x-environment")
        if environment is not None and environment not in (
            self.sandboxes | {self.primary_environment}
        ):
            return self.error("INVALID_ENVIRONMENT")
        return None

    def _window_state(self) -> tuple[int, int, float | None]:
        """(limit, remaining, seconds until a slot frees) for the window as it stands."""
        assert self.rate_limit is not None
        count, seconds = self.rate_limit
        now = time.monotonic()
        # SimServer admits requests against `rate_limit` and keeps their times in `_window`;
        # the headers describe that same window, so the two can never disagree.
        with self._lock:
            recent = [t for t in self._window if now - t < seconds]
        remaining = max(0, count - len(recent))
        if remaining or not recent:
            return count, remaining, None
        return count, remaining, max(0.0, seconds - (now - min(recent)))

    def _window_headers(self) -> dict[str, str]:
        if self.rate_limit is None:
            return {}
        limit, remaining, reset = self._window_state()
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)}
        if reset is not None:
            headers["X-RateLimit-Reset"] = str(max(1, math.ceil(reset)))
        return headers

    def rate_limit_response(self) -> Response:
        response = self.error("RATE_LIMIT_EXCEEDED")
        response.headers.update(self._window_headers())
        response.headers.setdefault("X-RateLimit-Reset", "1")
        return response

    def not_found(self, request: Request) -> Response:
        response = self.error("NOT_FOUND")
        response.headers.update(self._window_headers())
        return response

    # -- the API ---------------------------------------------------------------------------

    def _track_json(self, track: SimTrack) -> dict[str, Any]:
        return {
            "type": "upload_track",
            "id": track.id,
            "attributes": {
                "type": track.type,
                "name": track.name,
                "language_code": track.language_code,
                "closed_captions": track.closed_captions,
                "status": track.status,
                "error": track.error,
            },
            "relationships": {"upload": {"data": {"type": "upload", "id": track.upload_id}}},
        }

    def _upload_json(self, upload: SimUpload) -> dict[str, Any]:
        return {
            "type": "upload",
            "id": upload.id,
            "attributes": {
                "filename": upload.filename,
                "mime_type": "video/mp4",
                "is_image": False,
                "mux_playback_id": upload.mux_playback_id,
                "mux_mp4_highest_res": "high" if upload.mux_playback_id else None,
            },
        }

    @route("GET", "/uploads")
    @_api
    def list_uploads(self, request: Request) -> Response:
        try:
            offset = int(request.arg("page[offset]", "0") or 0)
            limit = int(request.arg("page[limit]", "30") or 30)
        except ValueError:
            return self.error("INVALID_FIELD")
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            return self.error("INVALID_FIELD")
        with self._state:
            uploads = list(self.uploads.values())
        page = uploads[offset : offset + limit]
        return Response.json(
            {"data": [self._upload_json(u) for u in page], "meta": {"total_count": len(uploads)}}
        )

    @route("GET", "/uploads/(?P<upload_id>[^/]+)")
    @_api
    def get_upload(self, request: Request) -> Response:
        with self._state:
            upload = self.uploads.get(unquote(request.params["upload_id"]))
            if upload is None:
                return self.error("NOT_FOUND")
            return Response.json({"data": self._upload_json(upload)})

    @route("GET", "/uploads/(?P<upload_id>[^/]+)/tracks")
    @_api
    def list_tracks(self, request: Request) -> Response:
        with self._state:
            upload = self.uploads.get(unquote(request.params["upload_id"]))
            if upload is None:
                return self.error("NOT_FOUND")
            return Response.json({"data": [self._track_json(t) for t in upload.tracks.values()]})

    @route("DELETE", "/uploads/(?P<upload_id>[^/]+)/tracks/(?P<track_id>[^/]+)")
    @_api
    def delete_track(self, request: Request) -> Response:
        upload_id = unquote(request.params["upload_id"])
        track_id = unquote(request.params["track_id"])
        environment = request.header("x-environment")
        with self._state:
            upload = self.uploads.get(upload_id)
            if upload is None or track_id not in upload.tracks:
                return self.error("NOT_FOUND")
            if environment in self.sandboxes and self.sandbox_refusal == "delete":
                return self.error("IMMUTABLE_UPLOAD_TRACKS_IN_SANDBOX_ENVIRONMENT")
            job = SimJob(
                str(next(self._job_ids)),
                f"{upload_id}/{track_id}",
                environment,
                self.pending_polls,
            )
            self.jobs[job.id] = job
        return Response.json({"data": {"type": "job", "id": job.id}}, status=202)

    @route("GET", "/job-results/(?P<job>[^/]+)")
    @_api
    def job_result(self, request: Request) -> Response:
        with self._state:
            job = self.jobs.get(unquote(request.params["job"]))
            if job is None:
                return self.error("NOT_FOUND")
            if job.polls_left > 0:
                job.polls_left -= 1
                return self.error("NOT_FOUND")
            if job.result is None:
                job.result = self._carry_out(job)
            status, payload = job.result
        return Response.json(
            {
                "data": {
                    "type": "job_result",
                    "id": str(next(self._result_ids)),
                    "attributes": {"status": status, "payload": payload},
                }
            }
        )

    # -- Mux's stream host -------------------------------------------------------------------

    @route("GET", r"/stream/(?P<playback_id>[^/]+)/text/(?P<track_id>[^/]+)\.vtt")
    def stream_text(self, request: Request) -> Response:
        """A text track as Mux serves it: by the upload's playback id and the track's id."""
        playback_id = unquote(request.params["playback_id"])
        track_id = unquote(request.params["track_id"])
        with self._state:
            upload = next(
                (u for u in self.uploads.values() if u.mux_playback_id == playback_id), None
            )
            if upload is not None and upload.playback_policy == "signed":
                return Response(403, b"Forbidden", {"Content-Type": "text/plain"})
            track = upload.tracks.get(track_id) if upload is not None else None
            if track is None or track.type != "subtitles" or track.status != "ready":
                return Response(404, b"Not Found", {"Content-Type": "text/plain"})
            return Response(200, track.vtt, {"Content-Type": "text/vtt"})

    def _carry_out(self, job: SimJob) -> tuple[int, Any]:
        """The delete itself, done when the job completes; the job result it leaves."""
        if job.environment in self.sandboxes:
            code = "IMMUTABLE_UPLOAD_TRACKS_IN_SANDBOX_ENVIRONMENT"
            return self.error_statuses.get(code, 422), error_document(code)
        if self.delete_failure is not None:
            failure = self.delete_failure
            return failure.status, error_document(failure.code, transient=failure.transient)
        upload_id, track_id = job.job_id.split("/")
        upload = self.uploads.get(upload_id)
        track = upload.tracks.pop(track_id, None) if upload is not None else None
        if track is None:
            return 404, error_document("NOT_FOUND")
        self.deleted.append(job.job_id)
        return 200, {"data": self._track_json(track)}
