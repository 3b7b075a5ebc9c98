"""Huawei Cloud Media Processing Center transcoding tasks (shared/providers.md section 3; seed 002).

* Auth: an IAM token sent as ``X-Auth-Token`` (IAM tokens last 24 hours), or an access key
  pair that signs every request with ``SDK-HMAC-SHA256`` (``SdkHmacSha256Auth``). The secret
  key never travels; the gateway refuses a signature more than 15 minutes off its clock.
* List: ``GET /v1/{project_id}/transcodings`` with ``page`` (0-based, the next one being
  ``page + 1`` [I]) and ``size`` (at most 100), page after page while ``is_truncated`` is 1.
  The order of the listing is not documented and not relied on; a page that repeats the one
  before is refused, so a server ignoring ``page`` cannot loop. The same call with
  ``task_id`` repeated (at most 10) looks tasks up by id; a lookup of one id answered with an
  empty ``task_array`` means the task does not exist.
* Status: ``SUCCEEDED`` succeeds; ``FAILED`` and ``CANCELED`` fail; ``WAITING``,
  ``TRANSCODING`` and ``NEED_TO_BE_AUDIT`` run. Every other word is unknown and never terminal.
  The retention clock starts at ``end_time``, ``yyyymmddhhmmss`` read as UTC [I]: if MPC
  writes Beijing time instead, the clock only starts later, which is the safe direction.
* Outputs: nothing to download. MPC stores nothing itself: a task's outputs are objects in
  the user's own OBS bucket, and deleting the task removes only its record [I]. The task
  record is what the manifest keeps.
* The whole-record walk (``providers/outputs.py``) makes that verdict explicit. The fields
  of a task (Huawei's SDK, ``QueryTranscodingsTaskResponse``) that name files all name
  objects in the user's OBS bucket, which the delete does not touch [I]: ``input``,
  ``output`` and ``thumbnail_output`` (``ObsObjInfo``: bucket, location, object, file_name),
  ``output_file_name[]`` and ``thumbnail_outputname`` (names under ``output``),
  ``output_url`` (the quality-check file's output path), ``pic_info[].pic_name`` (screenshot
  files) and ``transcode_detail`` (``multitask_info[]`` and ``input_file``: per-template
  results and media facts such as duration, format and size). ``user_data`` is the user's
  own text, kept in the manifest with the record. These, and the task's id, status, times
  and codes, are declared in ``INERT``. A reference anywhere else, a field of those objects
  the SDK does not document (``output.Key``, ``pic_info[].pic_url``) included, is
  unrecognised: ``Kept(reason="unrecognised_output")``, naming its JSON path, unless its
  top-level field is in ``ignore_outputs``.
* Delete: ``DELETE /v1/{project_id}/transcodings/task?task_id=N`` answers 204. A 400
  ``MPC.10213`` (the task is not in a final state) defers the job; it is not a failure. What
  MPC answers for a task it does not know is not documented [?] (400 ``MPC.10202`` or 404):
  either answer is confirmed with a lookup, and only a task the lookup no longer finds is
  already gone.
* Errors: MPC's ``{"error_code": "MPC.xxxxx", "error_msg"}``; API Gateway's
  ``{"error_code": "APIGW.xxxx", "error_msg", "request_id"}`` for auth and throttling (429
  [I], no documented wait header). Messages carry the code, never a token or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import parse_qsl, quote, unquote

import httpx

from worker.domain import (
    AlreadyGone,
    Artifact,
    DeleteAnswer,
    Deleted,
    JobGone,
    JobSnapshot,
    ListedJob,
    Phase,
    utcnow,
)
from worker.errors import BadResponse, ProviderError, ProviderRejected
from worker.json_types import JSONValue
from worker.providers.base import (
    ApiOptions,
    BaseProvider,
    ErrorDetail,
    HttpApi,
    need,
    not_the_providers_404,
)
from worker.providers.outputs import Path, unclaimed, unrecognised
from worker.specs.huawei_mpc import SPEC, HuaweiMpcSettings

STATUSES = {
    "SUCCEEDED": Phase.SUCCEEDED,
    "FAILED": Phase.FAILED,
    "CANCELED": Phase.FAILED,
    "WAITING": Phase.RUNNING,
    "TRANSCODING": Phase.RUNNING,
    # Pending review: the task has not produced its outputs yet [I].
    "NEED_TO_BE_AUDIT": Phase.RUNNING,
}
# A listing longer than this is a server ignoring ``page``, not a real account.
MAX_PAGES = 100_000
# MPC takes at most 10 task ids per query.
LOOKUP_BATCH = 10
NOT_FINAL = "MPC.10213"
END_TIME_FORMAT = "%Y%m%d%H%M%S"
# Task ids are longs: the integer text, without sign or leading zeros.
_TASK_ID = re.compile(r"0|[1-9][0-9]{0,18}")
_END_TIME = re.compile(r"[0-9]{14}")
# The fields of a task that name no data the delete destroys (specs/huawei_mpc.py).
INERT = SPEC.inert

# -- SDK-HMAC-SHA256 -------------------------------------------------------------------------

ALGORITHM = "SDK-HMAC-SHA256"
SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()
# The headers the signer signs when a request carries them. Hop-by-hop and client headers
# (Connection, Accept-Encoding, User-Agent) stay out: a proxy may rewrite them in transit.
SIGNED_HEADERS = ("content-type", "host", "x-project_id", "x-sdk-date")


def _encode(text: str) -> str:
    # RFC 3986: only unreserved characters survive, "/" included in what is encoded.
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """Each segment decoded then encoded again, with the trailing ``/`` the algorithm adds."""
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Sorted by key, then by value (as text), each encoded; repeated keys stay repeated."""
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(pairs))


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes = b"",
    *,
    payload_hash: str | None = None,
) -> str:
    """The canonical request of SDK-HMAC-SHA256 over the signed ``headers``.

    ``path`` is the path as sent (percent-encoded); ``payload_hash`` replaces the body's
    SHA-256 when the request says ``X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD``.
    """
    signed = {name.lower(): value.strip() for name, value in headers.items()}
    names = sorted(signed)
    block = "".join(f"{name}:{signed[name]}\n" for name in names)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            block,
            ";".join(names),
            payload_hash or hashlib.sha256(body).hexdigest(),
        ]
    )


