"""`retention sweep` end to end: simulator over HTTP, real S3 server, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog

from tests.e2e.scenario import DUE, Scenario, assert_swept, assert_untouched, build, folder
from tests.helpers import (
    config_data,
    daily_provider,
    multipart_uploads,
    objects,
    run_cli,
    settings_of,
    write_config,
)
from tests.json_at import at
from worker.bootstrap import Runtime, build_runtime
from worker.domain import JobState
from worker.job import process_job
from worker.outcomes import Outcome
from worker.simulators.blobs import chunks_of
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server
from worker.sweep import sweep_provider

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def scenario(
    daily_sim: DailySimulator, later_sim: DailySimulator, bucket: str, custom_bucket: str
) -> Scenario:
    return build(daily_sim, later_sim, bucket, custom_bucket)


def test_a_cli_sweep_archives_verifies_and_deletes_each_due_job_exactly_once(
    scenario: Scenario, s3: S3Client, s3_server: S3Server, ledger_url: str, tmp_path: Path
) -> None:
    config = scenario.write(tmp_path / "retention.toml", ledger_url, s3_server.endpoint_url)
    held = run_cli("hold", "daily", scenario.ids["held"], "--reason", "case 42", config=config)
    assert held.code == 0, held.stderr

    run = run_cli("sweep", "--json", config=config)

    # The job in an unknown status is deferred (and says why), so the sweep exits 1.
    assert run.code == 1, run.stderr
    summary = run.only_json()
    # Nothing failed.
    assert (summary["archived"], summary["deleted"], summary["deferred"], summary["failed"]) == (
        4,
        4,
        1,
        0,
    )
    assert summary["skipped"] >= 4  # processing, submitted, held, not due
    assert_swept(scenario, s3)
    events = {e["event"] for e in run.log_events()}
    assert {
        "sweep_started",
        "file_archived",
        "manifest_written",
        "delete_requested",
        "provider_deleted",
        "receipt_written",
        "job_finished",
        "sweep_finished",
    } <= events

    downloads = len(scenario.daily.seen("GET", "^/files/"))
    again = run_cli("sweep", "--json", config=config)
    assert again.code == 0, again.stderr
    assert (again.last_json()["archived"], again.last_json()["deleted"]) == (0, 0)
    assert len(scenario.daily.seen("GET", "^/files/")) == downloads
    assert all(scenario.daily.deletes_of(scenario.ids[label]) == 1 for label in DUE)

    status = run_cli("status", "--json", config=config)
    assert status.code == 0, status.stderr
    by_provider = {
        p["provider"]: p for p in json.loads(status.stdout.splitlines()[-1])["providers"]
    }
    assert by_provider["daily"]["states"]["deleted"] == 4
    assert by_provider["daily"]["held"] == 1
    assert by_provider["daily_later"]["overdue_count"] == 0


def test_a_dry_run_changes_nothing_anywhere_and_says_what_would_happen(
    scenario: Scenario, s3: S3Client, s3_server: S3Server, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    config = scenario.write(tmp_path / "retention.toml", f"sqlite:///{db}", s3_server.endpoint_url)
    assert run_cli("hold", "daily", scenario.ids["held"], config=config).code == 0
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    requests_before = len(scenario.daily.requests)

    run = run_cli("sweep", "--dry-run", config=config)

    assert run.code == 1, run.stderr  # as the real run: the job in an unknown status is deferred
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert objects(s3, scenario.bucket) == {}
    assert s3.list_objects_v2(Bucket=scenario.custom_bucket)["KeyCount"] == 2
    new_requests = scenario.daily.requests[requests_before:]
    assert {r.method for r in new_requests} == {"GET"}
    assert not any(r.path.startswith("/files/") for r in new_requests)
    assert "daily (dry run): would archive 4, would delete 4," in run.stdout
    for label in DUE:
        job_id = scenario.ids[label]
        assert f"would delete daily job {job_id}" in run.stdout
        for key in scenario.outputs[job_id]:
            assert f"-> {folder('daily', job_id)}{key}" in run.stdout
    assert f"not due daily_later job {scenario.ids['not_due']}" in run.stdout


def test_a_dry_run_with_no_ledger_yet_creates_none(
    scenario: Scenario, s3_server: S3Server, tmp_path: Path
) -> None:
    db = tmp_path / "never.db"
    config = scenario.write(tmp_path / "retention.toml", f"sqlite:///{db}", s3_server.endpoint_url)
    assert run_cli("sweep", "--dry-run", config=config).code == 1  # the unknown job is deferred
    assert not db.exists()


# -- faults, in process ---------------------------------------------------------------------


@pytest.fixture
def rt(scenario: Scenario, s3_server: S3Server, sqlite_url: str) -> Iterator[Runtime]:
    runtime = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    yield runtime
    runtime.close()


def state(rt: Runtime, provider: str, job_id: str) -> JobState:
    row = rt.ledger.query.get(provider, job_id)
    assert row is not None
    return row.state


def test_a_truncated_download_is_never_followed_by_a_delete(
    scenario: Scenario, rt: Runtime, s3: S3Client
) -> None:
    job_id = scenario.ids["finished_big"]
    scenario.daily.inject("truncate", path=f"^/files/.*{job_id}.*json")

    result = process_job(rt, "daily", job_id)

    assert result.outcome == Outcome.DEFERRED
    assert "truncated" in (result.error or "") or "broke off" in (result.error or "")
    assert scenario.daily.deletes_of(job_id) == 0
    assert not any(
        k.startswith(folder("daily", job_id)) and k.endswith(".json")
        for k in objects(s3, scenario.bucket)
    )
    assert multipart_uploads(s3, scenario.bucket) == []
    row = rt.ledger.query.get("daily", job_id)
    assert row is not None
    assert row.state == JobState.PENDING
    assert row.last_error

    # The next attempt (the retry time is reached) completes, without a second delete.
    rt.ledger.engine.dispose()
    with rt.ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE jobs SET next_attempt_at = NULL")
    assert process_job(rt, "daily", job_id).outcome == Outcome.DELETED
    assert scenario.daily.deletes_of(job_id) == 1


def test_a_lost_delete_answer_is_resent_once_and_recorded_as_gone(
    scenario: Scenario, rt: Runtime
) -> None:
    job_id = scenario.ids["finished"]
    scenario.daily.inject("drop", method="DELETE", path=job_id)

    result = process_job(rt, "daily", job_id)

    assert result.outcome == Outcome.DELETED
    assert scenario.daily.deletes_of(job_id) == 2
    assert [s.fault for s in scenario.daily.seen("DELETE", job_id)] == ["drop", None]
    row = rt.ledger.query.get("daily", job_id)
    assert row is not None
    assert at(row.delete_answer, "result") == "already_gone"


def test_a_job_archived_in_read_only_mode_waits_and_a_later_hold_keeps_it(
    scenario: Scenario, s3_server: S3Server, sqlite_url: str, s3: S3Client
) -> None:
    data = scenario.config(sqlite_url, s3_server.endpoint_url, defaults={"read_only": True})
    read_only = build_runtime(settings_of(data))
    job_id = scenario.ids["finished"]
    assert process_job(read_only, "daily", job_id).outcome == Outcome.ARCHIVED
    assert folder("daily", job_id) + "manifest.json" in objects(s3, scenario.bucket)
    read_only.ledger.operator.set_hold("daily", job_id, held=True, now=read_only.clock())
    read_only.close()

    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    assert process_job(rt, "daily", job_id).outcome == Outcome.HELD
    rt.ledger.operator.set_hold("daily", job_id, held=False, now=rt.clock())
    downloads = len(scenario.daily.seen("GET", "^/files/"))
    assert process_job(rt, "daily", job_id).outcome == Outcome.DELETED
    assert len(scenario.daily.seen("GET", "^/files/")) == downloads  # not archived twice
    assert scenario.daily.deletes_of(job_id) == 1
    rt.close()


@pytest.mark.parametrize("vanished", ["manifest", "file"])
def test_a_job_whose_archive_lost_something_is_archived_again_before_any_delete(
    scenario: Scenario, s3_server: S3Server, sqlite_url: str, s3: S3Client, vanished: str
) -> None:
    # given: a job archived in read-only mode, then an object removed from the bucket
    data = scenario.config(sqlite_url, s3_server.endpoint_url, defaults={"read_only": True})
    read_only = build_runtime(settings_of(data))
    job_id = scenario.ids["finished"]
    assert process_job(read_only, "daily", job_id).outcome == Outcome.ARCHIVED
    read_only.close()
    base = folder("daily", job_id)
    victim = base + (
        "manifest.json" if vanished == "manifest" else next(iter(scenario.outputs[job_id]))
    )
    s3.delete_object(Bucket=scenario.bucket, Key=victim)
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))

    # when: the delete is due
    result = process_job(rt, "daily", job_id)

    # then: no delete; the job goes back to be archived again
    assert result.outcome == Outcome.DEFERRED
    assert "vanished" in (result.error or "")
    assert scenario.daily.deletes_of(job_id) == 0
    assert state(rt, "daily", job_id) == JobState.PENDING
    events = [e["event"] for e in rt.ledger.query.audit_trail("daily", job_id)]
    assert events[-1] == "reopened"

    # and the next attempt restores the archive, then deletes once
    with rt.ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE jobs SET next_attempt_at = NULL")
    assert process_job(rt, "daily", job_id).outcome == Outcome.DELETED
    assert victim in objects(s3, scenario.bucket)
    assert scenario.daily.deletes_of(job_id) == 1
    rt.close()


def test_a_lost_delete_answer_is_not_resent_when_the_archive_lost_something(
    scenario: Scenario, rt: Runtime, s3: S3Client
) -> None:
    # given: the delete request never reached the provider, and an archived file vanished
    job_id = scenario.ids["finished"]
    scenario.daily.inject("reset", method="DELETE", path=job_id, times=10)
    assert process_job(rt, "daily", job_id).outcome == Outcome.DEFERRED
    assert state(rt, "daily", job_id) == JobState.DELETING
    assert job_id in scenario.daily.jobs
    scenario.daily.clear_faults()
    s3.delete_object(
        Bucket=scenario.bucket, Key=folder("daily", job_id) + next(iter(scenario.outputs[job_id]))
    )
    with rt.ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE jobs SET next_attempt_at = NULL")

    # when: the job is resumed
    result = process_job(rt, "daily", job_id)

    # then: the delete is not sent again; the provider keeps the only other copy
    assert result.outcome == Outcome.DEFERRED
    assert "restore the objects" in (result.error or "")
    assert [s.fault for s in scenario.daily.seen("DELETE", job_id)] == ["reset"] * 4
    assert job_id in scenario.daily.jobs


def test_max_deletes_per_sweep_stops_the_sweep_with_a_clear_message(
    scenario: Scenario, s3_server: S3Server, sqlite_url: str
) -> None:
    data = scenario.config(
        sqlite_url, s3_server.endpoint_url, defaults={"max_deletes_per_sweep": 2}
    )
    rt = build_runtime(settings_of(data))
    report = sweep_provider(rt, "daily")
    assert report.summary().deleted == 2
    assert report.stopped_reason
    assert "max_deletes_per_sweep (2)" in report.stopped_reason
    assert len(scenario.daily.deleted) == 2
    assert sweep_provider(rt, "daily").summary().deleted == 2
    rt.close()


def test_a_second_sweep_of_the_same_provider_returns_at_once_and_says_so(
    scenario: Scenario, rt: Runtime
) -> None:
    other = rt.sweep_lease("daily", timedelta(minutes=5))
    assert other.where == "redis"
    assert other.acquire()
    try:
        with structlog.testing.capture_logs() as logs:
            report = sweep_provider(rt, "daily")
    finally:
        other.release()
    assert report.busy
    assert report.dispatched == 0
    assert scenario.daily.requests == []
    busy = [e for e in logs if e["event"] == "sweep_already_running"]
    assert busy[0]["holder"] == other.owner
    assert not sweep_provider(rt, "daily").busy


@pytest.mark.parametrize("broker", [None, "memory://"], ids=["no-broker-url", "not-redis"])
def test_without_a_redis_broker_url_the_sweep_lease_is_kept_in_the_ledger(
    broker: str | None, scenario: Scenario, s3_server: S3Server, sqlite_url: str
) -> None:
    # A Redis on 127.0.0.1:6379 answers here: the configuration decides, not what answers.
    data = scenario.config(sqlite_url, s3_server.endpoint_url)
    if broker is None:
        del data["broker"]["url"]
    else:
        data["broker"]["url"] = broker
    rt = build_runtime(settings_of(data))
    assert rt.redis is None
    rt.ledger.operator.set_hold("daily", scenario.ids["held"], held=True, now=rt.clock())
    other = rt.sweep_lease("daily", timedelta(minutes=5))
    assert other.where == "ledger"
    assert other.acquire()
    assert sweep_provider(rt, "daily").busy
    other.release()
    assert sweep_provider(rt, "daily").summary().deleted == 4
    rt.close()


def test_a_job_someone_else_deleted_is_recorded_as_gone(scenario: Scenario, rt: Runtime) -> None:
    job_id = scenario.ids["finished"]
    rt.ledger.operator.track("daily", [job_id], now=rt.clock())
    scenario.daily.jobs.pop(job_id)
    assert process_job(rt, "daily", job_id).outcome == Outcome.GONE
    assert state(rt, "daily", job_id) == JobState.GONE
    assert scenario.daily.seen("DELETE") == []


# -- the command's contract -----------------------------------------------------------------


def test_an_errored_job_with_unreachable_outputs_fails_permanently_and_exits_1(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    job_id = daily_sim.add_job("error", transcription=[("txt", b"partial")])
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=f"sqlite:///{tmp_path}/l.db",
        providers={"daily": daily_provider(daily_sim)},
    )
    config = write_config(tmp_path / "r.toml", data)
    run = run_cli("sweep", "--jsonl", config=config)
    assert run.code == 1
    assert run.last_json()["failed"] == 1
    failed = [r for r in run.json_lines() if r["message_type"] == "job"]
    assert [(r["job_id"], r["outcome"]) for r in failed] == [(job_id, "failed")]
    assert daily_sim.seen("DELETE") == []
    status = run_cli("status", config=config)
    assert "refuses download links" in status.stdout
    retried = run_cli("retry", "daily", job_id, config=config)
    assert retried.code == 0
    assert "tried again" in retried.stdout


@pytest.mark.parametrize(
    ("args", "text", "message"),
    [
        (("sweep",), "[archive]\n", "archive.bucket: is required"),
        (("sweep", "--provider", "loom"), None, "no provider named 'loom'"),
        (("sweep", "--dry-run", "--enqueue"), None, "cannot be combined"),
        (("hold", "nobody", "x"), None, "no provider named 'nobody'"),
        (("track", "daily", "../escape"), None, "'..' segment"),
    ],
)
def test_bad_config_and_bad_usage_exit_2_with_one_clear_message(
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    tmp_path: Path,
    args: tuple[str, ...],
    text: str | None,
    message: str,
) -> None:
    config = tmp_path / "r.toml"
    if text is None:
        write_config(
            config,
            config_data(
                bucket=bucket,
                endpoint_url=s3_server.endpoint_url,
                ledger_url=f"sqlite:///{tmp_path}/l.db",
                providers={"daily": daily_provider(daily_sim)},
            ),
        )
    else:
        config.write_text(text)
    run = run_cli(*args, config=config)
    expected = 1 if args[0] == "track" else 2
    assert run.code == expected, (run.stdout, run.stderr)
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_no_config_at_all_exits_2() -> None:
    run = run_cli("status")
    assert run.code == 2
    assert "--config PATH or set RETENTION_CONFIG" in run.stderr


def test_track_hold_and_release_work_on_jobs_the_worker_has_not_seen(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "r.toml",
        config_data(
            bucket=bucket,
            endpoint_url=s3_server.endpoint_url,
            ledger_url=f"sqlite:///{tmp_path}/l.db",
            providers={"daily": daily_provider(daily_sim)},
        ),
    )
    assert "2 new" in run_cli("track", "daily", "a", "b", config=config).stdout
    assert "0 new" in run_cli("track", "daily", "a", config=config).stdout
    assert "is held" in run_cli("hold", "daily", "c", config=config).stdout
    assert "already" in run_cli("hold", "daily", "c", config=config).stdout
    assert "released" in run_cli("release", "daily", "c", config=config).stdout
    assert "was not held" in run_cli("release", "daily", "c", config=config).stdout


def test_help_shows_an_example_for_every_command() -> None:
    for command in (
        "sweep",
        "track",
        "hold",
        "release",
        "retry",
        "status",
        "migrate",
        "demo",
        "check",
        "report",
        "restore",
    ):
        run = run_cli(command, "--help")
        assert run.code == 0, command
        assert "Example:" in run.stdout, command


def test_untouched_jobs_stay_untouched_when_nothing_is_due(
    scenario: Scenario, s3_server: S3Server, sqlite_url: str, s3: S3Client
) -> None:
    data = scenario.config(sqlite_url, s3_server.endpoint_url)
    data["providers"]["daily"]["retain_days"] = 30
    rt = build_runtime(settings_of(data))
    summary = sweep_provider(rt, "daily").summary()
    rt.close()
    assert summary.archived == summary.deleted == 0
    assert scenario.daily.seen("DELETE") == []
    assert_untouched(scenario, objects(s3, scenario.bucket))


def test_a_job_keeps_its_own_earlier_upload_and_stops_at_a_foreign_one(
    scenario: Scenario, rt: Runtime, s3: S3Client
) -> None:
    # given: a crash left one job's first output stored but unrecorded, and another job's key
    # holds something else
    mine = scenario.ids["finished"]
    key, content = next(iter(scenario.outputs[mine].items()))
    s3.put_object(
        Bucket=scenario.bucket, Key=folder("daily", mine) + key, Body=b"".join(chunks_of(content))
    )
    theirs = scenario.ids["custom"]
    other_key = next(iter(scenario.outputs[theirs]))
    s3.put_object(Bucket=scenario.bucket, Key=folder("daily", theirs) + other_key, Body=b"not it")

    # when
    resumed = process_job(rt, "daily", mine)
    stopped = process_job(rt, "daily", theirs)

    # then
    assert resumed.outcome == Outcome.DELETED
    assert stopped.outcome == Outcome.FAILED
    assert "never overwritten" in (stopped.error or "")
    assert scenario.daily.deletes_of(theirs) == 0
    assert objects(s3, scenario.bucket)[folder("daily", theirs) + other_key] == b"not it"
