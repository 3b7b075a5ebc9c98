"""A simulator of Huawei Cloud MPC's transcoding-task API (shared/providers.md section 3).

Faithful where the docs are clear, configurable where they are not:

* auth by ``X-Auth-Token`` (a configured IAM token) or by an ``SDK-HMAC-SHA256`` signature,
  recomputed here independently of the worker's signer. A signature more than ``max_skew``
  (15 min) from the simulator's clock is ``APIGW.0303`` "signature expired", a wrong one is
  ``APIGW.0303`` "verify signature fail" (echoing the canonical request, as the gateway
  does), both 401. A wrong token is 401 ``APIGW.0301`` "decrypt token fail" [I]. Real
  cloud-service gateways may answer AK/SK failures with ``APIGW.0301`` too:
  ``signature_error_code`` chooses;
* ``GET /v1/{project_id}/transcodings``: ``page`` (0-based), ``size`` (1-100, default 10),
  ``status``/``start_time``/``end_time`` filters, newest first [I], ``{task_array,
  is_truncated, total}``. With ``task_id`` (repeated key, at most 10 else 400 ``MPC.10202``)
  the paging and time filters are ignored;
* ``DELETE /v1/{project_id}/transcodings/task?task_id=N`` removes a final task's record with
  204, else 400 ``MPC.10213``. The OBS outputs are left where they are [I]. What MPC answers
  for an unknown task is not documented [?]: ``unknown_task_delete`` picks 400 ``MPC.10202``
  or 404;
* ``DELETE /v1/{project_id}/transcodings?task_id=N`` cancels a ``WAITING`` task (204 [I]);
* errors are MPC's ``{error_code, error_msg}`` or the gateway's ``{error_code, error_msg,
  request_id}``; throttling is 429 ``APIGW.0308`` [I] with no wait header, through ``inject``
  or ``rate_limit``.

MPC hands out no download links, so there is nothing under ``/files/`` and
``issued_signatures`` stays empty. Task outputs go to the user's "OBS" bucket through
``bucket_writer`` (an S3 server in tests), where a delete leaves them.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, unquote

from worker.simulators.blobs import Content
from worker.simulators.http import Request, Response, SimServer, route

# Writes an output object into the user's OBS bucket: (bucket, key, content).
BucketWriter = Callable[[str, str, Content], None]

FINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})
TIME_FORMAT = "%Y%m%d%H%M%S"
SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_TASK_IDS = 10
_AUTHORIZATION = re.compile(
    r"SDK-HMAC-SHA256\s+Access=(?P<access>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-fA-F]+)"
)
_DIGITS = re.compile(r"[0-9]{1,19}")
_PROJECT = "(?P<project_id>[^/]+)"


def _now() -> datetime:
    return datetime.now(UTC)


def stamp(when: datetime) -> str:
    """MPC's ``yyyymmddhhmmss`` in UTC."""
    return when.astimezone(UTC).strftime(TIME_FORMAT)


# -- the gateway's side of SDK-HMAC-SHA256, written apart from the worker's signer ----------


def _rfc3986(text: str) -> str:
    return quote(text, safe="~")


def gateway_canonical_request(
    method: str,
    raw_path: str,
    query: dict[str, list[str]],
    headers: dict[str, str],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    """The canonical request as the gateway rebuilds it from what arrived."""
    segments = [_rfc3986(s) for s in unquote(raw_path).split("/")]
    uri = "/".join(segments)
    if not uri.endswith("/"):
        uri += "/"
    pairs: list[str] = []
    for key in sorted(query):
        pairs.extend(f"{_rfc3986(key)}={_rfc3986(v)}" for v in sorted(query[key]))
    lines = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed_headers)
    payload = headers.get("x-sdk-content-sha256") or hashlib.sha256(body).hexdigest()
    return "\n".join(
        [method.upper(), uri, "&".join(pairs), lines, ";".join(signed_headers), payload]
    )


