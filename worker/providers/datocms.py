"""DatoCMS upload tracks and their asynchronous deletes (shared/providers.md section 5; seed 004).

* Auth: every request sends ``Authorization: Bearer <api_token>``, ``Accept:
  application/json`` and ``X-Api-Version: 3``, and ``X-Environment`` when ``environment`` is
  set (the primary environment otherwise).
* Jobs: a job is one upload track, with the id ``UPLOAD_ID/TRACK_ID``. Jobs come from
  ``retention track`` and from the tracks of each upload in ``upload_ids``
  (``GET /uploads/:id/tracks``; no pagination is documented, so the list is taken as whole
  [I]). An upload of that list that no longer exists is skipped with a warning. A track that
  was neither tracked nor listed is never read, archived or deleted.
* Status: there is no documented single-track GET, so the upload's tracks are listed and the
  one asked for is picked; an absent track, or an upload answered with ``NOT_FOUND``, is
  gone. ``preparing`` runs; ``ready`` and ``errored`` are terminal; any other word is unknown
  and never terminal. Tracks carry no timestamps: the retention clock starts when the worker
  first sees one terminal.
* Archive: the track resource (JSON:API) goes into the manifest, and so does the track's
  media, which lives at Mux (DatoCMS's video host) and which the delete removes from the
  video with the track [I]. Where it is served (Mux's docs; DatoCMS's upload resource):
  DatoCMS's ``GET /uploads/:id`` gives ``attributes.mux_playback_id``, documented as "Public
  Mux playback ID. Used with stream.mux.com", and Mux serves a text track as WebVTT at
  ``https://stream.mux.com/{PLAYBACK_ID}/text/{TRACK_ID}.vtt``. That the DatoCMS track id
  is Mux's track id is inferred [I]: the two docs show the same example id for a track.
  ``stream_base_url`` holds the host (Mux's by default).

  - A ready subtitle track: its WebVTT is an artifact (``subtitles.vtt``) behind that link,
    fetched, hashed and verified by the pipeline's download path like any link, and
    checked before any of it is stored (``WebVttCheck``, ``webvtt_problem``): a body that
    is empty, does not start with ``WEBVTT`` or has no cue keeps the track
    (``Kept(reason="subtitles_invalid")``). An upload without a playback id, or a stream
    host that refuses the text with 401/403 (a signed playback policy: Mux then wants a
    token the worker cannot make [I]) or 404/410, keeps it too
    (``Kept(reason="subtitles_unfetchable")``).
  - An audio track: Mux documents no file of an alternate audio track of its own, only the
    video's HLS stream [I], so it cannot be archived: ``Kept(reason="audio_track")``.
  - An errored track has no media at Mux [I]: its record is all there is.
  - A type DatoCMS does not document (it names ``audio`` and ``subtitles``):
    ``Kept(reason="unrecognised_output")``.

  ``ignore_outputs`` accepts losing a type's media by naming ``<type>_media``:
  ``"audio_media"`` lets audio tracks go with their record archived, ``"subtitles_media"``
  lets subtitle tracks go without their text (none is then fetched or archived, as for
  every section ``ignore_outputs`` names).
* The whole-record walk (``providers/outputs.py``) makes that verdict explicit and keeps it
  honest: the resource's ``id`` and ``type``, the documented track attributes (``type``,
  ``name``, ``language_code``, ``closed_captions``, ``status``, ``error``) name no file, and
  JSON:API's ``links`` and ``relationships`` point at API resources (the upload), not at
  files; all are declared in ``INERT``. Every other reference, such as a future
  ``attributes.url`` to the track's media, would be data the delete may destroy:
  ``Kept(reason="unrecognised_output")``, naming its JSON path, unless the attribute (or
  top-level member) is in ``ignore_outputs``.
* Delete: ``DELETE /uploads/:upload_id/tracks/:track_id`` answers 202 ``{data: {type: "job",
  id}}``; the job id is the handle the pipeline stores before it polls. ``GET
  /job-results/:id`` answers 404 while the job runs, then 200 with ``attributes.status`` (the
  HTTP status the delete would have had) and ``payload`` (its body). Only a 2xx status is a
  delete; a 404 ``NOT_FOUND`` (there, or on the DELETE itself) means someone deleted the track
  first. Whether DatoCMS ever answers the DELETE synchronously is not documented [?]; a 200 or
  204 is taken as done. The job result's own id need not equal the job's (the docs' examples
  differ) [?], so it is not checked; a payload naming another track is refused.
* Errors: JSON:API ``{"data": [{"type": "api_error", "attributes": {"code", "details",
  "transient"}}]}``. The code goes into every message; ``transient: true`` makes an error
  transient even on a 4xx. The HTTP status of each code is not documented [?]: the adapter
  decides by code and ``transient``, never by status alone, and takes a 404 as "gone" only
  when it carries ``NOT_FOUND`` (a 404 from a wrong ``base_url`` must not mark jobs gone).
* Rate limits: 60 requests per 3 seconds by default (plan-dependent). ``HttpApi`` waits
  ``X-RateLimit-Reset`` seconds when an answer says ``X-RateLimit-Remaining: 0``, and retries
  a 429 after ``X-RateLimit-Reset``. Polls of ``/job-results`` count against the same limit [I].
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, NotRequired, TypedDict, cast
from urllib.parse import quote

from worker.domain import (
    AlreadyGone,
    Artifact,
    DeleteAnswer,
    Deleted,
    DeletePending,
    JobGone,
    JobSnapshot,
    LinkOrigin,
    ListedJob,
    Phase,
)
from worker.errors import (
    BadResponse,
    DeleteFailed,
    Kept,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    UnsafeInput,
    WorkerError,
)
from worker.json_types import JSONValue
from worker.keys import job_id_problem
from worker.logging import get_logger
from worker.providers.base import ApiOptions, ApiResponse, BaseProvider, need
from worker.providers.outputs import Path, unclaimed, unrecognised
from worker.specs.datocms import SPEC, DatoCmsSettings

log = get_logger(__name__)

STATUSES = {
    "preparing": Phase.RUNNING,
    "ready": Phase.SUCCEEDED,
    "errored": Phase.FAILED,
}
NOT_FOUND = "NOT_FOUND"
# The members of a track resource that name no data the delete destroys (specs/datocms.py).
INERT = SPEC.inert
# ignore_outputs names an attribute, or a top-level member.
ATTRIBUTES: tuple[Path, ...] = (("attributes",),)
# Every client error is read here rather than in HttpApi, so that DatoCMS's `transient` flag
# and its NOT_FOUND code decide; 429 stays with HttpApi, which waits and retries it.
CLIENT_ERRORS = tuple(status for status in range(400, 500) if status != 429)
CREDENTIALS_HINT = (
    "Check api_token: it must be a DatoCMS API token with access to the Content Management API"
)
# What to do about the codes a person can act on.
HINTS = {
    "INVALID_AUTHORIZATION_HEADER": CREDENTIALS_HINT,
    "INSUFFICIENT_PERMISSIONS": "Give the API token's role permission to read and edit uploads",
    "INVALID_ENVIRONMENT": "Check `environment`: it must name an existing environment, or be "
    "left out for the primary one",
    "ENVIRONMENT_NOT_READY": "The environment is still being created; the job will be tried again",
    "IMMUTABLE_UPLOAD_TRACKS_IN_SANDBOX_ENVIRONMENT": "DatoCMS refuses to delete tracks in a "
    "sandbox environment; point `environment` at the primary one, or hold the job",
    "INVALID_API_VERSION": "The worker sends X-Api-Version: 3; DatoCMS no longer accepts it",
    "INVALID_ACCEPT_HEADER": "The worker sends Accept: application/json; DatoCMS refused it",
}


# -- the track's media -------------------------------------------------------------------

# The archived name of a subtitle track's text, under the track's folder.
SUBTITLES = "subtitles.vtt"
# A subtitle track's WebVTT is read whole to be checked; real subtitles are far smaller [I].
MAX_WEBVTT_BYTES = 16 * 1024 * 1024
# ignore_outputs accepts losing a track type's media as "<type>_media".
MEDIA = "{}_media"
# What the stream host's refusal of a text track means [I]. Anything else (408, a 5xx, a
# timeout) may pass: the download error stands, and the job is tried again.
SIGNED = "a playback id that is not public, served only with a token the worker cannot sign"
REFUSALS = {401: SIGNED, 403: SIGNED, 404: "no such text track", 410: "no such text track"}
# Mux's ids are letters and digits (- and _ pass too); a playback id goes into the link's
# path, so nothing else does.
PLAYBACK_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
TYPE_WORD = re.compile(r"[a-z0-9_]{1,40}")
LANGUAGE = re.compile(r"[A-Za-z0-9-]{1,35}")  # BCP 47's alphabet, shown as it is
SUBTITLES_HINT = (
    'If you keep the subtitles elsewhere or can do without them, add "subtitles_media" to '
    "ignore_outputs for this provider to delete subtitle tracks without their text (none is "
    "archived then); until then the track stays at DatoCMS and is looked at again on a later "
    "sweep"
)
# The timings line of a cue: "[hh:]mm:ss.ttt --> [hh:]mm:ss.ttt", settings after.
_TIMESTAMP = r"(?:\d{2,}:)?[0-5]\d:[0-5]\d\.\d{3}"
_CUE_TIMINGS = re.compile(rf"^{_TIMESTAMP}[ \t]+-->[ \t]+{_TIMESTAMP}(?:[ \t].*)?$", re.M)


def webvtt_problem(body: bytes) -> str | None:
    """What makes ``body`` no WebVTT file with a cue in it, or None when it is one.

    W3C's WebVTT syntax: an optional UTF-8 BOM, then ``WEBVTT`` followed by the end, a space,
    a tab or a line break; a cue is a timings line ``[hh:]mm:ss.ttt --> [hh:]mm:ss.ttt`` (no
    NOTE or STYLE block may hold ``-->``). Cue text is not judged: this tells a subtitle
    file from an empty answer, an error page or another format, and the bytes are archived
    as served."""
    if not body:
        return "is empty"
    # The WebVTT decoder replaces bad bytes rather than failing, and so does this.
    text = body.decode("utf-8", errors="replace").removeprefix("\ufeff")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.startswith("WEBVTT") or text[6:7] not in ("", " ", "\t", "\n"):
        return "does not start with WEBVTT"
    if _CUE_TIMINGS.search(text) is None:
        return "has no cue"
    return None


class UploadTrack(TypedDict):
    """An upload_track resource (JSON:API, seed 004), as ``tracks_of`` has checked it."""

    id: str
    type: str
    # type, name, language_code, closed_captions, status, error: each read with a check.
    attributes: dict[str, JSONValue]
    relationships: NotRequired[JSONValue]


def track_of(record: JSONValue) -> UploadTrack:
    """A track resource read from a snapshot's record: its id and attributes checked."""
    need(record, "id", str, what="the track")
    need(record, "attributes", dict, what="the track")
    return cast("UploadTrack", record)


