"""Daily's Batch Processor (shared/providers.md section 1; seed 000).

* Auth: ``Authorization: Bearer <api_key>``.
* List: ``GET /batch-processor`` with ``limit`` (at most 100) and ``starting_after``; items
  carry only id, preset and status. That this endpoint shares Daily's generic cursor
  pagination is an inference [I]; the adapter stops on a short page and refuses a cursor that
  does not advance.
* Status: ``submitted`` and ``processing`` run; ``finished`` and ``error`` are terminal. Any
  other word is unknown and never terminal. Daily returns no timestamps, so the retention
  clock starts when the worker first sees the job terminal.
* Outputs: every object under ``output`` that has an ``s3Config`` (``transcription[]``,
  ``summary``, ``soap`` and any section Daily adds later, since its delete destroys them
  all). Files in Daily's bucket are fetched through ``GET /batch-processor/:id/access-link``,
  which Daily answers with 400 unless the job is ``finished``. Files in one of the user's
  ``custom_buckets`` are read from that bucket directly.
* Delete: ``DELETE /batch-processor/:id`` answers with the job (200 [I]); a 404 means gone.
  Its ``error`` field can report a partial failure ("Failed to delete transcriptions"),
  which is kept in the receipt as a warning.
* Errors: ``{"error": "<type>", "info": "<text>"}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar
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
from worker.errors import BadResponse, ProviderRejected
from worker.keys import strip_query
from worker.providers.base import ApiOptions, BaseProvider, HttpApi, need
from worker.settings import DailySettings

STATUSES = {
    "submitted": Phase.RUNNING,
    "processing": Phase.RUNNING,
    "finished": Phase.SUCCEEDED,
    "error": Phase.FAILED,
}
# A listing longer than this is a cursor loop, not a real account.
MAX_PAGES = 100_000


def phase_of(status: str) -> Phase:
    return STATUSES.get(status.lower(), Phase.UNKNOWN) if isinstance(status, str) else Phase.UNKNOWN


def error_detail(status: int, data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        info = data.get("info")
        return f"{data['error']}" + (f" ({info})" if isinstance(info, str) and info else "")
    return None


def outputs_of(record: Any) -> list[tuple[str, int, str | None, dict[str, Any]]]:
    """Every output with an s3Config: (section, position, format, s3Config)."""
    output = record.get("output") if isinstance(record, dict) else None
    if output is None:
        return []
    if not isinstance(output, dict):
        raise BadResponse("the job's 'output' is not an object")
    found: list[tuple[str, int, str | None, dict[str, Any]]] = []
    for section, value in output.items():
        items = value if isinstance(value, list) else [value]
        for position, item in enumerate(items):
            if not isinstance(item, dict) or "s3Config" not in item:
                continue
            config = item["s3Config"]
            key = config.get("key") if isinstance(config, dict) else None
            if not isinstance(key, str) or not key:
                raise BadResponse(f"output {section}[{position}] has no s3Config.key")
            bucket = config.get("bucket")
            if bucket is not None and not isinstance(bucket, str):
                raise BadResponse(f"output {section}[{position}] has a non-string bucket")
            fmt = item.get("format")
            found.append((section, position, fmt if isinstance(fmt, str) else None, config))
    return found


def _links_of(answer: Any, section: str) -> list[tuple[str | None, str]]:
    value = answer.get(section) if isinstance(answer, dict) else None
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    links: list[tuple[str | None, str]] = []
    for item in items:
        link = item.get("link") if isinstance(item, dict) else None
        if not isinstance(link, str) or not link:
            raise BadResponse(f"the access-link answer has a {section} entry without a link")
        fmt = item.get("format")
        links.append((fmt if isinstance(fmt, str) else None, link))
    return links


class DailyProvider(BaseProvider[DailySettings]):
    type: ClassVar[str] = "daily"
    lists_jobs: ClassVar[bool] = True

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
            params: dict[str, Any] = {"limit": self.settings.page_size}
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
        answer = self.api.request(
            "GET", self._path(job_id), accept=(404,), what=f"reading job {job_id}"
        )
        if answer.status == 404:
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
        outputs = outputs_of(snapshot.record)
        own = [o for o in outputs if o[3].get("bucket") in self.custom_buckets]
        hosted = [o for o in outputs if o[3].get("bucket") not in self.custom_buckets]
        artifacts = [
            Artifact(
                name=config["key"],
                source=f"s3://{config['bucket']}/{config['key']}",
                origin=BucketOrigin(
                    bucket=config["bucket"], key=config["key"], region=config.get("region")
                ),
            )
            for _section, _pos, _fmt, config in own
        ]
        if hosted:
            artifacts.extend(self._linked(snapshot, outputs, hosted))
        return artifacts

    def _linked(
        self,
        snapshot: JobSnapshot,
        outputs: list[tuple[str, int, str | None, dict[str, Any]]],
        hosted: list[tuple[str, int, str | None, dict[str, Any]]],
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
        artifacts: list[Artifact] = []
        for section in dict.fromkeys(o[0] for o in hosted):
            in_section = [o for o in outputs if o[0] == section]
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
            for (sec, pos, fmt, config), (link_fmt, link) in pairs:
                if fmt and link_fmt and fmt != link_fmt:
                    raise BadResponse(
                        f"the access-link for {sec}[{pos}] is a {link_fmt!r} file, "
                        f"the output is {fmt!r}"
                    )
                artifacts.append(
                    Artifact(
                        name=config["key"], source=strip_query(link), origin=LinkOrigin(url=link)
                    )
                )
        return artifacts

    def delete(self, job_id: str) -> DeleteAnswer:
        answer = self.api.request(
            "DELETE", self._path(job_id), accept=(404,), what=f"deleting job {job_id}"
        )
        if answer.status == 404:
            return AlreadyGone(status_code=404, body=answer.data)
        warning = answer.data.get("error") if isinstance(answer.data, dict) else None
        return Deleted(
            status_code=answer.status,
            body=answer.data,
            warning=warning if isinstance(warning, str) and warning else None,
        )

    def check_credentials(self) -> None:
        self.api.request(
            "GET", "/batch-processor", params={"limit": 1}, what="checking the API key"
        )
