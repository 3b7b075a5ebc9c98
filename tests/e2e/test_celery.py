"""The queued path: `retention sweep --enqueue`, Redis, and a real `celery worker` process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from tests.conftest import StartWorker
from tests.e2e.scenario import DUE, Scenario, assert_swept, build
from tests.helpers import REDIS_URL, config_data, run_cli, write_config
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


def test_an_enqueue_in_json_prints_what_it_enqueued_and_no_sweep_counts(
    tmp_path: Path, celery_queue: str
) -> None:
    # given: two providers, and no worker consuming the queue
    provider = {"type": "daily", "api_key": "k", "base_url": "http://127.0.0.1:9/v1"}
    data = config_data(
        bucket="acme-archive",
        endpoint_url="http://127.0.0.1:9",
        ledger_url=f"sqlite:///{tmp_path}/ledger.db",
        providers={"daily": provider, "daily_eu": provider},
        broker={"url": REDIS_URL, "queue": celery_queue},
    )
    config = write_config(tmp_path / "retention.toml", data)

    # when
    run = run_cli("sweep", "--enqueue", "--json", config=config)

    # then: one document saying what was sent where, and nothing as if a sweep had run
    assert run.code == 0, run.stderr
    document = run.only_json()
    assert document["message_type"] == "enqueued"
    assert document["queue"] == f"{celery_queue}.sweeps"
    assert not {"archived", "deleted", "deferred", "failed", "skipped"} & set(document)
    sent = {e["provider"]: e for e in document["enqueued"]}
    assert set(sent) == {"daily", "daily_eu"}
    assert all(e["task"] == "retention.sweep" for e in sent.values())
    # and the messages are in the queue, with those task ids
    client = redis.Redis.from_url(REDIS_URL)
    queued = [json.loads(m) for m in client.lrange(f"{celery_queue}.sweeps", 0, -1)]
    client.close()
    assert {m["headers"]["id"] for m in queued} == {e["task_id"] for e in sent.values()}


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