def track_label(track: UploadTrack) -> str:
    """The track as messages name it: ``subtitle track ID ('Italiano', it-IT)``."""
    attributes = track["attributes"]
    kind = attributes.get("type")
    word = "track"
    if isinstance(kind, str):
        word = {"subtitles": "subtitle track", "audio": "audio track"}.get(kind, word)
    name, language = attributes.get("name"), attributes.get("language_code")
    details = [repr(name[:80])] if isinstance(name, str) and name else []
    if isinstance(language, str) and language:
        details.append(language if LANGUAGE.fullmatch(language) else repr(language[:35]))
    label = f"{word} {track['id']}"
    return f"{label} ({', '.join(details)})" if details else label


def unfetchable(label: str, why: str) -> Kept:
    return Kept(
        f"{label}: its WebVTT text cannot be fetched ({why}), and the delete would destroy "
        "it: nothing deleted",
        reason="subtitles_unfetchable",
        hint=SUBTITLES_HINT,
    )


@dataclass(frozen=True, slots=True)
class WebVttCheck:
    """What the pipeline asks of a subtitle track's WebVTT before storing any of it
    (``domain.OutputCheck``)."""

    label: str
    source: str
    max_bytes: int

    def refused(self, status_code: int) -> WorkerError | None:
        why = REFUSALS.get(status_code)
        if why is None:
            return None
        return unfetchable(self.label, f"{self.source} answered HTTP {status_code}, {why}")

    def check(self, body: bytes) -> None:
        problem = webvtt_problem(body)
        if problem is not None:
            raise Kept(
                f"{self.label}: its WebVTT text at {self.source} {problem}, so it cannot stand "
                "in for the text the delete would destroy: nothing deleted",
                reason="subtitles_invalid",
                hint=SUBTITLES_HINT,
            )


