"""Daily's Batch Processor (shared/providers.md section 1; seed 000).

* Auth: ``Authorization: Bearer <api_key>``.
* List: ``GET /batch-processor`` with ``limit`` (at most 100) and ``starting_after``; items
  carry only id, preset and status. That this endpoint shares Daily's generic cursor
  pagination is an inference [I]; the adapter stops on a short page and refuses a cursor that
  does not advance.
* Status: ``submitted`` and ``processing`` run; ``finished`` and ``error`` are terminal. Every
  other word is unknown and never terminal. Daily returns no timestamps, so the retention
  clock starts when the worker first sees the job terminal.
* Outputs: the items of the documented ``output`` sections (``transcription[]``, ``summary``
  and ``soap``), each located by its ``s3Config``. Files in Daily's bucket are fetched through
  ``GET /batch-processor/:id/access-link``, which Daily answers with 400 unless the job is
  ``finished``. Files in one of the user's ``custom_buckets`` are read from that bucket
  directly.
* What the delete destroys, and so what the whole-record walk (``providers/outputs.py``)
  must account for: the job and every object of its ``output`` in Daily's bucket [V D-del].
  The walk's verdicts:

  - an ``output`` item with an ``s3Config`` in a documented section is archived; a ``link``
    or ``url`` beside that ``s3Config`` names the same file;
  - an ``output`` item without an ``s3Config`` (only a ``link``, a ``key``, a
    ``Bucket``/``Key`` pair), an output section the adapter does not know (``recording``),
    any other reference inside an archived item (``audio_file``, ``artifacts[].key``), and a
    reference anywhere else in the record are unrecognised: ``Kept(reason=
    "unrecognised_output")``, naming each by its JSON path, unless its section (the
    ``output`` key, or the top-level field for a reference elsewhere) is in
    ``ignore_outputs``, whose files are neither archived nor a reason to keep;
  - the fields of the seed document that name no data the delete destroys are declared in
    ``INERT``, each with its reason: ``input.uri`` and ``input.recordingId`` are what the
    user submitted (Daily never owned the URL, and a recording has a lifecycle of its own
    [I]; the delete is documented to remove the job and its output objects only). A field of
    ``input`` the seed does not document is walked like any other;
  - the access-link answer must not name a section the record does not (that file would be
    one nobody archived).

  A ``finished`` job whose ``output`` is missing, null or lists nothing is suspicious (a
  finished transcription produced something): ``Kept(reason="no_output")``. An ``error``
  job without output is explained by its status and has nothing to archive.
* Delete: ``DELETE /batch-processor/:id`` answers with the job (200 [I]). A non-empty
  ``error`` in that answer ("Failed to delete transcriptions") means part of the job was not
  deleted: ``DeleteIncomplete``, so the delete is sent again, never recorded as done.
* "Gone" needs Daily's own words: a 404 whose body has Daily's error shape. On ``GET`` that
  is enough; a ``DELETE`` answered so is confirmed by a ``GET`` that answers the same (the
  delete route could be wrong while the job is there). A bare 404 (HTML, an empty body, JSON
  without ``error``: a gateway or a wrong ``base_url``) is ``BadResponse``: the job stays.
* Errors: ``{"error": "<type>", "info": "<text>"}``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, TypedDict
from urllib.parse import quote

from worker.domain import (
    AlreadyGone,
    Artifact,
    BucketOrigin,
    DeleteAnswer,
    Deleted,
    JobGone,
    JobSnapshot,
    LinkOrigin,
    ListedJob,
    Phase,
)
from worker.errors import BadResponse, DeleteIncomplete, Kept, ProviderRejected
from worker.json_types import JSONValue
from worker.keys import strip_query
from worker.providers.base import ApiOptions, BaseProvider, HttpApi, need
from worker.providers.outputs import Path, references, unclaimed, unrecognised, within
from worker.redact import Redactor
from worker.specs.daily import SPEC, DailySettings

STATUSES = {
    "submitted": Phase.RUNNING,
    "processing": Phase.RUNNING,
    "finished": Phase.SUCCEEDED,
    "error": Phase.FAILED,
}
# The output sections Daily documents (soap in the newer get-job page).
KNOWN_SECTIONS = ("transcription", "summary", "soap")
OUTPUT: Path = ("output",)
# The fields of Daily's job record that name no data its delete destroys (specs/daily.py).
INERT = SPEC.inert
# Fields beside an s3Config that name the same file.
SAME_FILE = ("link", "url")
# The access-link answer's own fields.
LINK_ANSWER_FIELDS = ("id", "preset", "status")
# A listing longer than this is a cursor loop, not a real account.
MAX_PAGES = 100_000
# Daily's error text goes into messages: short, and without anything shaped like a credential.
MAX_DETAIL_CHARS = 200
_PLAIN = Redactor()


def phase_of(status: str) -> Phase:
    return STATUSES.get(status.lower(), Phase.UNKNOWN) if isinstance(status, str) else Phase.UNKNOWN


def is_daily_error(data: JSONValue) -> bool:
    """Whether a body has Daily's error shape, ``{"error": "<type>", "info": ...}``."""
    error = data.get("error") if isinstance(data, dict) else None
    return isinstance(error, str) and bool(error)


