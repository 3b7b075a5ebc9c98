"""Reports that do not rewrite history: the policy in force at archive time is kept with the
job (in the ledger and in deletion.json), and a later change of configuration changes
nothing already reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from tests.e2e.scenario import folder
from tests.helpers import config_data, daily_provider, run_cli, write_config
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def test_a_report_keeps_the_policy_in_force_when_the_job_was_deleted(
    daily_sim: DailySimulator,
    later_sim: DailySimulator,
    bucket: str,
    s3: S3Client,
    s3_server: S3Server,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    # given: two accounts, each with a job deleted under retain_days = 0
    first = daily_sim.add_job("finished", transcription=[("txt", b"one\n")])
    second = later_sim.add_job("finished", transcription=[("txt", b"two\n")])
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"daily": daily_provider(daily_sim), "daily_later": daily_provider(later_sim)},
    )
    config = write_config(tmp_path / "retention.toml", data)
    assert run_cli("sweep", config=config).code == 0
    before = run_cli("report", "--format", "json", config=config)
    assert before.code == 0, before.stderr
    reported = {row["job_id"]: row for row in before.only_json()["jobs"]}

    # when: the retention changes, and one provider leaves the configuration
    data["defaults"]["retain_days"] = 30
    del data["providers"]["daily_later"]
    write_config(config, data)
    after = run_cli("report", "--format", "json", config=config)

    # then: both jobs are reported exactly as before, with the policy that deleted them
    assert after.code == 0, after.stderr
    assert {row["job_id"]: row for row in after.only_json()["jobs"]} == reported
    for job_id in (first, second):
        row = reported[job_id]
        assert row["retain_days"] == 0
        assert row["due_at"] is not None
        assert "when the worker first saw it finished" in row["due_reason"]
    receipt_key = folder("daily", first) + "deletion.json"
    receipt = json.loads(s3.get_object(Bucket=bucket, Key=receipt_key)["Body"].read())
    assert receipt["policy"]["retain_days"] == 0
    assert receipt["policy"]["due_at"][:19] == reported[first]["due_at"][:19]
    assert receipt["policy"]["due_reason"] == reported[first]["due_reason"]


def test_the_csv_report_carries_the_stored_policy(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str, tmp_path: Path
) -> None:
    job_id = daily_sim.add_job("finished", transcription=[("txt", b"x\n")])
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"daily": daily_provider(daily_sim)},
    )
    config = write_config(tmp_path / "retention.toml", data)
    assert run_cli("sweep", config=config).code == 0
    run = run_cli("report", "--format", "csv", "--since", "1d", config=config)
    assert run.code == 0, run.stderr
    header, line = run.stdout.strip().splitlines()[:2]
    assert header.split(",")[:5] == ["provider", "job_id", "due_at", "retain_days", "due_reason"]
    assert line.startswith(f"daily,{job_id},")
    assert ",0," in line