@dataclass(frozen=True, slots=True)
class ApiError:
    """One entry of a JSON:API error document."""

    code: str
    transient: bool


def api_errors(data: JSONValue) -> list[ApiError]:
    """The errors of a DatoCMS error document; [] for anything else. Never raises."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    found: list[ApiError] = []
    for item in items:
        attributes = item.get("attributes") if isinstance(item, dict) else None
        if not isinstance(attributes, dict):
            continue
        code = attributes.get("code")
        if isinstance(code, str) and code:
            found.append(ApiError(code=code[:100], transient=attributes.get("transient") is True))
    return found


def codes_of(errors: Sequence[ApiError]) -> str:
    return ", ".join(e.code for e in errors) or "no DatoCMS error code"


def error_detail(status: int, data: JSONValue) -> str | None:
    errors = api_errors(data)
    return codes_of(errors) if errors else None


def is_not_found(data: JSONValue) -> bool:
    return any(e.code == NOT_FOUND for e in api_errors(data))


def phase_of(status: JSONValue) -> Phase:
    return STATUSES.get(status.lower(), Phase.UNKNOWN) if isinstance(status, str) else Phase.UNKNOWN


def split_job_id(job_id: str) -> tuple[str, str]:
    """``UPLOAD_ID/TRACK_ID`` as its two parts, or UnsafeInput naming the expected form."""
    parts = job_id.split("/")
    if len(parts) != 2 or any(part in ("", ".", "..") for part in parts):
        raise UnsafeInput(
            f"job id {job_id!r} is not of the form UPLOAD_ID/TRACK_ID",
            hint="Track a DatoCMS job as the upload's id and the track's id joined by one '/'",
        )
    return parts[0], parts[1]


def status_of(track: UploadTrack) -> str:
    status = track["attributes"].get("status")
    return status if isinstance(status, str) else ""


def tracks_of(answer: JSONValue, upload_id: str) -> list[UploadTrack]:
    """The track resources of ``GET /uploads/:id/tracks``, checked; BadResponse otherwise."""
    what = f"the track listing of upload {upload_id}"
    items = need(answer, "data", list, what=what)
    tracks: list[UploadTrack] = []
    seen: set[str] = set()
    for item in items:
        track_id = need(item, "id", str, what=f"a track of upload {upload_id}")
        if not track_id or "/" in track_id:
            raise BadResponse(f"{what} has a track with the unusable id {track_id!r}")
        if item.get("type") != "upload_track":
            raise BadResponse(f"{what} has an entry of type {item.get('type')!r}, not a track")
        need(item, "attributes", dict, what=f"track {track_id}")
        owner = _related_upload(item)
        if owner is not None and owner != upload_id:
            raise BadResponse(f"{what} has track {track_id}, which belongs to upload {owner}")
        if track_id in seen:
            raise BadResponse(f"{what} lists track {track_id} twice")
        seen.add(track_id)
        tracks.append(cast("UploadTrack", item))
    return tracks


def _related_upload(item: dict[str, JSONValue]) -> str | None:
    relation = item.get("relationships")
    upload = relation.get("upload") if isinstance(relation, dict) else None
    data = upload.get("data") if isinstance(upload, dict) else None
    owner = data.get("id") if isinstance(data, dict) else None
    return owner if isinstance(owner, str) else None


def unrecognised_of(track: JSONValue, ignored: frozenset[str] = frozenset()) -> list[Path]:
    """File references in a track resource, less the attributes named in ``ignored``."""
    return unclaimed(track, inert=INERT, ignored=ignored, containers=ATTRIBUTES)


def job_of(answer: JSONValue) -> str:
    """The asynchronous job's id from a 202 answer."""
    job = need(answer, "data", dict, what="the delete's 202 answer")
    if job.get("type") != "job":
        raise BadResponse(f"the delete's 202 answer is a {job.get('type')!r}, not a job")
    handle: str = need(job, "id", str, what="the delete's job")
    if not handle or len(handle) > 255:
        raise BadResponse("the delete's job id is empty or longer than 255 characters")
    return handle