def error_detail(status: int, data: JSONValue) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        info = data.get("info")
        return f"{data['error']}" + (f" ({info})" if isinstance(info, str) and info else "")
    return None


def _shown(text: str) -> str:
    return " ".join(_PLAIN.scrub(text).split())[:MAX_DETAIL_CHARS]


class S3Config(TypedDict):
    """An output item's ``s3Config`` (seed 000), checked: where Daily wrote the file."""

    key: str
    # Daily's bucket, or one of the user's own (batch_processor_bucket).
    bucket: str | None
    region: str | None


@dataclass(frozen=True, slots=True)
class DailyOutput:
    """One ``output`` item that has an ``s3Config``."""

    section: str
    position: int
    path: Path  # of the item: ("output", "transcription", 1) or ("output", "summary")
    format: str | None
    config: S3Config = field(repr=False)

    @property
    def key(self) -> str:
        return self.config["key"]

    @property
    def bucket(self) -> str | None:
        return self.config["bucket"]


def _output_section(record: JSONValue) -> dict[str, JSONValue] | None:
    output = record.get("output") if isinstance(record, dict) else None
    if output is None:
        return None
    if not isinstance(output, dict):
        raise BadResponse("the job's 'output' is not an object")
    return output


def items_of(record: JSONValue) -> list[tuple[str, Path, JSONValue]]:
    """Every item of every ``output`` section: ``(section, path, item)``. A section holds a
    list of items or one object; anything else non-null is one item too (never skipped)."""
    output = _output_section(record)
    if output is None:
        return []
    found: list[tuple[str, Path, JSONValue]] = []
    for section, value in output.items():
        if isinstance(value, list):
            found.extend(
                (section, (*OUTPUT, section, position), item)
                for position, item in enumerate(value)
                if item is not None
            )
        elif value is not None and value not in ({}, ""):
            found.append((section, (*OUTPUT, section), value))
    return found


def outputs_of(record: JSONValue) -> list[DailyOutput]:
    """Every output item that has an ``s3Config``, checked; BadResponse for a malformed one."""
    found: list[DailyOutput] = []
    for section, path, item in items_of(record):
        if not isinstance(item, dict) or "s3Config" not in item:
            continue
        position = path[-1] if isinstance(path[-1], int) else 0
        where = f"output {section}[{position}]"
        config = item["s3Config"]
        key = config.get("key") if isinstance(config, dict) else None
        if not isinstance(config, dict) or not isinstance(key, str) or not key:
            raise BadResponse(f"{where} has no s3Config.key")
        bucket, region = config.get("bucket"), config.get("region")
        if bucket is not None and not isinstance(bucket, str):
            raise BadResponse(f"{where} has a non-string bucket")
        if region is not None and not isinstance(region, str):
            raise BadResponse(f"{where} has a non-string region")
        fmt = item.get("format")
        checked: S3Config = {"key": key, "bucket": bucket, "region": region}
        found.append(
            DailyOutput(section, position, path, fmt if isinstance(fmt, str) else None, checked)
        )
    return found


def unrecognised_of(record: JSONValue, ignored: Collection[str] = ()) -> list[Path]:
    """The references of a job record the adapter cannot archive: items without an
    ``s3Config``, sections it does not know (each stands for everything in it), and any
    other reference, in an archived item or anywhere else, that is neither the item's file
    nor declared ``INERT``. Sections in ``ignored`` are left out."""
    found: list[Path] = []
    claimed: set[Path] = set()
    for section, path, item in items_of(record):
        if section in ignored:
            continue
        located = isinstance(item, dict) and item.get("s3Config") not in (None, {}, "")
        if section not in KNOWN_SECTIONS or not located:
            found.append(path)
            continue
        claimed.add((*path, "s3Config"))
        claimed.update((*path, name) for name in SAME_FILE)
    rest = unclaimed(record, claimed=claimed, inert=INERT, ignored=ignored, containers=(OUTPUT,))
    return found + [p for p in rest if not any(within(p, item) for item in found)]


def lists_no_output(record: JSONValue) -> bool:
    """Whether a job's ``output`` is missing, null, ``{}`` or has only empty sections."""
    return not items_of(record)