def gateway_signature(secret_key: str, sdk_date: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    to_sign = f"SDK-HMAC-SHA256\n{sdk_date}\n{digest}"
    return hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


# -- tasks ---------------------------------------------------------------------------------


@dataclass
class SimTask:
    task_id: str
    status: str
    seq: int
    create_time: str
    end_time: str
    input: dict[str, str]
    output: dict[str, str]
    output_file_name: list[str]
    trans_template_id: list[int] = field(default_factory=lambda: [7000523])
    user_data: str = ""
    error_code: str = ""
    description: str = ""
    # Fields merged over the record as served, to arrange odd shapes.
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "task_id": self.task_id,
            "status": self.status,
            "create_time": self.create_time,
            "end_time": self.end_time,
            "trans_template_id": list(self.trans_template_id),
            "input": dict(self.input),
            "output": dict(self.output),
            "output_file_name": list(self.output_file_name),
            "user_data": self.user_data,
            "error_code": self.error_code,
            "description": self.description,
            "tips": "",
            "transcode_detail": {"multitrans_info": []},
        }
        body.update(self.extra)
        return body


def _mpc_error(code: str, message: str, status: int = 400) -> Response:
    return Response.json({"error_code": code, "error_msg": message}, status=status)


def _gateway_error(code: str, message: str, status: int) -> Response:
    request_id = uuid.uuid4().hex
    return Response.json(
        {"error_msg": message, "error_code": code, "request_id": request_id},
        status=status,
        headers={"X-Request-Id": request_id},
    )