def job_result_of(answer: JSONValue) -> tuple[int, JSONValue]:
    """``(attributes.status, payload)`` of a finished job result."""
    result = need(answer, "data", dict, what="the job result")
    if result.get("type") != "job_result":
        raise BadResponse(f"the job result is a {result.get('type')!r}, not a job_result")
    attributes = need(result, "attributes", dict, what="the job result")
    status = need(attributes, "status", int, what="the job result's attributes")
    if not 100 <= status <= 599:
        raise BadResponse(f"the job result's status {status} is not an HTTP status")
    return status, attributes.get("payload")


class DatoCmsProvider(BaseProvider[DatoCmsSettings]):
    type: ClassVar[str] = SPEC.type
    # Only the uploads in `upload_ids` are listed; with none, jobs come from `retention track`.
    lists_jobs: ClassVar[bool] = SPEC.lists_jobs

    @classmethod
    def job_id_problem(cls, job_id: str) -> str | None:
        # One folder per track, under its upload's: UPLOAD_ID/TRACK_ID, each part a segment.
        problem = job_id_problem(job_id, segments=2)
        if problem is None:
            return None
        return f"{problem}: a DatoCMS job is UPLOAD_ID/TRACK_ID, the upload's and the track's ids"

    @classmethod
    def api_options(cls, settings: DatoCmsSettings) -> ApiOptions:
        headers = {
            "Authorization": f"Bearer {settings.api_token.get_secret_value()}",
            "Accept": "application/json",
            "X-Api-Version": "3",
        }
        if settings.environment:
            headers["X-Environment"] = settings.environment
        return {"headers": headers, "error_detail": error_detail}

    # -- requests ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        ok: Sequence[int] = (200,),
        gone_ok: bool = False,
        params: Mapping[str, str | int] | None = None,
    ) -> ApiResponse:
        """One API call. With ``gone_ok`` a 404 NOT_FOUND is returned, not raised."""
        answer = self.api.request(
            method, path, params=params, ok=ok, accept=CLIENT_ERRORS, what=what
        )
        if answer.status in ok or (gone_ok and answer.status == 404 and is_not_found(answer.data)):
            return answer
        raise self._refusal(answer.status, answer.data, what)

    def _tracks(self, upload_id: str) -> ApiResponse:
        return self._call(
            "GET",
            f"/uploads/{quote(upload_id, safe='')}/tracks",
            gone_ok=True,
            what=f"listing the tracks of upload {upload_id}",
        )

    # -- the protocol ------------------------------------------------------------------------

    def list_jobs(self) -> Iterator[list[ListedJob]]:
        for upload_id in dict.fromkeys(self.settings.upload_ids):
            answer = self._tracks(upload_id)
            if answer.status == 404:
                # One upload removed from DatoCMS must not hide the others' tracks.
                log.warning(
                    "datocms_upload_missing",
                    provider=self.name,
                    upload_id=upload_id,
                    hint="remove it from upload_ids",
                )
                continue
            page = [
                ListedJob(
                    job_id=f"{upload_id}/{track['id']}",
                    status=status_of(track),
                    phase=phase_of(status_of(track)),
                )
                for track in tracks_of(answer.data, upload_id)
            ]
            if page:
                yield page

    def get_job(self, job_id: str) -> JobSnapshot | JobGone:
        upload_id, track_id = self._parts(job_id)
        answer = self._tracks(upload_id)
        if answer.status == 404:
            return JobGone(job_id=job_id, answer={"status_code": 404, "body": answer.data})
        for track in tracks_of(answer.data, upload_id):
            if track["id"] == track_id:
                status = status_of(track)
                return JobSnapshot(
                    job_id=job_id,
                    status=status,
                    phase=phase_of(status),
                    finished_at=None,
                    # The listing's own object: a JSON object, whatever else it holds.
                    record=cast("dict[str, JSONValue]", track),
                )
        return JobGone(
            job_id=job_id,
            answer={"status_code": answer.status, "reason": "not among the upload's tracks"},
        )

    def artifacts(self, snapshot: JobSnapshot) -> list[Artifact]:
        unknown = unrecognised_of(snapshot.record, frozenset(self.settings.ignore_outputs))
        if unknown:
            raise unrecognised(unknown, containers=ATTRIBUTES).for_job(self.name, snapshot.job_id)
        try:
            return self._media(snapshot)
        except Kept as exc:
            raise exc.for_job(self.name, snapshot.job_id) from None

    def _media(self, snapshot: JobSnapshot) -> list[Artifact]:
        """The track's media at Mux, which the delete destroys with the track [I]."""
        track = track_of(snapshot.record)
        if snapshot.phase == Phase.FAILED:
            return []  # an errored track never became media at Mux [I]
        kind = track["attributes"].get("type")
        label = track_label(track)
        if isinstance(kind, str) and MEDIA.format(kind) in self.settings.ignore_outputs:
            return []
        if kind == "audio":
            raise Kept(
                f"{label}: Mux serves an audio track only inside the video's stream, not as a "
                "file of its own, so the worker cannot archive what the delete would destroy: "
                "nothing deleted",
                reason="audio_track",
                hint='Add "audio_media" to ignore_outputs for this provider to delete audio '
                "tracks with only their record archived; until then the track stays at "
                "DatoCMS and is looked at again on a later sweep",
            )
        if kind != "subtitles":
            accept = (
                f'Archive its media by hand and add "{MEDIA.format(kind)}" to ignore_outputs '
                "for this provider to accept losing it, or hold the job"
                if isinstance(kind, str) and TYPE_WORD.fullmatch(kind)
                else "Hold the job, and report the type"
            )
            raise Kept(
                f"{label} is of type {str(kind)[:40]!r}, which DatoCMS does not document, so "
                "the worker does not know what media the delete would destroy: nothing deleted",
                reason="unrecognised_output",
                hint=f"{accept}; it is looked at again on a later sweep",
            )
        upload_id, track_id = self._parts(snapshot.job_id)
        playback_id = self._playback_id(upload_id)
        if playback_id is None:
            raise unfetchable(label, f"upload {upload_id} has no mux_playback_id")
        url = (
            f"{self.settings.stream_base_url}/{quote(playback_id, safe='')}"
            f"/text/{quote(track_id, safe='')}.vtt"
        )
        check = WebVttCheck(label=label, source=url, max_bytes=MAX_WEBVTT_BYTES)
        return [Artifact(name=SUBTITLES, source=url, origin=LinkOrigin(url), check=check)]

    def _playback_id(self, upload_id: str) -> str | None:
        """The upload's Mux playback id (``GET /uploads/:id``), or None when it has none."""
        what = f"upload {upload_id}"
        answer = self._call(
            "GET", f"/uploads/{quote(upload_id, safe='')}", gone_ok=True, what=f"reading {what}"
        )
        if answer.status == 404:
            # Its track was listed a moment ago; the next read of the track says whether the
            # two are gone.
            raise BadResponse(f"{what} answered NOT_FOUND while its track was being archived")
        upload = need(answer.data, "data", dict, what=what)
        if upload.get("id") != upload_id:
            raise BadResponse(f"reading {what} answered upload {str(upload.get('id'))[:64]!r}")
        attributes = need(upload, "attributes", dict, what=what)
        playback_id = attributes.get("mux_playback_id")
        if playback_id is None or playback_id == "":
            return None
        if not isinstance(playback_id, str) or not PLAYBACK_ID.fullmatch(playback_id):
            raise BadResponse(f"{what} has an unusable mux_playback_id")
        return playback_id

    def delete(self, job_id: str) -> DeleteAnswer:
        upload_id, track_id = self._parts(job_id)
        answer = self._call(
            "DELETE",
            f"/uploads/{quote(upload_id, safe='')}/tracks/{quote(track_id, safe='')}",
            ok=(200, 202, 204),
            gone_ok=True,
            what=f"deleting track {job_id}",
        )
        if answer.status == 404:
            return AlreadyGone(status_code=404, body=answer.data)
        if answer.status == 202:
            return DeletePending(handle=job_of(answer.data), status_code=202, body=answer.data)
        return Deleted(status_code=answer.status, body=answer.data)

    def poll_delete(self, job_id: str, handle: str) -> DeleteAnswer:
        _upload_id, track_id = self._parts(job_id)
        what = f"polling the delete of track {job_id} (job {handle})"
        answer = self.api.request(
            "GET",
            f"/job-results/{quote(handle, safe='')}",
            accept=CLIENT_ERRORS,
            what=what,
        )
        if answer.status == 404:  # DatoCMS's way of saying "still running"
            return DeletePending(handle=handle, status_code=404, body=answer.data)
        if answer.status != 200:
            raise self._refusal(answer.status, answer.data, what)
        status, payload = job_result_of(answer.data)
        if 200 <= status < 300:
            deleted = payload.get("data") if isinstance(payload, dict) else None
            named = deleted.get("id") if isinstance(deleted, dict) else None
            if isinstance(named, str) and named != track_id:
                raise BadResponse(f"job {handle} reports deleting track {named}, not {track_id}")
            return Deleted(status_code=status, body=payload)
        if status == 404 and is_not_found(payload):
            return AlreadyGone(status_code=404, body=payload)
        # The job is finished and will never change: its handle is spent either way.
        failure = self._refusal(status, payload, f"the delete of track {job_id} (job {handle})")
        raise DeleteFailed(failure.message, hint=failure.hint, permanent=failure.permanent)

    def _refusal(self, status: int, data: JSONValue, what: str) -> ProviderError:
        """``refusal``, naming this account, with any credential DatoCMS repeated blanked."""
        error = refusal(status, data, what, scrub=self.api.redactor.scrub)
        error.for_job(self.name)
        return error

    def check_credentials(self) -> None:
        self._call("GET", "/uploads", params={"page[limit]": 1}, what="checking the API token")

    def _parts(self, job_id: str) -> tuple[str, str]:
        try:
            return split_job_id(job_id)
        except UnsafeInput as exc:
            raise exc.for_job(self.name, job_id) from None


