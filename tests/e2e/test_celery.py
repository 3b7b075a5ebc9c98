"""The queued path: `retention sweep --enqueue`, Redis, and a real `celery worker` process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import StartWorker
from tests.e2e.scenario import DUE, Scenario, assert_swept, build
from tests.helpers import REDIS_URL, run_cli
from worker.ledger import Ledger
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_celery_worker_sweeps_what_the_cli_enqueued(
    daily_sim: DailySimulator,
    later_sim: DailySimulator,
    bucket: str,
    custom_bucket: str,
    s3: S3Client,
    s3_server: S3Server,
    ledger_url: str,
    tmp_path: Path,
    celery_queue: str,
    start_worker: StartWorker,
) -> None:
    scenario: Scenario = build(daily_sim, later_sim, bucket, custom_bucket)
    config = scenario.write(
        tmp_path / "retention.toml",
        ledger_url,
        s3_server.endpoint_url,
        broker={"url": REDIS_URL, "queue": celery_queue},
    )
    assert run_cli("hold", "daily", scenario.ids["held"], config=config).code == 0
    log = start_worker(config, celery_queue)

    enqueued = run_cli("sweep", "--enqueue", "--json", config=config)

    assert enqueued.code == 0, enqueued.stderr
    assert {e["provider"] for e in enqueued.last_json()["enqueued"]} == {"daily", "daily_later"}
    ledger = Ledger.open(ledger_url)

    def all_deleted() -> bool:
        rows = [ledger.query.get("daily", scenario.ids[label]) for label in DUE]
        return all(r is not None and r.state == "deleted" for r in rows)

    wait_until(all_deleted, timeout=120, what="every due job to be deleted by the worker")
    assert_swept(scenario, s3)

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    finished = [e for e in lines if e.get("event") == "job_finished"]
    assert finished
    assert all(e.get("task_id") and e.get("task_name") == "retention.process_job" for e in finished)
    sweeps = [e for e in lines if e.get("event") == "sweep_finished"]
    assert {e["provider"] for e in sweeps} == {"daily", "daily_later"}
    assert all(e["task_name"] == "retention.sweep" for e in sweeps)