def string_to_sign(canonical: str, sdk_date: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def signature(secret_key: str, to_sign: str) -> str:
    # The secret key itself is the HMAC key: no date or region derivation, unlike SigV4.
    return hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(access_key: str, signed_headers: Iterable[str], sig: str) -> str:
    names = ";".join(sorted(name.lower() for name in signed_headers))
    return f"{ALGORITHM} Access={access_key}, SignedHeaders={names}, Signature={sig}"


class SdkHmacSha256Auth(httpx.Auth):
    """Signs each request (each retry afresh) with an access key pair, as Huawei's SDK does.

    Adds ``X-Sdk-Date`` from ``clock``, ``X-Project_Id`` (mandatory for MPC in this mode),
    ``Host`` if absent, and the ``Authorization`` header.
    """

    requires_request_body = True

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        project_id: str | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self.project_id = project_id
        self.clock = clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}(project_id={self.project_id!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        yield request

    def sign(self, request: httpx.Request) -> None:
        sdk_date = self.clock().astimezone(UTC).strftime(SDK_DATE_FORMAT)
        request.headers["X-Sdk-Date"] = sdk_date
        if self.project_id is not None:
            request.headers["X-Project_Id"] = self.project_id
        if "host" not in request.headers:
            request.headers["Host"] = request.url.netloc.decode("ascii")
        signed = {name: request.headers[name] for name in SIGNED_HEADERS if name in request.headers}
        path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        query = parse_qsl(request.url.query.decode("ascii"), keep_blank_values=True)
        canonical = canonical_request(
            request.method,
            path,
            query,
            signed,
            request.content,
            payload_hash=request.headers.get("x-sdk-content-sha256"),
        )
        sig = signature(self._secret_key, string_to_sign(canonical, sdk_date))
        request.headers["Authorization"] = authorization(self._access_key, signed, sig)


# -- MPC's records -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Task:
    """One entry of ``task_array``, checked."""

    task_id: str
    status: str
    phase: Phase
    finished_at: datetime | None
    # The whole entry, for the manifest: its other fields are walked, not read.
    record: dict[str, JSONValue] = field(repr=False)

    def listed(self) -> ListedJob:
        return ListedJob(
            job_id=self.task_id,
            status=self.status,
            phase=self.phase,
            finished_at=self.finished_at,
        )


def phase_of(status: object) -> Phase:
    return STATUSES.get(status.upper(), Phase.UNKNOWN) if isinstance(status, str) else Phase.UNKNOWN


def finished_at_of(end_time: object) -> datetime | None:
    """``end_time`` as a UTC instant; None when empty or not ``yyyymmddhhmmss``."""
    if isinstance(end_time, int) and not isinstance(end_time, bool):
        end_time = str(end_time)
    if not isinstance(end_time, str) or not _END_TIME.fullmatch(end_time):
        return None
    try:
        return datetime.strptime(end_time, END_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def is_task_id(text: str) -> bool:
    return bool(_TASK_ID.fullmatch(text))


def task_of(item: JSONValue, *, what: str = "a task") -> Task:
    if not isinstance(item, dict):
        raise BadResponse(f"{what} is not a JSON object")
    task_id = item.get("task_id")
    # Documented as a string in answers; an integer is the same id.
    if isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id = str(task_id)
    if not isinstance(task_id, str) or not is_task_id(task_id):
        raise BadResponse(f"{what} has no task_id made of digits")
    status = item.get("status")
    status = status if isinstance(status, str) else ""
    return Task(task_id, status, phase_of(status), finished_at_of(item.get("end_time")), item)


def tasks_of(data: JSONValue, *, what: str, paged: bool) -> tuple[list[Task], bool]:
    """The tasks of one answer, and whether more pages follow (``is_truncated`` is 1)."""
    items = need(data, "task_array", list, what=what)
    more = False
    if paged:
        truncated = need(data, "is_truncated", int, what=what)
        if truncated not in (0, 1):
            raise BadResponse(f"{what} has is_truncated {truncated}, not 0 or 1")
        more = truncated == 1
    tasks = [task_of(item, what=f"a task in {what}") for item in items]
    return tasks, more


def unrecognised_of(record: JSONValue, ignored: frozenset[str] = frozenset()) -> list[Path]:
    """References in a task record outside the fields ``INERT`` declares (the user's own OBS
    objects, the task's facts), less the top-level fields in ``ignored``."""
    return unclaimed(record, inert=INERT, ignored=ignored)


def error_code_of(data: JSONValue) -> str | None:
    code = data.get("error_code") if isinstance(data, dict) else None
    return code if isinstance(code, str) and code else None


# Advice for the answers whose cause is on our side.
_ADVICE = (
    ("signature expired", "this machine's clock is more than 15 minutes off; sync it (NTP)"),
    ("verify signature fail", "the secret key does not belong to the access key"),
    ("decrypt token fail", "IAM tokens last 24 hours; renew it, or configure an access key pair"),
    ("token expired", "IAM tokens last 24 hours; renew it, or configure an access key pair"),
)


def error_detailer(secrets: Iterable[str] = ()) -> ErrorDetail:
    """``error_detail`` for HttpApi: the MPC or gateway code and a short, scrubbed message."""
    hidden = tuple(s for s in secrets if s)

    def detail(status: int, data: JSONValue) -> str | None:
        code = error_code_of(data)
        if code is None:
            return None
        message = data.get("error_msg") if isinstance(data, dict) else None
        if not isinstance(message, str):
            return code
        # A failed signature echoes the gateway's canonical request: useful to a person
        # debugging by hand, noise in a log line.
        message = message.split(", canonicalRequest", 1)[0].split("canonicalRequest", 1)[0]
        for secret in hidden:  # before the cut, so no half of a secret survives it
            message = message.replace(secret, "***")
        message = " ".join(message.split())[:160].rstrip(" ,:")
        advice = next((a for needle, a in _ADVICE if needle in message.lower()), None)
        text = f"{code} ({message})" if message else code
        return f"{text}; {advice}" if advice else text

    return detail


# -- the adapter ---------------------------------------------------------------------------


def credentials_of(
    settings: HuaweiMpcSettings, *, clock: Callable[[], datetime] = utcnow
) -> tuple[dict[str, str], httpx.Auth | None]:
    """Headers and signer for the configured mode (settings allow exactly one)."""
    if settings.token is not None:
        return {"X-Auth-Token": settings.token.get_secret_value()}, None
    assert settings.access_key is not None
    assert settings.secret_key is not None
    auth = SdkHmacSha256Auth(
        settings.access_key.get_secret_value(),
        settings.secret_key.get_secret_value(),
        settings.project_id,
        clock=clock,
    )
    return {}, auth


def _secrets_of(settings: HuaweiMpcSettings) -> list[str]:
    values = (settings.token, settings.access_key, settings.secret_key)
    return [v.get_secret_value() for v in values if v is not None]


class HuaweiMpcProvider(BaseProvider[HuaweiMpcSettings]):
    type: ClassVar[str] = SPEC.type
    lists_jobs: ClassVar[bool] = SPEC.lists_jobs
    lookup_batch_size: ClassVar[int] = LOOKUP_BATCH

    @classmethod
    def job_id_problem(cls, job_id: str) -> str | None:
        if is_task_id(job_id):
            return None
        return "is not an MPC task id: MPC task ids are whole numbers (such as 3273178)"

    def __init__(self, name: str, settings: HuaweiMpcSettings, api: HttpApi) -> None:
        super().__init__(name, settings, api)
        self.tasks_path = f"/v1/{quote(settings.project_id, safe='')}/transcodings"

    @classmethod
    def api_options(cls, settings: HuaweiMpcSettings) -> ApiOptions:
        headers, auth = credentials_of(settings)
        return {
            "headers": {**headers, "Accept": "application/json"},
            "auth": auth,
            "error_detail": error_detailer(_secrets_of(settings)),
        }

    def _refuse_id(self, job_id: str) -> None:
        if not is_task_id(job_id):
            raise ProviderRejected(
                f"{job_id!r} cannot be an MPC task id: MPC task ids are whole numbers",
                provider=self.name,
                job_id=job_id,
                hint="Check the id that was tracked",
            )

    def _query(self, job_ids: list[str], *, what: str) -> tuple[list[Task], JSONValue]:
        # Sorted as text, the order the signature's canonical query puts them in.
        params = [("task_id", job_id) for job_id in sorted(job_ids)]
        answer = self.api.request("GET", self.tasks_path, params=params, what=what)
        tasks, _more = tasks_of(answer.data, what=f"the answer to {what}", paged=False)
        return tasks, answer.data

    def list_jobs(self) -> Iterator[list[ListedJob]]:
        previous: list[str] = []
        for page in range(MAX_PAGES):
            what = f"listing transcoding tasks (page {page})"
            answer = self.api.request(
                "GET",
                self.tasks_path,
                params={"page": page, "size": self.settings.page_size},
                what=what,
            )
            tasks, more = tasks_of(answer.data, what=f"the answer to {what}", paged=True)
            ids = [t.task_id for t in tasks]
            if more and not tasks:
                raise BadResponse(f"the task listing says more follow, but page {page} is empty")
            if ids and ids == previous:
                raise BadResponse(f"the task listing answered page {page} with the page before")
            if tasks:
                yield [t.listed() for t in tasks]
            if not more:
                return
            previous = ids
        raise BadResponse(f"the task listing ran past {MAX_PAGES} pages")

    def lookup(self, job_ids: list[str]) -> list[ListedJob]:
        asked = sorted({j for j in job_ids if is_task_id(j)})
        found: list[ListedJob] = []
        for start in range(0, len(asked), LOOKUP_BATCH):
            batch = asked[start : start + LOOKUP_BATCH]
            tasks, _data = self._query(batch, what=f"looking up {len(batch)} task(s)")
            wanted = set(batch)
            found.extend(t.listed() for t in tasks if t.task_id in wanted)
        return found

    def _read(self, job_id: str, *, what: str) -> tuple[Task | None, JSONValue]:
        """The task, or None when MPC answers the lookup with an empty ``task_array``."""
        tasks, data = self._query([job_id], what=what)
        if not tasks:
            return None, data
        mine = [t for t in tasks if t.task_id == job_id]
        if len(mine) != 1:
            # Another task, or two of ours: MPC ignored the filter. Never read that as gone.
            others = ", ".join(sorted({t.task_id for t in tasks}))[:80]
            raise BadResponse(f"asked for task {job_id}, MPC answered with task(s) {others}")
        return mine[0], data

    def get_job(self, job_id: str) -> JobSnapshot | JobGone:
        self._refuse_id(job_id)
        task, data = self._read(job_id, what=f"reading task {job_id}")
        if task is None:
            return JobGone(job_id=job_id, answer={"status_code": 200, "body": data})
        return JobSnapshot(
            job_id=job_id,
            status=task.status,
            phase=task.phase,
            finished_at=task.finished_at,
            record=task.record,
        )

    def artifacts(self, snapshot: JobSnapshot) -> list[Artifact]:
        # MPC hosts no files: outputs are objects in the user's own OBS bucket
        # (output.bucket/output.object/output_file_name), and deleting the task removes only
        # its record [I]. The record, kept in the manifest, says where they are. A file the
        # record names anywhere else could be MPC's to destroy: that keeps the task.
        unknown = unrecognised_of(snapshot.record, frozenset(self.settings.ignore_outputs))
        if unknown:
            raise unrecognised(unknown).for_job(self.name, snapshot.job_id)
        return []

    def delete(self, job_id: str) -> DeleteAnswer:
        self._refuse_id(job_id)
        answer = self.api.request(
            "DELETE",
            f"{self.tasks_path}/task",
            params={"task_id": job_id},
            ok=(200, 204),
            accept=(400, 404),
            what=f"deleting task {job_id}",
        )
        if answer.status in (200, 204):
            return Deleted(status_code=answer.status, body=answer.data)
        code = error_code_of(answer.data)
        if code == NOT_FINAL:
            raise ProviderError(
                f"MPC will not delete task {job_id} yet: the task is not in a final state "
                f"({NOT_FINAL})",
                provider=self.name,
                job_id=job_id,
                hint="Nothing was deleted; the delete will be tried again later",
                permanent=False,
            )
        # A 404, or another 400, may be MPC's way of saying "no such task" [?]: a delete whose
        # answer was lost and is sent again meets one. Only a lookup that no longer finds the
        # task makes it gone; a 404 from a wrong base URL must not read as a deleted task.
        task, _data = self._read(job_id, what=f"checking task {job_id} after its delete")
        if task is None:
            return AlreadyGone(status_code=answer.status, body=answer.data)
        if answer.status == 404 and code is None:
            # No MPC error code: a gateway's or a wrong route's answer, not MPC's refusal.
            raise not_the_providers_404(
                f"deleting task {job_id}", "", self.settings.base_url
            ).for_job(self.name, job_id)
        describe = self.api.error_detail
        detail = describe(answer.status, answer.data) if describe else None
        raise ProviderRejected(
            f"MPC refused to delete task {job_id} ({answer.status}: {detail or 'no error code'})",
            provider=self.name,
            job_id=job_id,
            hint="The task is still at MPC; check it in the MPC console",
        )

    def check_credentials(self) -> None:
        self.api.request(
            "GET",
            self.tasks_path,
            params={"page": 0, "size": 1},
            what="checking the MPC credentials",
        )
