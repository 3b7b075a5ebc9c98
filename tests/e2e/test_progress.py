"""A sweep's progress, end to end: the sweep tells of the jobs ahead as it reads them, and
`retention sweep --progress` shows jobs, bytes, rate and time left per provider on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.scenario import DUE, Scenario, build
from tests.helpers import run_cli, settings_of
from worker import sweep as sweep_module
from worker.bootstrap import build_runtime
from worker.outcomes import JobResult
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server
from worker.sweep import sweep_provider


@pytest.fixture
def scenario(
    daily_sim: DailySimulator, later_sim: DailySimulator, bucket: str, custom_bucket: str
) -> Scenario:
    return build(daily_sim, later_sim, bucket, custom_bucket)


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_a_sweep_tells_of_the_jobs_ahead_batch_by_batch_then_that_it_has_them_all(
    scenario: Scenario,
    s3_server: S3Server,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    dry_run: bool,
) -> None:
    # given: candidates read two at a time
    monkeypatch.setattr(sweep_module, "CANDIDATE_BATCH", 2)
    rt = build_runtime(
        settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)), dry_run=dry_run
    )
    found: list[tuple[str, int, bool]] = []
    results: list[JobResult] = []

    # when
    try:
        sweep_provider(
            rt,
            "daily",
            on_result=results.append,
            on_found=lambda provider, n, last: found.append((provider, n, last)),
        )
    finally:
        rt.close()

    # then: every job that finished was announced, the last word says so, and no earlier one
    assert {provider for provider, _, _ in found} == {"daily"}
    assert sum(n for _, n, _ in found) == len(results)
    assert [last for _, _, last in found] == [False] * (len(found) - 1) + [True]
    assert len(found) > 2  # the total grew as the sweep read on
    assert {r.job_id for r in results} >= {scenario.ids[label] for label in DUE}


def test_sweep_progress_in_a_pipe_goes_to_stderr_as_lines_and_stdout_keeps_its_document(
    scenario: Scenario, s3_server: S3Server, sqlite_url: str, tmp_path: Path
) -> None:
    config = scenario.write(tmp_path / "retention.toml", sqlite_url, s3_server.endpoint_url)

    run = run_cli("sweep", "--progress", "--json", config=config)

    assert run.code == 1, run.stderr  # the job in an unknown status is deferred
    assert run.only_json()["message_type"] == "summary"
    progress = [line for line in run.stderr.splitlines() if line.startswith("progress ")]
    finals = {line.split(":")[0]: line for line in progress}
    assert set(finals) == {"progress daily", "progress daily_later"}
    daily = finals["progress daily"]
    # (the rate and time left show once a second of work has passed: tests/unit/test_meter.py)
    assert daily.startswith("progress daily: 6/6 jobs, 9.0 MiB archived")


def test_no_progress_in_a_pipe_unless_asked(
    scenario: Scenario, s3_server: S3Server, sqlite_url: str, tmp_path: Path
) -> None:
    config = scenario.write(tmp_path / "retention.toml", sqlite_url, s3_server.endpoint_url)
    run = run_cli("sweep", "--dry-run", config=config)
    assert "progress " not in run.stderr
    forced_off = run_cli("sweep", "--dry-run", "--no-progress", config=config)
    assert "progress " not in forced_off.stderr