def no_output(status: str) -> Kept:
    return Kept(
        f"Daily reports the job {status!r} but its record lists no output at all: nothing deleted",
        reason="no_output",
        hint="A finished job should have produced files; check the job at Daily. If it "
        "really produced nothing, delete it there by hand or hold it",
    )


def extra_link_sections(answer: JSONValue, record_sections: Collection[str]) -> list[Path]:
    """References in an access-link answer under a section the job record does not name."""
    if not isinstance(answer, dict):
        return []
    return [
        path
        for path, _value in references(answer)
        if path and path[0] not in LINK_ANSWER_FIELDS and path[0] not in record_sections
    ]


def _links_of(answer: JSONValue, section: str) -> list[tuple[str | None, str]]:
    value = answer.get(section) if isinstance(answer, dict) else None
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    links: list[tuple[str | None, str]] = []
    for item in items:
        link = item.get("link") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(link, str) or not link:
            raise BadResponse(f"the access-link answer has a {section} entry without a link")
        fmt = item.get("format")
        links.append((fmt if isinstance(fmt, str) else None, link))
    return links


def read_delete(job_id: str, status_code: int, data: JSONValue) -> Deleted:
    """A 2xx answer to a delete as our types. A non-empty ``error`` (Daily's "Failed to delete
    transcriptions") means part of the job was not deleted: DeleteIncomplete."""
    error = data.get("error") if isinstance(data, dict) else None
    if error is None or error == "":
        return Deleted(status_code=status_code, body=data)
    said = _shown(error) if isinstance(error, str) else "an error Daily did not put in words"
    raise DeleteIncomplete(
        f"Daily answered the delete of job {job_id} with {status_code} and the error "
        f"{said!r}: part of the job may still be at Daily",
        hint="The delete is not recorded as done; it is sent again on a later sweep",
    )


def not_dailys(what: str, base_url: str) -> BadResponse:
    return BadResponse(
        f'{what} answered 404 without Daily\'s error body ({{"error", "info"}}): the '
        "answer is not Daily's",
        hint=f"Check base_url ({base_url}); nothing is marked gone, and the job is read "
        "again on a later sweep",
    )


