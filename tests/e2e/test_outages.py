"""Redis or the ledger out of reach: the sweep does nothing it cannot coordinate, says which
store and where (never its password), and exits 3.

The lease store follows the configuration, not what answers: a worker whose Redis is down
must not fall back to a lease in the ledger while another worker holds the Redis one, or two
sweeps of one provider run at once, each with a delete budget of its own.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import REDIS_URL, config_data, daily_provider, run_cli, settings_of, write_config
from worker import tasks
from worker.bootstrap import build_runtime
from worker.domain import JobState
from worker.errors import LedgerUnavailable, StoreUnavailable
from worker.ledger import Ledger
from worker.simulators.daily import DailySimulator
from worker.simulators.http import Request
from worker.simulators.s3server import S3Server
from worker.sweep import sweep_provider

PASSWORD = "redis-pass-4f9a2c71"


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class PrivateRedis:
    """A redis-server of the test's own, to kill: the shared one must stay up."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = closed_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            PASSWORD,
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = PrivateRedis(port, process)
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.05)
    client.close()
    yield server
    if process.poll() is None:
        server.kill()


def config(
    tmp_path: Path,
    sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    *,
    name: str = "retention.toml",
    ledger_url: str | None = None,
    **sections: Any,
) -> dict[str, Any]:
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=ledger_url or f"sqlite:///{tmp_path}/ledger.db",
        providers={"daily": daily_provider(sim)},
        **sections,
    )
    write_config(tmp_path / name, data)
    return data


