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
* The whole-record walk (``providers/outputs.py``) over those fresh details: Loom's delete
  "deletes all job data" [V L-delete], so nothing in the record is known to survive it. Each
  item's ``download_url`` and the ``extracted_fields_url`` map to the artifacts above; the
  other fields the seed documents (the message, ``job_info``, and each file's name, type,
  size and language) name no data of their own and are declared in ``INERT``. Every other
  reference is unrecognised and keeps the job (``Kept(reason="unrecognised_output")``,
  naming its JSON path): an ``output_files`` key other than the three documented ones (any
  non-empty value, with or without links, is an output nobody archived), a second link or a
  key in a known item, a reference anywhere else. An ``output_files`` key named in
  ``ignore_outputs`` is neither archived nor a reason to keep (that includes the known ones:
  the operator said so); so is a ``job_files`` key (``input_files`` included), or the
  top-level field for a reference outside ``job_files``.
* Delete: ``POST {base_url}/jobs/{ref}/delete`` is synchronous. ``SUCCESS: ... deleted``
  is a delete. A ``SUCCESS:`` message that says some parts were "NOTICE: Unexpected error
  during delete ... not deleted" and others deleted is a partial delete:
  ``DeleteIncomplete``, so the delete is sent again, never recorded as done. When every part
  says "not deleted" it is the documented answer for a job already deleted, or a delete that
  failed throughout: the adapter reads the details again, and only Loom's "Job data not
  found" (``ERR_C_TA_DJTA_001``) makes it ``AlreadyGone``; details that still show the job
  are ``DeleteIncomplete``.
* Errors: 400 "Unexpected error occurred", 401 "User not authorized", 500. Bodies carry a
  ``msg`` with its prefix and sometimes an ``err_code``; ``ERR_C_TA_DJTA_001`` ("Job data
  not found") means the job does not exist. Its HTTP status is not documented [I: 400], so
  it is read from the body of a 200 or a 400 alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, NotRequired, TypedDict, cast
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
from worker.errors import BadResponse, DeleteIncomplete, ProviderError, ProviderRejected
from worker.json_types import JSONValue
from worker.keys import strip_query
from worker.providers.base import ApiOptions, BaseProvider, ErrorDetail, need
from worker.providers.outputs import Path, unclaimed, unrecognised, within
from worker.specs.loom import OUTPUT_LISTS, SPEC, LoomSettings

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
JOB_FILES: Path = ("job_data", "job_files")
OUTPUT_FILES: Path = (*JOB_FILES, "output_files")
FIELDS_URL = "extracted_fields_url"
# Where ignore_outputs names sections: an output_files key, else a job_files key.
CONTAINERS: tuple[Path, ...] = (OUTPUT_FILES, JOB_FILES)
# The fields of Loom's job details that name no data its delete destroys (specs/loom.py).
INERT = SPEC.inert


class LoomJobData(TypedDict):
    """``job_data`` of Loom's details (seed 001), as ``files_of`` has checked it."""

    job_info: dict[str, JSONValue]
    job_files: dict[str, JSONValue]


class LoomDetails(TypedDict):
    """Loom's details answer, the parts the adapter reads, once ``files_of`` has checked
    them (the rest of the record is walked, not read)."""

    msg: NotRequired[str]
    success: NotRequired[bool | None]
    err_code: NotRequired[str]
    job_data: LoomJobData


def checked(record: JSONValue) -> LoomDetails:
    """A details answer whose ``job_data.job_info`` and ``job_data.job_files`` are objects;
    BadResponse for any other."""
    job_data = need(record, "job_data", dict, what="the job details")
    need(job_data, "job_info", dict, what="the job details' job_data")
    need(job_data, "job_files", dict, what="the job details' job_data")
    return cast("LoomDetails", record)


def prefix_of(msg: str) -> str:
    """The word before the first colon of a message, lowercased ("success"), or ""."""
    match = _PREFIX.match(msg)
    return match.group(1).lower() if match else ""


def phase_of(prefix: str, success: JSONValue, output_files: JSONValue) -> Phase:
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


def finished_at_of(value: JSONValue) -> datetime | None:
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


def describe_answer(data: JSONValue, secrets: tuple[str, ...] = ()) -> str | None:
    """Loom's message and error code on one short line, for an error message. ``secrets``
    (our key and secret) are blanked, should Loom ever echo them."""
    if not isinstance(data, dict):
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

    def detail(status: int, data: JSONValue) -> str | None:
        return describe_answer(data, secrets)

    return detail


def is_gone(data: JSONValue) -> bool:
    """Loom's "Job data not found", unless the rest of the answer contradicts it."""
    if not isinstance(data, dict) or data.get("err_code") != GONE_CODE:
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
    # Where its link is in the details, e.g. job_data.job_files.input_files[0].download_url.
    path: Path = ()
    # The job_files key for inputs, the output_files key for outputs.
    section: str = ""


def _link(item: JSONValue, key: str, *, what: str) -> str:
    url: str = need(item, key, str, what=what)
    if not url.strip():
        raise BadResponse(f"{what} has an empty {key!r}")
    return url


def _filename(item: JSONValue, *, what: str) -> str:
    name: str = need(item, "filename", str, what=what)
    if not name.strip():
        raise BadResponse(f"{what} has an empty 'filename'")
    return name


def _entries(
    container: dict[str, JSONValue], key: str, *, what: str, required: bool
) -> list[JSONValue]:
    value = container.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise BadResponse(f"{what} has no list field {key!r}")
    return value


def files_of(record: JSONValue) -> list[LoomFile]:
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
        path = (*JOB_FILES, "input_files", position, "download_url")
        found.append(LoomFile(f"inputs/{name}", url, size, path, "input_files"))
    outputs = job_files.get("output_files")
    if outputs is None:
        return found
    if not isinstance(outputs, dict):
        raise BadResponse("the job's output_files is neither null nor an object")
    for section in OUTPUT_LISTS:
        for position, item in enumerate(
            _entries(outputs, section, what="the job's output_files", required=False)
        ):
            what = f"output_files.{section}[{position}]"
            name = _filename(item, what=what)
            url = _link(item, "download_url", what=what)
            path = (*OUTPUT_FILES, section, position, "download_url")
            found.append(LoomFile(f"{section}/{name}", url, None, path, section))
    if outputs.get(FIELDS_URL) is not None:
        url = _link(outputs, FIELDS_URL, what="the job's output_files")
        path = (*OUTPUT_FILES, FIELDS_URL)
        found.append(LoomFile("extracted_fields.json", url, None, path, FIELDS_URL))
    return found


def unrecognised_of(record: JSONValue, ignored: frozenset[str] = frozenset()) -> list[Path]:
    """The file references in a job's details that ``files_of`` does not account for, less
    the sections in ``ignored``. An ``output_files`` key Loom does not document is an output
    even when it carries no link: its own path stands for it then."""
    claimed = {file.path for file in files_of(record)}
    found = unclaimed(record, claimed=claimed, inert=INERT, ignored=ignored, containers=CONTAINERS)
    outputs = checked(record)["job_data"]["job_files"].get("output_files") or {}
    assert isinstance(outputs, dict)  # files_of refused any other
    for key, value in outputs.items():
        if key in (*OUTPUT_LISTS, FIELDS_URL) or key in ignored:
            continue
        path = (*OUTPUT_FILES, key)
        if value not in (None, "", [], {}) and not any(within(p, path) for p in found):
            found.append(path)
    return found


def parts_of(msg: str) -> tuple[list[str], list[str]]:
    """The parts a delete message names: ``(deleted, not deleted)``."""
    deleted: list[str] = []
    kept: list[str] = []
    for name, negated in _PART.findall(msg):
        (kept if negated else deleted).append(" ".join(name.split()))
    return deleted, kept


def read_details(
    job_id: str, status_code: int, data: JSONValue, *, secrets: tuple[str, ...] = ()
) -> JobSnapshot | JobGone:
    """A details answer as our types; BadResponse for any shape Loom does not document."""
    if not isinstance(data, dict):
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
    output_files = checked(data)["job_data"]["job_files"].get("output_files")
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
    job_id: str, status_code: int, data: JSONValue, *, secrets: tuple[str, ...] = ()
) -> DeleteAnswer:
    """A delete answer as our types. ProviderRejected when Loom refuses; BadResponse when
    the answer is not one Loom documents (the delete is then sent again later)."""
    if not isinstance(data, dict):
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
    deleted, kept = parts_of(msg)
    if DELETE_NOTICE.lower() not in msg.lower() or not kept:
        return Deleted(status_code=status_code, body=data)
    if not deleted:
        # The documented answer for a job already deleted; a delete that failed for every
        # part reads the same, so the adapter confirms it (LoomProvider.delete).
        return AlreadyGone(status_code=status_code, body=data)
    raise DeleteIncomplete(
        f"Loom deleted only part of job {job_id}; it reported an unexpected error and did "
        f"not delete: {_shorten(_blank(', '.join(kept), secrets))}",
        hint="The delete is not recorded as done; it is sent again on a later sweep",
    )


