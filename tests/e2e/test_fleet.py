"""One configuration holding all five provider types, swept by the CLI and by Celery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import StartWorker
from tests.e2e.fleet import Fleet, Sims, assert_fleet_swept, build, start_sims
from tests.helpers import REDIS_URL, run_cli
from worker.ledger import Ledger
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def sims(s3: S3Client, custom_bucket: str) -> Iterator[Sims]:
    started = start_sims(s3, custom_bucket)
    yield started
    started.stop()


@pytest.fixture
def fleet(sims: Sims, bucket: str) -> Fleet:
    return build(sims, bucket)


def track_all(fleet: Fleet, config: Path) -> None:
    for provider, ids in fleet.tracked.items():
        # "--": a simulated id may start with "-", and must not be read as an option.
        run = run_cli("track", provider, "--", *ids, config=config)
        assert run.code == 0, run.stderr


@pytest.mark.slow
def test_a_cli_sweep_handles_every_provider_in_one_configuration(
    fleet: Fleet, s3: S3Client, s3_server: S3Server, ledger_url: str, tmp_path: Path
) -> None:
    # given: six accounts of five types, and the jobs that have no list endpoint tracked
    config = fleet.write(tmp_path / "retention.toml", ledger_url, s3_server.endpoint_url)
    track_all(fleet, config)
    # and transient faults the providers recover from
    fleet.loom.inject(path="/details$", status=503, body={"msg": "ERROR: busy"})
    fleet.unsiloed.inject(
        path="/jobs/",
        status=429,
        headers={"Retry-After": "1"},
        body={"detail": "Too many requests"},
    )
    fleet.mpc_ak.inject(
        path="/transcodings/task$",
        method="DELETE",
        status=400,
        body={
            "error_code": "MPC.10213",
            "error_msg": "Operation failed. The task is not in the final state.",
        },
    )

    # when: one sweep, and another for what was deferred
    first = run_cli("sweep", "--json", config=config, timeout=300)
    assert first.code == 1, first.stderr  # some jobs were deferred
    with Ledger.open(ledger_url).engine.begin() as conn:
        conn.exec_driver_sql("UPDATE jobs SET next_attempt_at = NULL")
    second = run_cli("sweep", "--json", config=config, timeout=300)
    assert second.code == 1, second.stderr  # Unsiloed's failed job is kept on purpose

    # then: every due job of every provider is archived and deleted once; the rest untouched
    assert_fleet_swept(fleet, s3)
    total = sum(len(ids) for ids in fleet.due.values())
    deleted = first.last_json()["deleted"] + second.last_json()["deleted"]
    assert deleted == total
    assert first.last_json()["failed"] == second.last_json()["failed"] == 0
    assert set(first.last_json()["providers"]) == {
        "daily",
        "loom",
        "mpc_ak",
        "mpc_token",
        "unsiloed",
        "dato",
    }


@pytest.mark.redis
@pytest.mark.slow
def test_celery_workers_handle_every_provider_after_an_enqueue(
    fleet: Fleet,
    s3: S3Client,
    s3_server: S3Server,
    postgres_url: str,
    tmp_path: Path,
    celery_queue: str,
    start_worker: StartWorker,
) -> None:
    config = fleet.write(
        tmp_path / "retention.toml",
        postgres_url,
        s3_server.endpoint_url,
        broker={"url": REDIS_URL, "queue": celery_queue},
    )
    track_all(fleet, config)
    start_worker(config, celery_queue, concurrency=4, loglevel="WARNING")
    assert run_cli("sweep", "--enqueue", config=config).code == 0
    ledger = Ledger.open(postgres_url)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        rows = [ledger.query.get(p, j) for p, j in fleet.all_due()]
        if all(r is not None and r.state == "deleted" for r in rows):
            break
        time.sleep(0.5)
    assert_fleet_swept(fleet, s3)
