"""The weekly `retention.scrub` beat runs: the scrub over the process's runtime, its findings in
the log and the metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.helpers import config_data, write_config
from worker.bootstrap import reset_process_runtime
from worker.domain import JobState
from worker.ledger import Ledger
from worker.ledger.database import new_job
from worker.ledger.schema import jobs
from worker.settings import CONFIG_ENV
from worker.simulators.s3server import S3Server
from worker.tasks import scrub_task


@pytest.fixture
def fresh_runtime() -> Iterator[None]:
    """The task builds this process's runtime from RETENTION_CONFIG: none from another test."""
    reset_process_runtime()
    yield
    reset_process_runtime()


def test_the_scrub_task_reports_a_missing_manifest_in_its_metrics(
    s3_server: S3Server,
    bucket: str,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_runtime: None,
) -> None:
    # given a ledger with one archived job whose manifest is not in the bucket
    config = write_config(
        tmp_path / "retention.toml",
        config_data(
            bucket=bucket, endpoint_url=s3_server.endpoint_url, ledger_url=sqlite_url, providers={}
        ),
    )
    monkeypatch.setenv(CONFIG_ENV, str(config))
    ledger = Ledger.open(sqlite_url)
    row = new_job("daily", "lost", datetime.now(UTC)) | {
        "state": JobState.ARCHIVED.value,
        "manifest_key": "archive/daily/lost/manifest.json",
    }
    with ledger.engine.begin() as conn:
        conn.execute(jobs.insert(), [row])
    ledger.close()
    # (absent until the process's first metric, then 0: never)
    clean_before = REGISTRY.get_sample_value("retention_last_clean_scrub_timestamp_seconds") or 0
    began = time.time()

    # when beat's weekly task runs (here, in this process)
    summary = scrub_task()

    # then it found the missing manifest, and the metrics say when and how much
    assert summary["jobs"] == 1
    assert summary["findings"] == 1
    assert REGISTRY.get_sample_value("retention_scrub_findings") == 1
    last = REGISTRY.get_sample_value("retention_last_scrub_timestamp_seconds")
    assert last is not None
    assert began <= last <= time.time()
    assert REGISTRY.get_sample_value("retention_last_clean_scrub_timestamp_seconds") == (
        clean_before
    )
