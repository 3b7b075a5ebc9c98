"""`retention check`, `report` and `restore` against the simulators and the S3 server."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.scenario import DUE, Scenario, build, folder
from tests.helpers import config_data, daily_provider, run_cli, write_config
from worker.simulators.blobs import chunks_of
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def daily_config(
    tmp_path: Path, sim: DailySimulator, bucket: str, endpoint: str, **sections: Any
) -> Path:
    data = config_data(
        bucket=bucket,
        endpoint_url=endpoint,
        ledger_url=f"sqlite:///{tmp_path}/ledger.db",
        providers={"daily": daily_provider(sim)},
    )
    for section, values in sections.items():
        data[section] = data.get(section, {}) | values
    return write_config(tmp_path / "retention.toml", data)


# -- check ----------------------------------------------------------------------------------


def test_check_passes_when_everything_is_reachable(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    run = run_cli("check", config=daily_config(tmp_path, daily_sim, bucket, s3_server.endpoint_url))
    assert run.code == 0, run.stdout
    lines = [line for line in run.stdout.splitlines() if line.startswith(("ok", "FAILED"))]
    assert [line.split()[1].rstrip(":") for line in lines] == [
        "config",
        "archive",
        "ledger",
        "broker",
        "provider",
    ]
    assert all(line.startswith("ok") for line in lines)
    assert "Object Lock: off" in run.stdout
    assert "credentials accepted" in run.stdout


def test_check_names_a_wrong_api_key_without_showing_it(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    config = daily_config(tmp_path, daily_sim, bucket, s3_server.endpoint_url)
    wrong = f"wrong-{uuid.uuid4().hex}"
    run = run_cli("check", config=config, env={"RETENTION_PROVIDERS__DAILY__API_KEY": wrong})
    assert run.code == 1
    assert "FAILED  provider daily" in run.stdout
    assert "credentials" in run.stdout
    assert wrong not in run.stdout + run.stderr


def test_check_names_an_unreachable_providers_url_and_why_and_speaks_of_no_job(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    # given: a provider whose base URL is a port nothing listens on
    closed = "http://127.0.0.1:9/v1"
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=f"sqlite:///{tmp_path}/ledger.db",
        providers={"daily": daily_provider(daily_sim, base_url=closed)},
    )
    config = write_config(tmp_path / "retention.toml", data)

    # when
    run = run_cli("check", "--no-probe", config=config)
    as_json = run_cli("check", "--no-probe", "--json", config=config)

    # then: its line names the URL and the cause, and what to check; a check has no job
    assert run.code == as_json.code == 1
    line = next(line for line in run.lines if line.startswith("FAILED  provider daily"))
    assert f"{closed}/batch-processor" in line
    assert "connection refused" in line
    assert "base_url" in line
    assert "job" not in line
    (provider,) = [c for c in as_json.only_json()["checks"] if c["name"] == "provider daily"]
    assert provider["detail"] == line.split(": ", 1)[1]


def test_check_names_a_missing_bucket(
    daily_sim: DailySimulator, s3_server: S3Server, tmp_path: Path
) -> None:
    run = run_cli(
        "check",
        "--skip-providers",
        config=daily_config(tmp_path, daily_sim, "no-such-archive-bucket", s3_server.endpoint_url),
    )
    assert run.code == 1
    assert "FAILED  archive" in run.stdout
    assert "no-such-archive-bucket" in run.stdout


def test_check_reads_the_buckets_object_lock_and_refuses_a_missing_one(
    daily_sim: DailySimulator, bucket: str, s3: S3Client, s3_server: S3Server, tmp_path: Path
) -> None:
    locked = f"locked-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=locked,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}},
        },
    )
    ok = run_cli(
        "check",
        "--skip-providers",
        config=daily_config(tmp_path, daily_sim, locked, s3_server.endpoint_url),
    )
    assert ok.code == 0, ok.stdout
    assert "Object Lock: on, default GOVERNANCE for 30 days" in ok.stdout
    wanted = run_cli(
        "check",
        "--skip-providers",
        config=daily_config(
            tmp_path,
            daily_sim,
            bucket,
            s3_server.endpoint_url,
            archive={"object_lock_mode": "COMPLIANCE", "object_lock_days": 7},
        ),
    )
    assert wanted.code == 1
    assert "has no Object Lock" in wanted.stdout


def test_check_says_when_migrations_are_pending(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    config = daily_config(
        tmp_path, daily_sim, bucket, s3_server.endpoint_url, ledger={"auto_migrate": False}
    )
    run = run_cli("check", "--skip-providers", config=config)
    assert run.code == 1
    assert "migrations pending" in run.stdout
    assert "retention migrate" in run.stdout
    assert run_cli("migrate", config=config).code == 0
    assert run_cli("check", "--skip-providers", config=config).code == 0


def test_check_names_an_unreachable_broker(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    run = run_cli(
        "check",
        "--skip-providers",
        "--json",
        config=daily_config(
            tmp_path,
            daily_sim,
            bucket,
            s3_server.endpoint_url,
            broker={"url": "redis://:hunter2-secret@127.0.0.1:9/0"},
        ),
    )
    assert run.code == 1
    result = run.last_json()
    broker = next(c for c in result["checks"] if c["name"] == "broker")
    assert not broker["ok"]
    assert "127.0.0.1:9" in broker["detail"]
    assert "hunter2-secret" not in run.stdout


# -- status ---------------------------------------------------------------------------------


def test_status_shows_a_job_in_a_status_the_worker_does_not_know(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    # given: a Daily job that went from processing to a status word no adapter knows
    job_id = daily_sim.add_job("processing", transcription=[("txt", b"hello\n")])
    config = daily_config(tmp_path, daily_sim, bucket, s3_server.endpoint_url)
    assert run_cli("sweep", config=config).code == 0
    daily_sim.set_status(job_id, "paused")

    # when: a sweep defers it, and a person asks for the status
    assert run_cli("sweep", config=config).code == 1
    as_json = run_cli("status", "--json", config=config)
    text = run_cli("status", config=config)

    # then: it is there, with its status word, its attempts and why it waits
    assert as_json.code == text.code == 0, as_json.stderr + text.stderr
    (daily,) = as_json.only_json()["providers"]
    (unknown,) = daily["unknown"]
    assert (unknown["job_id"], unknown["status"], unknown["attempts"]) == (job_id, "paused", 1)
    assert "'paused' is not one this worker knows" in unknown["last_error"]
    assert daily["unknown_count"] == 1
    line = next(line for line in text.lines if job_id in line)
    assert "paused" in line
    assert "1 attempt" in line
    assert "is not one this worker knows" in line
    assert daily_sim.jobs[job_id].status == "paused"  # and it is still at Daily


# -- report and restore ---------------------------------------------------------------------


@pytest.fixture
def swept(
    daily_sim: DailySimulator,
    later_sim: DailySimulator,
    bucket: str,
    custom_bucket: str,
    s3_server: S3Server,
    tmp_path: Path,
) -> tuple[Scenario, Path]:
    scenario = build(daily_sim, later_sim, bucket, custom_bucket)
    config = scenario.write(
        tmp_path / "retention.toml", f"sqlite:///{tmp_path}/ledger.db", s3_server.endpoint_url
    )
    assert run_cli("hold", "daily", scenario.ids["held"], config=config).code == 0
    # The job in an unknown status is deferred: exit 1.
    assert run_cli("sweep", config=config).code == 1
    return scenario, config


def test_report_lists_every_deleted_job_in_each_format(swept: tuple[Scenario, Path]) -> None:
    scenario, config = swept
    deleted = {scenario.ids[label] for label in DUE}

    as_csv = run_cli("report", "--format", "csv", config=config)
    assert as_csv.code == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {row["job_id"] for row in rows} == deleted
    for row in rows:
        assert row["provider"] == "daily"
        assert all(row[name] for name in ("due_at", "archived_at", "deleted_at"))
        assert row["manifest_key"].endswith("manifest.json")
        assert row["provider_answer"] == "deleted"
        assert row["provider_status_code"] == "200"
    big = next(r for r in rows if r["job_id"] == scenario.ids["finished_big"])
    assert int(big["files"]) == 2
    assert int(big["bytes"]) > 9 * 1024 * 1024
    assert len(big["archive_keys"].split(";")) == 2

    as_json = run_cli("report", "--format", "json", "--provider", "daily", config=config)
    document = as_json.only_json()
    assert (document["message_type"], document["provider"]) == ("report", "daily")
    assert {row["job_id"] for row in document["jobs"]} == deleted
    plain = run_cli("report", config=config)
    assert all(job_id in plain.stdout for job_id in deleted)


def test_report_filters_by_time_and_refuses_a_bad_duration(swept: tuple[Scenario, Path]) -> None:
    _scenario, config = swept
    future = run_cli("report", "--since", "2999-01-01", "--format", "json", config=config)
    assert future.only_json()["jobs"] == []
    bad = run_cli("report", "--since", "lately", config=config)
    assert bad.code == 2
    assert "neither a duration" in bad.stderr


def test_restore_gets_every_file_back_verified(
    swept: tuple[Scenario, Path], tmp_path: Path
) -> None:
    scenario, config = swept
    job_id = scenario.ids["finished_big"]
    target = tmp_path / "restored"

    run = run_cli("restore", "daily", job_id, "--to", str(target), config=config)

    assert run.code == 0, run.stdout
    for key, content in scenario.outputs[job_id].items():
        assert (target / key).read_bytes() == b"".join(chunks_of(content))
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["job_id"] == job_id
    assert (target / "deletion.json").exists()
    assert "2 of 2 file(s) restored" in run.stdout


def test_restore_reports_a_file_that_changed_or_vanished_in_the_archive(
    swept: tuple[Scenario, Path], s3: S3Client
) -> None:
    scenario, config = swept
    job_id = scenario.ids["finished"]
    keys = [folder("daily", job_id) + key for key in scenario.outputs[job_id]]
    s3.put_object(Bucket=scenario.bucket, Key=keys[0], Body=b"tampered")
    s3.delete_object(Bucket=scenario.bucket, Key=keys[1])

    run = run_cli("restore", "daily", job_id, "--verify-only", config=config)

    assert run.code == 1
    assert "PROBLEM" in run.stdout
    assert "manifest says" in run.stdout
    assert "missing or unreadable" in run.stdout
    assert "1 of 3 file(s) verified; 2 missing or different" in run.stdout


def test_restore_of_a_job_that_was_never_archived_says_so(swept: tuple[Scenario, Path]) -> None:
    _scenario, config = swept
    run = run_cli("restore", "daily", "never-archived", "--verify-only", config=config)
    assert run.code == 1
    assert "no manifest" in run.stderr
    usage = run_cli("restore", "daily", "x", config=config)
    assert usage.code == 2


def test_restored_bytes_match_the_manifest_digests(
    swept: tuple[Scenario, Path], tmp_path: Path
) -> None:
    scenario, config = swept
    job_id = scenario.ids["custom"]
    target = tmp_path / "custom"
    assert run_cli("restore", "daily", job_id, "--to", str(target), config=config).code == 0
    manifest = json.loads((target / "manifest.json").read_text())
    for entry in manifest["files"]:
        relative = entry["key"][len(folder("daily", job_id)) :]
        assert hashlib.sha256((target / relative).read_bytes()).hexdigest() == entry["sha256"]
