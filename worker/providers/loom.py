"""Loom Analytics' Claudio transcription API (shared/providers.md section 2; seed 001).

* Auth: ``key`` and ``secret`` travel in the JSON body of every call, never in a URL or a
  header. The docs do not name the HTTP method; every call is a POST because a body carries
  the credentials [I].
* Discovery: Loom has no list endpoint, so jobs come from ``retention track``.
* Status: ``POST {base_url}/jobs/{ref}/details``. The message prefix decides: ``SUCCESS:``
  with ``output_files`` present is succeeded; ``ERROR:`` is failed; ``NOTICE:``, or
  ``output_files`` still null, is running; anything else is unknown and never terminal.
  ``job_info.status`` is ignored: the docs show "completed" even for running and failed jobs.
* Retention clock: ``job_info.completed_at`` when it parses (its format is not documented
  [?]), otherwise the worker's first sighting of the terminal job.
* Outputs: every ``input_files[]``, ``transcripts[]``, ``processed_input_media[]`` and the
  ``extracted_fields_url``, because the delete removes audio, documents and transcripts
  alike (a failed job's inputs too). Links expire (TTL [?]), so ``artifacts`` reads the
  details again for fresh ones; each input is checked against its ``file_size``.
* Delete: ``POST {base_url}/jobs/{ref}/delete`` is synchronous. ``SUCCESS: ... deleted``
  is a delete; the documented "already deleted" answer is a ``SUCCESS:`` message whose every
  part says "NOTICE: Unexpected error during delete ... not deleted".
* Errors: 400 "Unexpected error occurred", 401 "User not authorized", 500. Bodies carry a
  ``msg`` with its prefix and sometimes an ``err_code``; ``ERR_C_TA_DJTA_001`` ("Job data
  not found") means the job does not exist. Its HTTP status is not documented [I: 400], so
  it is read from the body of a 200 or a 400 alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

from worker.domain import (
    AlreadyGone,
    Artifact,
    DeleteAnswer,
    Deleted,
    JobGone,
    JobSnapshot,
    LinkOrigin,
    Phase,
    is_terminal,
)
from worker.errors import BadResponse, ProviderError, ProviderRejected
from worker.keys import strip_query
from worker.providers.base import ApiOptions, BaseProvider, ErrorDetail, need
from worker.settings import LoomSettings

GONE_CODE = "ERR_C_TA_DJTA_001"
# A reference no job can have: asking for its details costs Loom one lookup, touches no
# job, and goes through the same endpoint and authentication as the worker's real calls.
CREDENTIAL_CHECK_REF = "retention-worker-credential-check"
# The documented already-deleted answer repeats this before each part it did not delete.
DELETE_NOTICE = "NOTICE: Unexpected error during delete"

_PREFIX = re.compile(r"^\s*([A-Za-z_]{1,32})\s*:")
# ISO-8601 with a time of day to the second, or Loom-style "YYYY-MM-DD HH:MM:SS". A bare
# date is refused: read as midnight it could start the retention clock up to a day early.
_TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:?\d{2})?$"
)
_PART = re.compile(r"([A-Za-z][A-Za-z ]*?)\s+(not\s+)?deleted\b", re.IGNORECASE)
_MAX_DETAIL = 200


def prefix_of(msg: str) -> str:
    """The word before the first colon of a message, lowercased ("success"), or ""."""
    match = _PREFIX.match(msg)
    return match.group(1).lower() if match else ""


def phase_of(prefix: str, success: Any, output_files: Any) -> Phase:
    """Translate a details answer. A ``success`` flag that contradicts the message makes
    the job unknown rather than terminal: a delete must not follow a confused answer."""
    if prefix == "error":
        return Phase.FAILED if success is not True else Phase.UNKNOWN
    if prefix == "notice":
        return Phase.RUNNING
    if prefix == "success":
        if success is False:
            return Phase.UNKNOWN
        return Phase.RUNNING if output_files is None else Phase.SUCCEEDED
    return Phase.UNKNOWN


def finished_at_of(value: Any) -> datetime | None:
    """``completed_at`` as an aware UTC time, or None when it is absent or not understood.

    Loom does not document the format [?]: ISO-8601 (``Z``, an offset, or naive meaning UTC)
    and "YYYY-MM-DD HH:MM:SS" (UTC) are accepted. Anything else starts the retention clock
    at the worker's first sighting instead. The docs' examples fill ``completed_at`` with
    "submission timestamp"; if Loom really sends the submission time, the clock starts early
    by the job's processing time, which is small next to retention periods in days.
    """
    if not isinstance(value, str) or not _TIMESTAMP.match(value.strip()):
        return None
    text = value.strip()
    # fromisoformat takes at most microseconds; some servers send nanoseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_DETAIL else flat[: _MAX_DETAIL - 3] + "..."


def describe_answer(data: Any, secrets: tuple[str, ...] = ()) -> str | None:
    """Loom's message and error code on one short line, for an error message. ``secrets``
    (our key and secret) are blanked, should Loom ever echo them."""
    if not isinstance(data, Mapping):
        return None
    msg = data.get("msg")
    code = data.get("err_code")
    parts = []
    if isinstance(msg, str) and msg.strip(" .\n"):
        # Loom ends its messages with ". "; the error adds its own full stop.
        parts.append(_shorten(_blank(msg, secrets)).rstrip(" ."))
    if isinstance(code, str) and code:
        parts.append(f"({_shorten(_blank(code, secrets))})")
    return " ".join(parts) or None


def _blank(text: str, secrets: tuple[str, ...]) -> str:
    # Before any shortening, so a cut cannot leave half a secret behind.
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def error_detail_without(secrets: tuple[str, ...]) -> ErrorDetail:
    """The detail ``HttpApi`` adds to its errors: ``describe_answer`` without our secrets."""

    def detail(status: int, data: Any) -> str | None:
        return describe_answer(data, secrets)

    return detail


def is_gone(data: Any) -> bool:
    """Loom's "Job data not found", unless the rest of the answer contradicts it."""
    if not isinstance(data, Mapping) or data.get("err_code") != GONE_CODE:
        return False
    msg = data.get("msg")
    prefix = prefix_of(msg) if isinstance(msg, str) else ""
    return data.get("success") is not True and prefix not in ("success", "notice")