class DailyProvider(BaseProvider[DailySettings]):
    type: ClassVar[str] = SPEC.type
    lists_jobs: ClassVar[bool] = SPEC.lists_jobs

    def __init__(self, name: str, settings: DailySettings, api: HttpApi) -> None:
        super().__init__(name, settings, api)
        self.custom_buckets = frozenset(settings.custom_buckets)

    @classmethod
    def api_options(cls, settings: DailySettings) -> ApiOptions:
        return {
            "headers": {
                "Authorization": f"Bearer {settings.api_key.get_secret_value()}",
                "Accept": "application/json",
            },
            "error_detail": error_detail,
        }

    def _path(self, job_id: str, suffix: str = "") -> str:
        return f"/batch-processor/{quote(job_id, safe='')}{suffix}"

    def list_jobs(self) -> Iterator[list[ListedJob]]:
        cursor: str | None = None
        for _page in range(MAX_PAGES):
            params: dict[str, str | int] = {"limit": self.settings.page_size}
            if cursor:
                params["starting_after"] = cursor
            answer = self.api.request(
                "GET", "/batch-processor", params=params, what="listing batch-processor jobs"
            )
            data = need(answer.data, "data", list, what="the job listing")
            page: list[ListedJob] = []
            for item in data:
                job_id = need(item, "id", str, what="a listed job")
                status = item.get("status") if isinstance(item, dict) else None
                status = status if isinstance(status, str) else ""
                page.append(ListedJob(job_id=job_id, status=status, phase=phase_of(status)))
            if page:
                yield page
            if len(data) < self.settings.page_size or not page:
                return
            if page[-1].job_id == cursor:
                raise BadResponse("the job listing's cursor did not advance")
            cursor = page[-1].job_id
        raise BadResponse(f"the job listing ran past {MAX_PAGES} pages")

    def get_job(self, job_id: str) -> JobSnapshot | JobGone:
        what = f"reading job {job_id}"
        answer = self.api.request("GET", self._path(job_id), accept=(404,), what=what)
        if answer.status == 404:
            if not is_daily_error(answer.data):
                raise not_dailys(what, self.settings.base_url).for_job(self.name, job_id)
            return JobGone(job_id=job_id, answer={"status_code": 404, "body": answer.data})
        record = answer.data
        returned = need(record, "id", str, what=f"job {job_id}")
        if returned != job_id:
            raise BadResponse(f"asked for job {job_id}, Daily answered with job {returned}")
        status = need(record, "status", str, what=f"job {job_id}")
        outputs_of(record)  # refuse a malformed output section before anything is decided
        return JobSnapshot(
            job_id=job_id,
            status=status,
            phase=phase_of(status),
            finished_at=None,
            record=record,
        )

    def artifacts(self, snapshot: JobSnapshot) -> list[Artifact]:
        record = snapshot.record
        ignored = frozenset(self.settings.ignore_outputs)
        if snapshot.phase == Phase.SUCCEEDED and lists_no_output(record):
            raise no_output(snapshot.status).for_job(self.name, snapshot.job_id)
        unknown = unrecognised_of(record, ignored)
        if unknown:
            raise unrecognised(unknown, containers=(OUTPUT,)).for_job(self.name, snapshot.job_id)
        outputs = [o for o in outputs_of(record) if o.section not in ignored]
        own = [o for o in outputs if o.bucket in self.custom_buckets]
        hosted = [o for o in outputs if o.bucket not in self.custom_buckets]
        artifacts = [
            Artifact(
                name=o.key,
                source=f"s3://{o.bucket}/{o.key}",
                origin=BucketOrigin(bucket=o.bucket, key=o.key, region=o.config["region"]),
            )
            for o in own
            if o.bucket is not None
        ]
        if hosted:
            artifacts.extend(self._linked(snapshot, outputs, hosted))
        return artifacts

    def _linked(
        self, snapshot: JobSnapshot, outputs: list[DailyOutput], hosted: list[DailyOutput]
    ) -> list[Artifact]:
        job_id = snapshot.job_id
        answer = self.api.request(
            "GET",
            self._path(job_id, "/access-link"),
            accept=(400,),
            what=f"requesting download links for job {job_id}",
        )
        if answer.status == 400:
            raise ProviderRejected(
                f"Daily refuses download links for a job in status {snapshot.status!r} "
                f"that still has {len(hosted)} output(s) in Daily's bucket",
                hint="Download them by hand, then delete the job at Daily, or hold it",
            )
        output = _output_section(snapshot.record) or {}
        extra = extra_link_sections(answer.data, output.keys() | self.settings.ignore_outputs)
        if extra:
            raise unrecognised(
                [("access-link", *p) for p in extra], containers=(("access-link",),)
            ).for_job(self.name, job_id)
        artifacts: list[Artifact] = []
        for section in dict.fromkeys(o.section for o in hosted):
            in_section = [o for o in outputs if o.section == section]
            needed = [o for o in in_section if o in hosted]
            links = _links_of(answer.data, section)
            if len(links) == len(in_section):
                pairs = [
                    (o, link) for o, link in zip(in_section, links, strict=True) if o in hosted
                ]
            elif len(links) == len(needed):
                pairs = list(zip(needed, links, strict=True))
            else:
                raise BadResponse(
                    f"the access-link answer has {len(links)} {section} link(s) for "
                    f"{len(needed)} output(s)"
                )
            for out, (link_fmt, link) in pairs:
                if out.format and link_fmt and out.format != link_fmt:
                    raise BadResponse(
                        f"the access-link for {out.section}[{out.position}] is a {link_fmt!r} "
                        f"file, the output is {out.format!r}"
                    )
                artifacts.append(
                    Artifact(name=out.key, source=strip_query(link), origin=LinkOrigin(url=link))
                )
        return artifacts

    def delete(self, job_id: str) -> DeleteAnswer:
        what = f"deleting job {job_id}"
        answer = self.api.request("DELETE", self._path(job_id), accept=(404,), what=what)
        if answer.status == 404:
            if not is_daily_error(answer.data):
                raise not_dailys(what, self.settings.base_url).for_job(self.name, job_id)
            # Confirmed by a read: a wrong delete route answers 404 while the job is there.
            if isinstance(self.get_job(job_id), JobGone):
                return AlreadyGone(status_code=404, body=answer.data)
            raise BadResponse(
                f"Daily answered the delete of job {job_id} with 404, yet still describes the "
                "job when asked",
                provider=self.name,
                job_id=job_id,
                hint=f"Check base_url ({self.settings.base_url}); the delete is sent again on "
                "a later sweep",
            )
        data = answer.data
        # The answer is the job record, and a job that failed carries its processing error in
        # the same field a failed cleanup uses: only a read can tell them apart. Gone is a
        # delete; a job still described is not.
        failed_job = isinstance(data, Mapping) and data.get("status") == "error"
        if failed_job and data.get("error") and isinstance(self.get_job(job_id), JobGone):
            return Deleted(status_code=answer.status, body=data)
        try:
            return read_delete(job_id, answer.status, data)
        except DeleteIncomplete as exc:
            raise exc.for_job(self.name, job_id) from None

    def check_credentials(self) -> None:
        self.api.request(
            "GET", "/batch-processor", params={"limit": 1}, what="checking the API key"
        )
