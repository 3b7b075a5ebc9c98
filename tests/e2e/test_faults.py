"""Provider and archive faults: each defers the job, says why, and deletes nothing.

And each ends in success on a later attempt, once the fault is gone.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator, MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.helpers import config_data, daily_provider, settings_of
from worker.bootstrap import Runtime, build_runtime
from worker.domain import JobState
from worker.job import process_job
from worker.outcomes import JobResult, Outcome
from worker.simulators.daily import DailySimulator
from worker.simulators.s3proxy import S3FaultProxy, s3_error
from worker.simulators.s3server import S3Server


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[S3FaultProxy]:
    server = S3FaultProxy(s3_server.endpoint_url)
    server.start()
    yield server
    server.stop()


def runtime(
    sim: DailySimulator, bucket: str, endpoint: str, tmp_path: Path, **provider: Any
) -> Runtime:
    data = config_data(
        bucket=bucket,
        endpoint_url=endpoint,
        ledger_url=f"sqlite:///{tmp_path}/ledger.db",
        providers={"daily": daily_provider(sim, **provider)},
    )
    return build_runtime(settings_of(data))


def attempt(rt: Runtime, job_id: str) -> tuple[JobResult, list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        result = process_job(rt, "daily", job_id)
    return result, logs


def assert_deferred_with(
    rt: Runtime,
    sim: DailySimulator,
    job_id: str,
    result: Any,
    logs: list[MutableMapping[str, Any]],
    words: str,
) -> None:
    assert result.outcome == Outcome.DEFERRED, result.error
    assert words in (result.error or ""), result.error
    row = rt.ledger.query.get("daily", job_id)
    assert row is not None
    assert row.state in (JobState.PENDING, JobState.ARCHIVED)
    assert words in (row.last_error or "")
    assert row.next_attempt_at is not None
    assert row.next_attempt_at > rt.clock()
    finished = [e for e in logs if e["event"] == "job_finished"]
    assert finished[-1]["outcome"] == "deferred"
    assert words in finished[-1]["error"]
    assert sim.seen("DELETE") == []


def retry_now(rt: Runtime) -> None:
    with rt.ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE jobs SET next_attempt_at = NULL")


# Over HTTP, one fault of each kind the adapter meets; the pipeline's answer to every other
# error an adapter raises (each proven over HTTP in tests/providers) is in
# tests/pipeline/test_process_job.py, on the fakes.
PROVIDER_FAULTS = [
    pytest.param(
        {"status": 429, "headers": {"Retry-After": "3600"}, "body": {"error": "rate-limit-error"}},
        "429",
        id="429-retry-after",
    ),
    pytest.param({"status": 503, "times": 10, "body": {"error": "server-error"}}, "503", id="5xx"),
    pytest.param({"kind": "reset", "times": 10}, "RemoteProtocolError", id="reset"),
    pytest.param(
        {"status": 200, "body": {"id": "JOB", "status": "archiving"}},
        "'archiving' is not one this worker knows",
        id="unknown-status",
    ),
]


@pytest.mark.parametrize(("fault", "words"), PROVIDER_FAULTS)
def test_a_provider_fault_defers_the_job_and_deletes_nothing(
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    tmp_path: Path,
    fault: dict[str, Any],
    words: str,
) -> None:
    # given: a due job, and a fault on the provider's answer about it
    job_id = daily_sim.add_job(transcription=[("txt", b"hello")])
    rt = runtime(daily_sim, bucket, s3_server.endpoint_url, tmp_path)
    if isinstance(fault.get("body"), dict) and fault["body"].get("id") == "JOB":
        fault["body"] = {**fault["body"], "id": job_id}
    daily_sim.inject(path=f"/{job_id}$", method="GET", **fault)

    # when
    result, logs = attempt(rt, job_id)

    # then: deferred, recorded, nothing deleted; a long Retry-After is honoured
    assert_deferred_with(rt, daily_sim, job_id, result, logs, words)
    if "3600" in str(fault.get("headers")):
        row = rt.ledger.query.get("daily", job_id)
        assert row is not None
        assert row.next_attempt_at is not None
        assert row.next_attempt_at >= rt.clock() + timedelta(minutes=59)

    # and once the fault is gone, a later attempt succeeds
    daily_sim.clear_faults()
    retry_now(rt)
    assert attempt(rt, job_id)[0].outcome == Outcome.DELETED
    assert daily_sim.deletes_of(job_id) == 1
    rt.close()


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        pytest.param({"kind": "truncate"}, "broke off", id="truncated-download"),
        pytest.param({"kind": "reset"}, "cannot reach", id="reset-download"),
        pytest.param(
            {"status": 403, "body": "<Error><Code>AccessDenied</Code></Error>"},
            "HTTP 403",
            id="expired-link",
        ),
    ],
)
def test_a_download_fault_defers_the_job_and_deletes_nothing(
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    tmp_path: Path,
    fault: dict[str, Any],
    words: str,
) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"x" * 100_000)])
    rt = runtime(daily_sim, bucket, s3_server.endpoint_url, tmp_path)
    daily_sim.inject(path="^/files/", **fault)
    result, logs = attempt(rt, job_id)
    assert_deferred_with(rt, daily_sim, job_id, result, logs, words)
    retry_now(rt)
    assert attempt(rt, job_id)[0].outcome == Outcome.DELETED
    rt.close()


def test_a_read_timeout_defers_the_job(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"slow")])
    rt = runtime(daily_sim, bucket, s3_server.endpoint_url, tmp_path, timeout=0.5)
    daily_sim.inject("delay", path=f"/{job_id}$", method="GET", seconds=2, times=10)
    result, logs = attempt(rt, job_id)
    assert_deferred_with(rt, daily_sim, job_id, result, logs, "timed out")
    rt.close()


def test_a_connect_timeout_defers_the_job(bucket: str, s3_server: S3Server, tmp_path: Path) -> None:
    # given: a provider whose accept queue is full, so a connection is never established
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    sim = DailySimulator("k-connect-timeout")
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=f"sqlite:///{tmp_path}/ledger.db",
        providers={
            "daily": {
                "type": "daily",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "api_key": sim.api_key,
                "timeout": 0.5,
            }
        },
    )
    rt = build_runtime(settings_of(data))
    rt.ledger.operator.track("daily", ["some-job"], now=rt.clock())

    # when
    result, _logs = attempt(rt, "some-job")

    # then
    assert result.outcome == Outcome.DEFERRED
    assert "ConnectTimeout" in (result.error or "")
    rt.close()
    for s in (*fillers, listener):
        s.close()


S3_FAULTS = [
    pytest.param(
        "PUT",
        s3_error("InternalError", "We encountered an internal error.", 500),
        "InternalError",
        id="500",
    ),
    pytest.param(
        "PUT",
        s3_error("SlowDown", "Please reduce your request rate.", 503),
        "SlowDown",
        id="slowdown",
    ),
    pytest.param(
        "PUT", s3_error("AccessDenied", "Access Denied", 403), "AccessDenied", id="access-denied"
    ),
    # The delete gate's listing of the job's folder (a single PUT is proved by its answer).
    pytest.param("GET", {"status": 500, "body": ""}, "500", id="gate-check-500"),
]


@pytest.mark.parametrize(("method", "fault", "words"), S3_FAULTS)
def test_an_archive_fault_defers_the_job_and_deletes_nothing(
    daily_sim: DailySimulator,
    bucket: str,
    proxy: S3FaultProxy,
    tmp_path: Path,
    method: str,
    fault: dict[str, Any],
    words: str,
) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"hello")], summary=("txt", b"sum"))
    rt = runtime(daily_sim, bucket, proxy.endpoint_url, tmp_path)
    # Writes go to keys under the bucket; the gate's listing is a GET of the bucket itself.
    path = f"^/{bucket}/?$" if method == "GET" else f"/{bucket}/"
    proxy.inject(method=method, path=path, times=20, **fault)

    result, logs = attempt(rt, job_id)

    assert_deferred_with(rt, daily_sim, job_id, result, logs, words)
    proxy.clear_faults()
    retry_now(rt)
    assert attempt(rt, job_id)[0].outcome == Outcome.DELETED
    rt.close()


def test_a_failing_manifest_write_defers_the_delete(
    daily_sim: DailySimulator, bucket: str, proxy: S3FaultProxy, tmp_path: Path
) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"hello")])
    rt = runtime(daily_sim, bucket, proxy.endpoint_url, tmp_path)
    proxy.inject(
        method="PUT",
        path="manifest.json",
        times=20,
        **s3_error("InternalError", "We encountered an internal error.", 500),
    )
    result, logs = attempt(rt, job_id)
    assert_deferred_with(rt, daily_sim, job_id, result, logs, "manifest.json")
    rt.close()


def test_an_unreachable_archive_defers_the_job(
    daily_sim: DailySimulator, bucket: str, proxy: S3FaultProxy, tmp_path: Path
) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"hello")])
    rt = runtime(daily_sim, bucket, proxy.endpoint_url, tmp_path)
    proxy.stop()
    result, logs = attempt(rt, job_id)
    assert_deferred_with(rt, daily_sim, job_id, result, logs, "could not be reached")
    rt.close()


def test_a_job_that_fails_after_archiving_still_reports_what_it_archived(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"hello")], summary=("txt", b"sum"))
    rt = runtime(daily_sim, bucket, s3_server.endpoint_url, tmp_path)
    daily_sim.inject(
        path=f"/{job_id}$", method="DELETE", status=503, times=10, body={"error": "server-error"}
    )
    result, logs = attempt(rt, job_id)
    assert result.outcome == Outcome.DEFERRED
    assert result.archived
    assert result.files == 2
    finished = [e for e in logs if e["event"] == "job_finished"][-1]
    assert finished["archived"] is True
    rt.close()