def _secrets_of(settings: LoomSettings) -> tuple[str, ...]:
    return (settings.key.get_secret_value(), settings.secret.get_secret_value())


@dataclass(frozen=True, slots=True)
class LoomFile:
    name: str  # the artifact name: "<section>/<filename>"
    url: str
    size: int | None


def _link(item: Any, key: str, *, what: str) -> str:
    url: str = need(item, key, str, what=what)
    if not url.strip():
        raise BadResponse(f"{what} has an empty {key!r}")
    return url


def _filename(item: Any, *, what: str) -> str:
    name: str = need(item, "filename", str, what=what)
    if not name.strip():
        raise BadResponse(f"{what} has an empty 'filename'")
    return name


def _entries(container: Any, key: str, *, what: str, required: bool) -> list[Any]:
    value = container.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise BadResponse(f"{what} has no list field {key!r}")
    return value


def files_of(record: Any) -> list[LoomFile]:
    """Every file a job's details name: inputs first, then the outputs, if any."""
    job_data = need(record, "job_data", dict, what="the job details")
    job_files = need(job_data, "job_files", dict, what="the job details' job_data")
    found: list[LoomFile] = []
    inputs = _entries(job_files, "input_files", what="the job's job_files", required=True)
    for position, item in enumerate(inputs):
        what = f"input_files[{position}]"
        name = _filename(item, what=what)
        url = _link(item, "download_url", what=what)
        size = need(item, "file_size", int, what=what)
        if size < 0:
            raise BadResponse(f"{what} declares a negative file_size")
        found.append(LoomFile(f"inputs/{name}", url, size))
    outputs = job_files.get("output_files")
    if outputs is None:
        return found
    if not isinstance(outputs, dict):
        raise BadResponse("the job's output_files is neither null nor an object")
    for section in ("transcripts", "processed_input_media"):
        for position, item in enumerate(
            _entries(outputs, section, what="the job's output_files", required=False)
        ):
            what = f"output_files.{section}[{position}]"
            name = _filename(item, what=what)
            found.append(
                LoomFile(f"{section}/{name}", _link(item, "download_url", what=what), None)
            )
    if outputs.get("extracted_fields_url") is not None:
        url = _link(outputs, "extracted_fields_url", what="the job's output_files")
        found.append(LoomFile("extracted_fields.json", url, None))
    return found


def read_details(
    job_id: str, status_code: int, data: Any, *, secrets: tuple[str, ...] = ()
) -> JobSnapshot | JobGone:
    """A details answer as our types; BadResponse for any shape Loom does not document."""
    if not isinstance(data, Mapping):
        raise BadResponse(f"the details of job {job_id} are not a JSON object")
    if is_gone(data):
        return JobGone(job_id=job_id, answer={"status_code": status_code, "body": data})
    msg = need(data, "msg", str, what=f"the details of job {job_id}")
    success = data.get("success")
    if success is not None and not isinstance(success, bool):
        raise BadResponse(f"the details of job {job_id} have a non-boolean 'success'")
    if not isinstance(data.get("job_data"), dict):
        raise BadResponse(
            f"the details of job {job_id} carry no job_data: {describe_answer(data, secrets)}",
            hint="The job will be read again on a later sweep",
        )
    job_info = need(data["job_data"], "job_info", dict, what=f"the details of job {job_id}")
    returned = need(job_info, "job_reference_id", str, what=f"the job_info of job {job_id}")
    if returned != job_id:
        raise BadResponse(f"asked for job {job_id}, Loom answered with job {returned}")
    files_of(data)  # refuse a malformed file list before anything is decided
    prefix = prefix_of(msg)
    output_files = data["job_data"]["job_files"].get("output_files")
    phase = phase_of(prefix, success, output_files)
    terminal = is_terminal(phase)
    return JobSnapshot(
        job_id=job_id,
        # The message's word, not job_info.status, which the docs show as "completed" in
        # every state: "success", "notice", "error", or whatever word Loom adds later.
        status=prefix or "unrecognised",
        phase=phase,
        finished_at=finished_at_of(job_info.get("completed_at")) if terminal else None,
        record=dict(data),
    )