class HuaweiMpcSimulator(SimServer):
    credential_headers: ClassVar[tuple[str, ...]] = ("x-auth-token", "authorization")

    def __init__(
        self,
        project_id: str,
        *,
        token: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "cn-north-4",
        output_bucket: str = "mpc-outputs",
        bucket_writer: BucketWriter | None = None,
        clock: Callable[[], datetime] = _now,
        max_skew: timedelta = timedelta(minutes=15),
        unknown_task_delete: Literal[400, 404] = 400,
        signature_error_code: str = "APIGW.0303",
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.project_id = project_id
        self.token = token
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.output_bucket = output_bucket
        self.bucket_writer = bucket_writer
        self.clock = clock
        self.max_skew = max_skew
        self.unknown_task_delete = unknown_task_delete
        self.signature_error_code = signature_error_code
        self._state = threading.RLock()
        self.tasks: dict[str, SimTask] = {}
        self.deleted: list[str] = []
        self.canceled: list[str] = []
        # Task ids of every authenticated delete-record request, answered or not.
        self.delete_requests: list[str] = []
        # MPC hands out no links; kept so checks that scan for signatures work unchanged.
        self.issued_signatures: list[str] = []
        # Every request signature that passed, so a test can look for one in logs.
        self.seen_signatures: list[str] = []
        self._ids = itertools.count(3273178)
        self._seq = itertools.count()

    @property
    def base_url(self) -> str:
        return self.origin

    def provider_table(self, **extra: Any) -> dict[str, Any]:
        """This account's ``[providers.NAME]`` table: type, base URL and credentials, plus
        ``extra`` keys (the registry every configuration of a simulated account reads)."""
        table: dict[str, Any] = {
            "type": "huawei_mpc",
            "base_url": self.base_url,
            "project_id": self.project_id,
        }
        if self.access_key and self.secret_key:
            table |= {"access_key": self.access_key, "secret_key": self.secret_key}
        else:
            table["token"] = self.token
        return {**table, **extra}

    # -- arranging state -------------------------------------------------------------------

    def add_task(
        self,
        status: str = "SUCCEEDED",
        *,
        end_time: datetime | str | None = None,
        create_time: datetime | None = None,
        outputs: Sequence[tuple[str, Content]] = (),
        output_file_name: Sequence[str] | None = None,
        description: str = "",
        error_code: str = "",
        extra: dict[str, Any] | None = None,
        task_id: str | None = None,
    ) -> str:
        """Add a task. ``outputs`` are written to the OBS bucket under ``out/<task_id>/``.

        A final task without ``end_time`` ends now; a running one has an empty ``end_time``.
        A string ``end_time`` is served as given.
        """
        now = self.clock()
        task_id = task_id or str(next(self._ids))
        folder = f"out/{task_id}"
        names = list(output_file_name) if output_file_name is not None else []
        names += [name for name, _content in outputs]
        if isinstance(end_time, datetime):
            ended = stamp(end_time)
        elif isinstance(end_time, str):
            ended = end_time
        else:
            ended = stamp(now) if status in FINAL else ""
        task = SimTask(
            task_id=task_id,
            status=status,
            seq=next(self._seq),
            create_time=stamp(create_time or now - timedelta(minutes=5)),
            end_time=ended,
            input={"bucket": "mpc-inputs", "location": self.region, "object": f"src/{task_id}.mp4"},
            output={"bucket": self.output_bucket, "location": self.region, "object": folder},
            output_file_name=names,
            description=description,
            error_code=error_code,
            extra=dict(extra or {}),
        )
        with self._state:
            self.tasks[task_id] = task
        if self.bucket_writer is not None:
            for name, content in outputs:
                self.bucket_writer(self.output_bucket, f"{folder}/{name}", content)
        return task_id

    def set_status(self, task_id: str, status: str, *, end_time: datetime | None = None) -> None:
        """Move a task; reaching a final status stamps ``end_time`` (now unless given)."""
        with self._state:
            task = self.tasks[task_id]
            task.status = status
            if status in FINAL:
                task.end_time = stamp(end_time or self.clock())
            else:
                task.end_time = ""

    def deletes_of(self, task_id: str) -> int:
        with self._state:
            return self.delete_requests.count(task_id)

    # -- the gateway -----------------------------------------------------------------------

    def rate_limit_response(self) -> Response:
        return _gateway_error(
            "APIGW.0308",
            "The throttling threshold has been reached: policy user over ratelimit,"
            "limit:100,time:1 minute",
            429,
        )

    def not_found(self, request: Request) -> Response:
        return _gateway_error(
            "APIGW.0101", "The API does not exist or has not been published in the environment", 404
        )

    def _auth(self, request: Request) -> Response | None:
        token = request.header("x-auth-token")
        if token is not None:
            if self.token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
                return _gateway_error(
                    "APIGW.0301",
                    "Incorrect IAM authentication information: decrypt token fail",
                    401,
                )
            return self._tenant(request)
        header = request.header("authorization")
        if header is None:
            return _gateway_error(
                "APIGW.0301", "Incorrect IAM authentication information: no credentials", 401
            )
        return self._verify_signature(request, header) or self._tenant(request)

    def _sig_error(self, message: str) -> Response:
        return _gateway_error(
            self.signature_error_code, f"Incorrect app authentication information: {message}", 401
        )

    def _verify_signature(self, request: Request, header: str) -> Response | None:
        parsed = _AUTHORIZATION.fullmatch(header.strip())
        if parsed is None:
            return self._sig_error("authorization header is not SDK-HMAC-SHA256")
        if self.access_key is None or self.secret_key is None:
            return self._sig_error("app not found")
        if not hmac.compare_digest(parsed["access"].encode(), self.access_key.encode()):
            return _gateway_error(
                "APIGW.0301",
                "Incorrect IAM authentication information: Get secretKey failed,ak:******,"
                "err:ak not exist",
                401,
            )
        signed = parsed["signed"].split(";")
        if "x-sdk-date" not in signed:
            return self._sig_error("x-sdk-date is not a signed header")
        if any(name not in request.headers for name in signed):
            return self._sig_error("a signed header is missing from the request")
        sdk_date = request.headers["x-sdk-date"]
        try:
            signed_at = datetime.strptime(sdk_date, SDK_DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return self._sig_error("parse x-sdk-date fail")
        now = self.clock()
        if abs(now - signed_at) > self.max_skew:
            return self._sig_error(
                f"signature expired, signature time:{sdk_date},"
                f"server time:{now.astimezone(UTC).strftime(SDK_DATE_FORMAT)}"
            )
        # From the query as sent: parse_qs has dropped blank values, which are signed too.
        query: dict[str, list[str]] = {}
        for key, value in parse_qsl(request.raw_query, keep_blank_values=True):
            query.setdefault(key, []).append(value)
        canonical = gateway_canonical_request(
            request.method, request.path, query, request.headers, signed, request.body
        )
        expected = gateway_signature(self.secret_key, sdk_date, canonical)
        if not hmac.compare_digest(parsed["signature"].lower(), expected):
            return self._sig_error(
                "verify signature fail, canonicalRequest:" + canonical.replace("\n", "|")
            )
        with self._state:
            self.seen_signatures.append(expected)
        # Mandatory in AK/SK mode (H-del header table).
        if request.header("x-project_id") is None:
            return _mpc_error("MPC.10202", "Invalid request parameter: X-Project_Id is missing")
        return None

    def _tenant(self, request: Request) -> Response | None:
        claimed = request.header("x-project_id")
        if request.params.get("project_id") != self.project_id or (
            claimed is not None and claimed != self.project_id
        ):
            return _mpc_error("MPC.10208", "Failed to verify the tenant ID.", 403)
        return None

    # -- the API ---------------------------------------------------------------------------

    @route("GET", f"/v1/{_PROJECT}/transcodings")
    def list_tasks(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        ids = request.query.get("task_id", [])
        if ids:
            if len(ids) > MAX_TASK_IDS or not all(_DIGITS.fullmatch(i) for i in ids):
                return _mpc_error("MPC.10202", "Invalid request parameter: task_id")
            with self._state:
                found = [self.tasks[i].record() for i in dict.fromkeys(ids) if i in self.tasks]
            return Response.json({"task_array": found, "is_truncated": 0, "total": len(found)})
        try:
            page = int(request.arg("page", "0") or 0)
            size = int(request.arg("size", "10") or 10)
        except ValueError:
            return _mpc_error("MPC.10202", "Invalid request parameter: page or size")
        if page < 0 or not 1 <= size <= 100:
            return _mpc_error("MPC.10202", "Invalid request parameter: page or size")
        status = request.arg("status")
        since, until = request.arg("start_time"), request.arg("end_time")
        with self._state:
            chosen = [
                t
                for t in self.tasks.values()
                if (status is None or t.status == status)
                and (since is None or t.create_time >= since)
                and (until is None or t.create_time <= until)
            ]
            chosen.sort(key=lambda t: (t.create_time, t.seq), reverse=True)
            window = chosen[page * size : (page + 1) * size]
            body = {
                "task_array": [t.record() for t in window],
                "is_truncated": 1 if (page + 1) * size < len(chosen) else 0,
                "total": len(chosen),
            }
        return Response.json(body)

    def _one_task_id(self, request: Request) -> str | Response:
        values = request.query.get("task_id", [])
        if len(values) != 1 or not _DIGITS.fullmatch(values[0]):
            return _mpc_error("MPC.10202", "Invalid request parameter: task_id")
        return values[0]

    @route("DELETE", f"/v1/{_PROJECT}/transcodings/task")
    def delete_record(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        task_id = self._one_task_id(request)
        if isinstance(task_id, Response):
            return task_id
        with self._state:
            self.delete_requests.append(task_id)
            task = self.tasks.get(task_id)
            if task is None:
                return _mpc_error(
                    "MPC.10202",
                    "Invalid request parameter: the task does not exist",
                    self.unknown_task_delete,
                )
            if task.status not in FINAL:
                return _mpc_error(
                    "MPC.10213", "Operation failed. The task is not in the final state."
                )
            del self.tasks[task_id]
            self.deleted.append(task_id)
        return Response(204)

    @route("DELETE", f"/v1/{_PROJECT}/transcodings")
    def cancel(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        task_id = self._one_task_id(request)
        if isinstance(task_id, Response):
            return task_id
        with self._state:
            task = self.tasks.get(task_id)
            if task is None:
                return _mpc_error("MPC.10202", "Invalid request parameter: the task does not exist")
            if task.status != "WAITING":
                return _mpc_error(
                    "MPC.10202",
                    "Operation failed. Only a task waiting in the queue can be canceled.",
                )
            task.status = "CANCELED"
            task.end_time = stamp(self.clock())
            self.canceled.append(task_id)
        return Response(204)
