"""Prometheus metrics from a real Celery worker (prefork pool), scraped while a sweep runs:
what every process recorded, merged, with the schedule's gauges; and the ledger's gauges from
`retention exporter`, the one process that serves them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartWorker
from tests.helpers import (
    REDIS_URL,
    ROOT,
    config_data,
    daily_provider,
    run_cli,
    unused_port,
    write_config,
)
from worker import __version__
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_worker_serves_metrics_from_every_process_while_a_sweep_runs(
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    sqlite_url: str,
    tmp_path: Path,
    celery_queue: str,
    start_worker: StartWorker,
) -> None:
    # given: due jobs whose downloads are slow, and a worker with four processes
    jobs = [daily_sim.add_job(transcription=[("txt", f"job {n}".encode())]) for n in range(6)]
    daily_sim.inject("delay", path="^/files/", seconds=0.5, times=6)
    port = unused_port()
    config = write_config(
        tmp_path / "retention.toml",
        config_data(
            bucket=bucket,
            endpoint_url=s3_server.endpoint_url,
            ledger_url=sqlite_url,
            providers={"daily": daily_provider(daily_sim)},
            broker={"url": REDIS_URL, "queue": celery_queue},
        )
        # The ledger's gauges are read again within a second, not the default 15.
        | {"metrics": {"port": port, "address": "127.0.0.1", "ledger_cache_seconds": 1}},
    )
    start_worker(
        config,
        celery_queue,
        concurrency=4,
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")},
    )
    exporter_port = unused_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "worker", "exporter", "--port", str(exporter_port)],
        cwd=ROOT,
        env={**os.environ, "RETENTION_CONFIG": str(config)},
        stdout=(tmp_path / "exporter.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    started = time.time()

    # when: a sweep is enqueued, and the metrics are scraped while it runs
    deadline = time.monotonic() + 60
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    while not samples and time.monotonic() < deadline:
        try:
            samples = scrape(port)
        except OSError:
            time.sleep(0.2)
    assert value(samples, "retention_sweep_period_seconds", provider="daily") == 3600
    assert value(samples, "retention_build_info", version=__version__) == 1
    hourly = {"provider": "daily", "schedule": "0 * * * *"}
    first = value(samples, "retention_first_scheduled_sweep_timestamp_seconds", **hourly)
    assert first == (started // 3600 + 1) * 3600
    # the ledger's state is the exporter's to serve, not every worker's
    assert not [name for name, _ in samples if name.startswith("retention_ledger_")]
    assert run_cli("sweep", "--enqueue", config=config).code == 0
    seen_during: list[float] = []
    ledger: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    try:
        while time.monotonic() < deadline:
            samples = scrape(port)
            deleted = value(samples, "retention_jobs_deleted_total", provider="daily")
            seen_during.append(deleted)
            try:
                ledger = scrape(exporter_port)
            except OSError:
                ledger = {}
            in_ledger = value(ledger, "retention_ledger_jobs", provider="daily", state="deleted")
            if deleted == in_ledger == len(jobs):
                break
            time.sleep(0.2)
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
    # the exporter stops cleanly on SIGTERM
    assert exporter.returncode == 0

    # then: the counts from every worker process add up, and the sweep is recorded
    assert any(0 < n < len(jobs) for n in seen_during), seen_during  # scraped mid-sweep
    assert value(samples, "retention_jobs_archived_total", provider="daily") == len(jobs)
    assert value(samples, "retention_jobs_deleted_total", provider="daily") == len(jobs)
    assert value(samples, "retention_archived_bytes_total", provider="daily") == sum(
        len(f"job {n}") for n in range(len(jobs))
    )
    assert value(samples, "retention_due_to_deleted_seconds_count", provider="daily") == len(jobs)
    assert value(samples, "retention_sweep_duration_seconds_count", provider="daily") >= 1
    last = value(samples, "retention_last_successful_sweep_timestamp_seconds", provider="daily")
    assert started <= last <= time.time()
    assert value(samples, "retention_jobs_failed_total", provider="daily") == 0
    # and the ledger, read by the exporter, agrees; the next sweep is the next hour's
    assert value(ledger, "retention_ledger_up") == 1
    assert value(ledger, "retention_ledger_jobs", provider="daily", state="pending") == 0
    assert value(ledger, "retention_ledger_failed_jobs", provider="daily") == 0
    assert value(ledger, "retention_ledger_overdue_jobs", provider="daily") == 0
    next_sweep = value(samples, "retention_next_sweep_timestamp_seconds", **hourly)
    assert next_sweep == (last // 3600 + 1) * 3600
    # and every request to the provider's API was counted, by the process that sent it
    requests = value(
        samples, "retention_provider_requests_total", provider="daily", method="GET", outcome="2xx"
    )
    assert requests >= len(jobs)