def refusal(
    status: int, data: JSONValue, what: str, *, scrub: Callable[[str], str] = str
) -> ProviderError:
    """The error for a DatoCMS error answer: transient when DatoCMS says so, a bad response
    for a 404 without NOT_FOUND, else a refusal. ``scrub`` blanks what must not be shown
    (the caller's credentials)."""
    errors = api_errors(data)
    detail = scrub(codes_of(errors))
    if any(e.transient for e in errors) or status >= 500:
        why = "DatoCMS marked the error transient" if status < 500 else "DatoCMS is failing"
        return ProviderUnavailable(
            f"{what} answered {status}: {detail}", hint=f"{why}; the job will be tried again"
        )
    if status == 404 and not is_not_found(data):
        # Not DatoCMS's word about the track (a gateway's, or a wrong base URL's): never
        # gone, and not for a person to retry job by job once base_url is fixed.
        return BadResponse(
            f"{what} answered 404 without DatoCMS's NOT_FOUND error ({detail})",
            hint="Check base_url; nothing is marked gone, and the job is read again on a "
            "later sweep",
        )
    hint = next((HINTS[e.code] for e in errors if e.code in HINTS), None)
    if hint is None and status in (401, 403):
        hint = CREDENTIALS_HINT
    return ProviderRejected(f"{what} answered {status}: {detail}", hint=hint)
