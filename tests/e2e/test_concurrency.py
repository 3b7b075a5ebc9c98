"""Workers, beat-triggered sweeps and a hand-run sweep all at once, on PostgreSQL: every due
job is deleted exactly once, only after it is archived, and the provider's rate limit holds
across every process."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import StartWorker
from tests.e2e.test_crashes import DeleteGuard, daily_job
from tests.helpers import (
    REDIS_URL,
    config_data,
    daily_provider,
    run_cli,
    run_process,
    write_config,
)
from worker.ledger import Ledger
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

JOBS = 24
RATE = 8  # requests per second to the provider's API


def busiest_second(times: list[float]) -> int:
    """The most requests that arrived within any one second."""
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_workers_and_overlapping_sweeps_delete_each_job_once_within_the_rate_limit(
    daily_sim: DailySimulator,
    bucket: str,
    s3: S3Client,
    s3_server: S3Server,
    postgres_url: str,
    tmp_path: Path,
    celery_queue: str,
    start_worker: StartWorker,
) -> None:
    # given: many due jobs, two workers (four processes), a guard on every DELETE
    ids = [
        daily_sim.add_job(transcription=[("txt", f"job {n}".encode())], summary=("txt", b"summary"))
        for n in range(JOBS)
    ]
    guard = DeleteGuard(s3, bucket, "daily", daily_job)
    daily_sim.on_request = guard
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=postgres_url,
        providers={"daily": daily_provider(daily_sim, rate_limit=f"{RATE}/second", page_size=10)},
        broker={"url": REDIS_URL, "queue": celery_queue},
    )
    config = write_config(tmp_path / "retention.toml", data)
    for _ in range(2):
        start_worker(config, celery_queue, loglevel="WARNING")
    # when: two beat-triggered sweeps and a hand-run sweep, at once
    for _ in range(2):  # what beat sends: retention.sweep for the provider
        assert run_cli("sweep", "--enqueue", config=config).code == 0
    manual: list[int] = []
    thread = threading.Thread(
        target=lambda: manual.append(run_process("sweep", config=config).code)
    )
    thread.start()
    ledger = Ledger.open(postgres_url)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = [getattr(ledger.query.get("daily", job_id), "state", None) for job_id in ids]
        if all(state == "deleted" for state in states):
            break
        time.sleep(0.5)
    thread.join(timeout=120)

    # then: every job deleted exactly once, never before its archive was complete
    assert all(state == "deleted" for state in states), states
    assert manual == [0]
    assert guard.violations == []
    assert [daily_sim.deletes_of(job_id) for job_id in ids] == [1] * JOBS
    # and the provider's API never saw more than its limit in any second
    api = [seen.at for seen in daily_sim.requests if seen.path.startswith("/v1/")]
    assert len(api) >= 3 * JOBS
    # The limit is one moving window shared by the five processes through Redis: over any span
    # it admits at most RATE x (span + 1) requests, where five separate in-process limiters
    # would admit five times that. This bound is exact.
    assert len(api) <= RATE * (max(api) - min(api) + 1)
    # Per second the simulator measures arrivals, not the moment each process took its slot;
    # on a loaded machine a request can arrive a few tens of ms late, next to the following
    # second's, so the peaks get that much room and no more.
    assert max(Counter(int(at) for at in api).values()) <= RATE + 2
    assert busiest_second(api) <= RATE + 3
    assert all(seen.status != 429 for seen in daily_sim.requests)