@pytest.mark.redis
def test_a_sweep_whose_configured_redis_cannot_be_reached_does_nothing_and_exits_3(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    # given: two due jobs and two workers on one ledger: one whose Redis answers and holds
    # the sweep lease (its sweep is running), one whose [broker] url names a closed port
    ids = [daily_sim.add_job(transcription=[("txt", f"job {n}\n".encode())]) for n in range(2)]
    queue = f"test-{uuid.uuid4().hex[:12]}"
    up = config(tmp_path, daily_sim, bucket, s3_server, broker={"url": REDIS_URL, "queue": queue})
    running = build_runtime(settings_of(up))
    lease = running.sweep_lease("daily", timedelta(minutes=1))
    assert lease.where == "redis"
    assert lease.acquire()
    port = closed_port()
    down_url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    config(tmp_path, daily_sim, bucket, s3_server, name="down.toml", broker={"url": down_url})

    # when: the second worker sweeps
    run = run_cli("sweep", "--json", config=tmp_path / "down.toml")

    # then: it did nothing at all, said why in its one document, and exits 3
    assert run.code == 3, run.stderr[-3000:]
    summary = run.only_json()
    daily = summary["providers"]["daily"]
    assert (summary["deleted"], summary["exit_code"], daily["dispatched"]) == (0, 3, 0)
    assert daily["unreachable"]
    assert f"Redis at 127.0.0.1:{port}" in daily["stopped_reason"]
    assert daily_sim.requests == []  # not even the listing
    assert PASSWORD not in run.stdout + run.stderr
    assert "Traceback" not in run.stderr

    # and the worker holding the lease sweeps every job, once
    lease.release()
    assert sweep_provider(running, "daily").summary().deleted == len(ids)
    running.close()
    assert len(daily_sim.seen("DELETE")) == len(ids)


def test_when_redis_goes_away_mid_sweep_the_rest_is_deferred_naming_it_and_the_sweep_exits_3(
    private_redis: PrivateRedis,
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    # given: four due jobs swept one at a time, the sweep's lease and rate limits in a Redis
    # that dies as the first delete arrives at the provider
    ids = [daily_sim.add_job(transcription=[("txt", f"job {n}\n".encode())]) for n in range(4)]

    def kill_redis_on_delete(request: Request) -> None:
        if request.method == "DELETE" and private_redis.process.poll() is None:
            private_redis.kill()

    daily_sim.on_request = kill_redis_on_delete
    data = config(
        tmp_path,
        daily_sim,
        bucket,
        s3_server,
        broker={"url": private_redis.url},
        defaults={"concurrency": 1},
    )

    # when
    run = run_cli("sweep", "--json", config=tmp_path / "retention.toml")

    # then: the one JSON document, exit 3, and the sweep names the store that went away
    assert run.code == 3, run.stderr[-3000:]
    summary = run.only_json()
    where = f"Redis at 127.0.0.1:{private_redis.port}"
    daily = summary["providers"]["daily"]
    assert (summary["deleted"], summary["exit_code"]) == (1, 3)
    assert summary["deferred"] >= 1
    assert daily["unreachable"]
    assert where in daily["stopped_reason"]
    assert len(daily_sim.seen("DELETE")) == 1
    # each job it tried after that was deferred with a reason naming Redis, none crashed
    events = run.log_events()
    assert "job_crashed" not in {e["event"] for e in events}
    deferred = [e for e in events if e["event"] == "job_finished" and e["outcome"] == "deferred"]
    assert len(deferred) == summary["deferred"]
    assert all(where in e["error"] for e in deferred), deferred
    assert "Traceback" not in run.stderr
    assert PASSWORD not in run.stdout + run.stderr
    # and the ledger says the same: one deleted, the deferred ones waiting with that reason,
    # any the sweep did not reach untouched
    ledger = Ledger.open(data["ledger"]["url"])
    rows = [ledger.query.get("daily", job_id) for job_id in ids]
    ledger.close()
    assert [row.state for row in rows if row is not None].count(JobState.DELETED) == 1
    waiting = [row for row in rows if row is not None and row.state != JobState.DELETED]
    assert sum(where in (row.last_error or "") for row in waiting) == summary["deferred"]
    assert all(row.last_error is None or where in row.last_error for row in waiting)


def test_a_celery_sweep_whose_redis_cannot_be_reached_does_nothing_and_is_retried(
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: a worker process whose [broker] url names a closed port, and a due job
    daily_sim.add_job(transcription=[("txt", b"due\n")])
    port = closed_port()
    data = config(
        tmp_path, daily_sim, bucket, s3_server, broker={"url": f"redis://127.0.0.1:{port}/0"}
    )
    rt = build_runtime(settings_of(data))
    monkeypatch.setattr(tasks, "runtime", lambda: rt)

    # when: the sweep task runs; then it raises what autoretry_for retries, having done nothing
    with pytest.raises(StoreUnavailable, match=f"Redis at 127.0.0.1:{port}"):
        tasks.sweep("daily")
    rt.close()
    assert StoreUnavailable in tasks.TRANSIENT_INFRA
    assert daily_sim.requests == []


def test_a_ledger_that_goes_away_mid_sweep_stops_the_sweep_and_names_it(
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given: three due jobs swept one at a time, and a ledger that stops answering once the
    # first is deleted. (The shared PostgreSQL cannot be stopped, and a SQLite file stays
    # open while removed: the claim, the first write of each job, is where it is made to fail.)
    for n in range(3):
        daily_sim.add_job(transcription=[("txt", f"job {n}\n".encode())])
    data = config(tmp_path, daily_sim, bucket, s3_server, defaults={"concurrency": 1})
    rt = build_runtime(settings_of(data))
    claim = rt.ledger.jobs.claim
    down = LedgerUnavailable("the ledger at sqlite:///gone.db cannot be used (disk I/O error)")

    def claim_while_up(*args: Any, **kwargs: Any) -> Any:
        if daily_sim.seen("DELETE"):
            raise down
        return claim(*args, **kwargs)

    rt.ledger.jobs.claim = claim_while_up  # type: ignore[method-assign]

    # when
    report = sweep_provider(rt, "daily")
    rt.close()

    # then: the first deleted, the sweep stopped at the first job that met the outage, said
    # why, and nothing went to the thread pool's "exception calling callback"
    summary = report.summary()
    assert (summary.deleted, summary.unreachable) == (1, True)
    assert summary.stopped_reason is not None
    assert "the ledger at sqlite:///gone.db cannot be used" in summary.stopped_reason
    assert len(daily_sim.seen("DELETE")) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]


def pg_down() -> str:
    return f"postgresql+psycopg://retention:ledger-pass-81c2@127.0.0.1:{closed_port()}/retention"


def sqlite_unopenable(tmp_path: Path) -> str:
    folder = tmp_path / "ledger.db"  # a folder where the database file should be
    folder.mkdir()
    return f"sqlite:///{folder}"


@pytest.mark.parametrize("command", [("status",), ("sweep", "--json")], ids=["status", "sweep"])
@pytest.mark.parametrize("ledger", ["postgresql", "sqlite"])
def test_a_ledger_that_cannot_be_opened_exits_3_and_names_it(
    command: tuple[str, ...],
    ledger: str,
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    # given: a ledger URL to a closed port, or to a file that cannot be opened
    url = pg_down() if ledger == "postgresql" else sqlite_unopenable(tmp_path)
    config(tmp_path, daily_sim, bucket, s3_server, ledger_url=url)

    # when
    run = run_cli(*command, config=tmp_path / "retention.toml")

    # then: exit 3, and one message that names the ledger, its password masked
    assert run.code == 3, run.stderr[-3000:]
    assert run.stdout == ""
    message = run.stderr
    if "--json" in command:
        error = json.loads(run.stderr)
        assert (error["message_type"], error["code"]) == ("exit_error", 3)
        message = error["message"]
    assert "the ledger at " in message
    assert ("127.0.0.1:" if ledger == "postgresql" else "ledger.db") in message
    assert "ledger-pass-81c2" not in run.stderr
    assert "unexpected" not in message
    assert "Traceback" not in run.stderr
    assert daily_sim.requests == []