class LoomProvider(BaseProvider[LoomSettings]):
    type: ClassVar[str] = SPEC.type
    lists_jobs: ClassVar[bool] = SPEC.lists_jobs

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
                isinstance(data, dict)
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
        ignored = frozenset(self.settings.ignore_outputs)
        unknown = unrecognised_of(fresh.record, ignored)
        if unknown:
            raise unrecognised(unknown, containers=CONTAINERS).for_job(self.name, job_id)
        return [
            Artifact(
                name=file.name,
                source=strip_query(file.url),
                origin=LinkOrigin(url=file.url),
                size=file.size,
            )
            for file in files_of(fresh.record)
            if file.section not in ignored
        ]

    def delete(self, job_id: str) -> DeleteAnswer:
        answer = self.api.request(
            "POST",
            self._path(job_id, "delete"),
            json_body=self._credentials(),
            accept=(400,),
            what=f"deleting job {job_id}",
        )
        try:
            result = read_delete(job_id, answer.status, answer.data, secrets=self._secrets())
        except DeleteIncomplete as exc:
            raise exc.for_job(self.name, job_id) from None
        if isinstance(result, AlreadyGone) and not is_gone(answer.data):
            return self._confirm_gone(job_id, result)
        return result

    def _confirm_gone(self, job_id: str, answer: AlreadyGone) -> AlreadyGone:
        """Every part "not deleted": gone only if Loom no longer has the job's data."""
        fresh = self._details(job_id, f"checking job {job_id} after Loom deleted none of it")
        if isinstance(fresh, JobGone):
            return answer
        msg = answer.body.get("msg") if isinstance(answer.body, dict) else None
        _deleted, kept = parts_of(msg if isinstance(msg, str) else "")
        raise DeleteIncomplete(
            f"Loom answered the delete with every part not deleted "
            f"({_shorten(_blank(', '.join(kept), self._secrets()))}), yet still describes "
            f"the job (status {fresh.status!r})",
            provider=self.name,
            job_id=job_id,
            hint="The delete is not recorded as done; it is sent again on a later sweep. If "
            "this repeats, check the job at Loom",
        )

    def check_credentials(self) -> None:
        # Loom has no list or account endpoint. A 401 means a bad key or secret; "Job data
        # not found" means Loom accepted them.
        self._details(CREDENTIAL_CHECK_REF, "checking the key and secret")