def read_delete(
    job_id: str, status_code: int, data: Any, *, secrets: tuple[str, ...] = ()
) -> DeleteAnswer:
    """A delete answer as our types. ProviderRejected when Loom refuses; BadResponse when
    the answer is not one Loom documents (the delete is then sent again later)."""
    if not isinstance(data, Mapping):
        raise BadResponse(f"the answer to deleting job {job_id} is not a JSON object")
    if is_gone(data):
        return AlreadyGone(status_code=status_code, body=data)
    detail = describe_answer(data, secrets)
    if status_code != 200:
        raise ProviderRejected(f"deleting job {job_id} answered {status_code}: {detail}")
    msg = need(data, "msg", str, what=f"the answer to deleting job {job_id}")
    prefix = prefix_of(msg)
    if prefix == "error":
        raise ProviderRejected(
            f"Loom refused to delete job {job_id}: {detail}",
            hint="The archive is complete and the delete will be sent again on a later sweep; "
            "check the job at Loom",
        )
    if prefix != "success":
        raise BadResponse(f"the answer to deleting job {job_id} is not documented: {detail}")
    parts = _PART.findall(msg)
    kept = [" ".join(name.split()) for name, negated in parts if negated]
    if DELETE_NOTICE.lower() not in msg.lower() or not kept:
        return Deleted(status_code=status_code, body=data)
    if len(kept) == len(parts):
        # Nothing was there to delete: the documented answer for a job already deleted.
        return AlreadyGone(status_code=status_code, body=data)
    return Deleted(
        status_code=status_code,
        body=data,
        warning=f"Loom reported an unexpected error and did not delete: {', '.join(kept)}",
    )


class LoomProvider(BaseProvider[LoomSettings]):
    type: ClassVar[str] = "loom"
    lists_jobs: ClassVar[bool] = False

    @classmethod
    def api_options(cls, settings: LoomSettings) -> ApiOptions:
        return {
            "headers": {"Accept": "application/json"},
            "error_detail": error_detail_without(_secrets_of(settings)),
        }

    def _path(self, job_id: str, action: str) -> str:
        return f"/jobs/{quote(job_id, safe='')}/{action}"

    def _secrets(self) -> tuple[str, ...]:
        return _secrets_of(self.settings)

    def _credentials(self) -> dict[str, str]:
        key, secret = _secrets_of(self.settings)
        return {"key": key, "secret": secret}

    def _details(self, job_id: str, what: str) -> JobSnapshot | JobGone:
        answer = self.api.request(
            "POST",
            self._path(job_id, "details"),
            json_body=self._credentials(),
            accept=(400,),
            what=what,
        )
        if answer.status == 400:
            data = answer.data
            # A 400 is read only when it is "not found" or a failed job's full details (the
            # status of either is not documented); Loom's generic 400 is a refusal.
            failed_job = (
                isinstance(data, Mapping)
                and isinstance(data.get("msg"), str)
                and prefix_of(data["msg"]) == "error"
                and isinstance(data.get("job_data"), dict)
            )
            if not (is_gone(data) or failed_job):
                detail = describe_answer(data, self._secrets())
                raise ProviderRejected(f"{what} answered 400: {detail}")
        return read_details(job_id, answer.status, answer.data, secrets=self._secrets())

    def get_job(self, job_id: str) -> JobSnapshot | JobGone:
        return self._details(job_id, f"reading job {job_id}")

    def artifacts(self, snapshot: JobSnapshot) -> list[Artifact]:
        job_id = snapshot.job_id
        fresh = self._details(job_id, f"reading job {job_id} again for fresh download links")
        if isinstance(fresh, JobGone):
            raise ProviderError(
                f"Loom answered {GONE_CODE} (job data not found) when asked for fresh "
                "download links, moments after describing the job",
                hint="Nothing was deleted; the job will be read again on a later sweep",
                permanent=False,
            )
        if not fresh.terminal:
            raise ProviderError(
                f"Loom now reports the job as {fresh.status!r} ({fresh.phase.value}), "
                "no longer finished",
                hint="Nothing was deleted; the job will be read again on a later sweep",
                permanent=False,
            )
        return [
            Artifact(
                name=file.name,
                source=strip_query(file.url),
                origin=LinkOrigin(url=file.url),
                size=file.size,
            )
            for file in files_of(fresh.record)
        ]

    def delete(self, job_id: str) -> DeleteAnswer:
        answer = self.api.request(
            "POST",
            self._path(job_id, "delete"),
            json_body=self._credentials(),
            accept=(400,),
            what=f"deleting job {job_id}",
        )
        return read_delete(job_id, answer.status, answer.data, secrets=self._secrets())

    def check_credentials(self) -> None:
        # Loom has no list or account endpoint. A 401 means a bad key or secret; "Job data
        # not found" means Loom accepted them.
        self._details(CREDENTIAL_CHECK_REF, "checking the key and secret")
