"""The command's contract with cron, CI and runbooks: results alone on stdout, logs on stderr,
and an exit code for each outcome (0, 1, 2, 3, 4, 130), the most severe winning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from tests.helpers import ROOT, config_data, daily_provider, run_cli, write_config
from worker.cli import cli
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# A port nothing listens on: the provider there cannot be reached.
CLOSED = "http://127.0.0.1:9/v1"


def config_of(
    tmp_path: Path,
    sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    *,
    providers: dict[str, Any] | None = None,
    **sections: Any,
) -> Path:
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=f"sqlite:///{tmp_path}/ledger.db",
        providers=providers or {"daily": daily_provider(sim)},
        **sections,
    )
    return write_config(tmp_path / "retention.toml", data)


def test_a_json_sweep_at_debug_prints_one_document_on_stdout_and_every_log_line_on_stderr(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    daily_sim.add_job(transcription=[("txt", b"hello\n")])
    config = config_of(tmp_path, daily_sim, bucket, s3_server)

    run = run_cli("sweep", "--json", config=config, env={"RETENTION_LOG_LEVEL": "DEBUG"})

    assert run.code == 0, run.stderr[-3000:]
    summary = run.only_json()  # nothing before it, nothing after it
    assert (summary["message_type"], summary["deleted"], summary["exit_code"]) == (
        "summary",
        1,
        0,
    )
    events = run.log_events()
    assert {"sweep_started", "job_finished", "sweep_finished"} <= {e["event"] for e in events}
    assert "debug" in {e["level"] for e in events}


def test_the_delete_brake_exits_4_even_when_a_job_was_also_deferred(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    # given: three due jobs, a brake of one delete, and a job in a status nobody knows
    for n in range(3):
        daily_sim.add_job(transcription=[("txt", f"job {n}\n".encode())])
    daily_sim.add_job("paused", transcription=[("txt", b"unknown status\n")])
    config = config_of(
        tmp_path, daily_sim, bucket, s3_server, defaults={"max_deletes_per_sweep": 1}
    )

    # when
    run = run_cli("sweep", "--jsonl", config=config)

    # then: a line per job, then the totals; 4 wins over 1
    assert run.code == 4, run.stderr[-3000:]
    *jobs, summary = run.json_lines()
    assert {line["message_type"] for line in jobs} == {"job"}
    assert {line["outcome"] for line in jobs} >= {"deleted", "deferred"}
    assert (summary["deleted"], summary["deferred"], summary["exit_code"]) == (1, 1, 4)
    assert summary["providers"]["daily"]["braked"]


def test_an_unreachable_provider_exits_3_whatever_else_the_sweep_found(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    # given: one provider that brakes, and one that cannot be reached at all
    for n in range(2):
        daily_sim.add_job(transcription=[("txt", f"job {n}\n".encode())])
    providers = {
        "daily": daily_provider(daily_sim),
        "down": {"type": "daily", "base_url": CLOSED, "api_key": "k-unreachable"},
    }
    config = config_of(
        tmp_path,
        daily_sim,
        bucket,
        s3_server,
        providers=providers,
        defaults={"max_deletes_per_sweep": 1},
    )

    # when
    run = run_cli("sweep", config=config)

    # then: 3 wins over 4, and the plain summary says why
    assert run.code == 3, run.stderr[-3000:]
    assert "down: " in run.stdout
    assert "listing failed:" in run.stdout
    assert "stopped: max_deletes_per_sweep (1)" in run.stdout


@pytest.mark.slow
def test_an_interrupted_sweep_exits_130_and_says_what_happens_next(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    # given: a sweep whose download is slow
    daily_sim.add_job(transcription=[("txt", b"slow\n")])
    daily_sim.inject("delay", path="^/files/", seconds=2)
    # Told on the download's arrival: the simulator records a request (``seen``) only once it
    # has answered, after the delay, when the sweep may be all but over.
    downloading = threading.Event()
    daily_sim.on_request = lambda request: (
        downloading.set() if request.path.startswith("/files/") else None
    )
    config = config_of(tmp_path, daily_sim, bucket, s3_server)
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "--config", str(config), "sweep", "--json"],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    # when: Ctrl-C arrives while the file downloads
    assert downloading.wait(timeout=30), "the sweep never started the download"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)

    # then
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted; jobs in flight resume on the next sweep" in stderr
    assert "Traceback" not in stderr
    assert stdout == ""


def test_a_json_command_that_fails_prints_its_error_as_json_on_stderr(tmp_path: Path) -> None:
    config = write_config(tmp_path / "r.toml", {"archive": {"bucket": "acme-archive"}})
    run = run_cli("sweep", "--json", "--provider", "nobody", config=config)
    assert run.code == 2
    assert run.stdout == ""
    error = json.loads(run.stderr)
    assert (error["message_type"], error["code"]) == ("exit_error", 2)
    assert "no provider named 'nobody'" in error["message"]


# -- config ---------------------------------------------------------------------------------


def test_validate_names_every_bad_key_and_exits_2_offline(tmp_path: Path) -> None:
    # given: a file with an unset reference, a misspelt key and a bad value, whose provider
    # and archive could never be reached
    config = tmp_path / "retention.toml"
    config.write_text(
        '[archive]\nbucket = "acme-archive"\nendpoint_url = "http://127.0.0.1:9"\n'
        "[defaults]\nretain_dayz = 3\n"
        f'[providers.daily]\ntype = "daily"\nbase_url = "{CLOSED}"\n'
        'api_key = "${RETENTION_TEST_UNSET_KEY}"\npage_size = 500\n'
    )

    # when
    run = run_cli("config", "validate", str(config))
    as_json = run_cli("config", "validate", "--json", str(config))

    # then
    assert run.code == as_json.code == 2, run.stderr
    for key in ("defaults.retain_dayz", "providers.daily.api_key", "providers.daily.page_size"):
        assert key in run.stdout
    assert {p["key"] for p in as_json.only_json()["problems"]} == {
        "defaults.retain_dayz",
        "providers.daily.api_key",
        "providers.daily.page_size",
    }


def schedule_config(tmp_path: Path, *, defaults: str, daily: str | None = None) -> Path:
    """A file that is valid but for its schedules, with an archive and a provider that could
    never be reached: nothing here touches the network."""
    provider = {"type": "daily", "base_url": CLOSED, "api_key": "k"}
    return write_config(
        tmp_path / "retention.toml",
        {
            "archive": {"bucket": "acme-archive", "endpoint_url": "http://127.0.0.1:9"},
            "ledger": {"url": f"sqlite:///{tmp_path}/ledger.db"},
            "defaults": {"schedule": defaults},
            "providers": {"daily": provider | ({"schedule": daily} if daily else {})},
        },
    )


@pytest.mark.parametrize("cron", ["61 * * * *", "0 0 30 2 *"])
def test_validate_refuses_a_providers_schedule_that_celery_beat_would_refuse(
    tmp_path: Path, cron: str
) -> None:
    # given: a provider's schedule that passes the five-field shape, but that beat cannot run
    config = schedule_config(tmp_path, defaults="0 * * * *", daily=cron)

    # when
    run = run_cli("config", "validate", str(config))
    as_json = run_cli("config", "validate", "--json", str(config))

    # then: exit 2, naming the provider's key
    assert run.code == as_json.code == 2, run.stdout + run.stderr
    assert "providers.daily.schedule" in run.stdout
    assert cron in run.stdout
    assert [p["key"] for p in as_json.only_json()["problems"]] == ["providers.daily.schedule"]
    assert as_json.only_json()["ok"] is False


@pytest.mark.parametrize("cron", ["61 * * * *", "0 0 30 2 *"])
def test_validate_and_check_refuse_a_default_schedule_beat_would_refuse(
    tmp_path: Path, cron: str
) -> None:
    # given: the defaults' schedule, which the provider sweeps on, is one beat cannot run
    config = schedule_config(tmp_path, defaults=cron)

    # when
    validated = run_cli("config", "validate", str(config))
    checked = run_cli("check", "--skip-providers", config=config)

    # then: both exit 2 before touching anything, naming the key and the provider
    for run in (validated, checked):
        assert run.code == 2, run.stdout + run.stderr
        assert "defaults.schedule" in run.stdout + run.stderr
        assert "daily" in run.stdout + run.stderr


@pytest.mark.parametrize("cron", ["0 0 29 2 *", "*/15 9-17 * * 1-5", "0 4 * * 0", "0 0 31 * *"])
def test_validate_accepts_schedules_beat_runs(tmp_path: Path, cron: str) -> None:
    config = schedule_config(tmp_path, defaults=cron, daily=cron)
    run = run_cli("config", "validate", str(config))
    assert run.code == 0, run.stdout + run.stderr
    assert "valid" in run.stdout


def test_show_prints_the_effective_configuration_with_secrets_from_files_masked(
    tmp_path: Path,
) -> None:
    # given: a key in a secret file, another in a secrets directory, a password in a URL
    (tmp_path / "daily_key").write_text("daily-key-from-a-file\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "RETENTION_PROVIDERS__LOOM__SECRET").write_text("loom-secret-from-the-dir\n")
    config = tmp_path / "retention.toml"
    config.write_text(
        '[archive]\nbucket = "acme-archive"\n'
        '[ledger]\nurl = "postgresql+psycopg://u:${RETENTION_TEST_PG_PASS}@db/x"\n'
        "[defaults]\nretain_days = 9\n"
        '[providers.daily]\ntype = "daily"\napi_key_file = "daily_key"\n'
        '[providers.loom]\ntype = "loom"\nbase_url = "https://loom.example"\nkey = "loom-key-1"\n'
    )
    env = {"RETENTION_SECRETS_DIR": str(secrets), "RETENTION_TEST_PG_PASS": "pg-pass-word"}

    # when
    run = run_cli("config", "show", "--json", config=config, env=env)

    # then
    assert run.code == 0, run.stderr
    shown = run.only_json()
    assert shown["providers"]["daily"]["retain_days"] == shown["providers"]["loom"]["retain_days"]
    assert shown["providers"]["daily"]["retain_days"] == 9
    assert shown["providers"]["loom"]["secret"] == "********"
    assert shown["ledger"]["url"] == "postgresql+psycopg://u:********@db/x"
    for secret in ("daily-key-from-a-file", "loom-secret-from-the-dir", "pg-pass-word"):
        assert secret not in run.stdout + run.stderr
    assert "loom-key-1" not in run.stdout


@pytest.mark.parametrize(
    "command",
    [("config",), ("config", "validate"), ("config", "show"), ("config", "schema"), ("scrub",)],
)
def test_help_of_each_new_command_shows_an_example(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output


# -- scrub ----------------------------------------------------------------------------------


def test_scrub_names_each_damaged_or_missing_key_and_exits_1(
    daily_sim: DailySimulator, bucket: str, s3: S3Client, s3_server: S3Server, tmp_path: Path
) -> None:
    # given: three jobs archived and deleted, then one file changed and another removed
    jobs = [daily_sim.add_job(transcription=[("txt", f"job {n}\n".encode())]) for n in range(3)]
    config = config_of(tmp_path, daily_sim, bucket, s3_server)
    assert run_cli("sweep", config=config).code == 0
    clean = run_cli("scrub", "--read-data", "100%", config=config)
    assert clean.code == 0, clean.stderr[-3000:]
    assert "scrubbed 3 job(s), 3 file(s); read back 3" in clean.stdout
    keys = {
        job: next(
            o["Key"]
            for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"archive/daily/{job}/")["Contents"]
            if o["Key"].endswith(".txt")
        )
        for job in jobs
    }
    s3.put_object(Bucket=bucket, Key=keys[jobs[0]], Body=b"changed\n")
    s3.delete_object(Bucket=bucket, Key=keys[jobs[1]])

    # when
    plain = run_cli("scrub", config=config)
    as_json = run_cli("scrub", "--json", config=config)

    # then: a line each, and each in the document
    assert plain.code == as_json.code == 1, plain.stderr[-3000:]
    lines = [line for line in plain.stdout.splitlines() if line.startswith(("DAMAGED", "MISSING"))]
    assert sorted(line.split()[:2] for line in lines) == sorted(
        [["DAMAGED", f"{keys[jobs[0]]}:"], ["MISSING", f"{keys[jobs[1]]}:"]]
    )
    report = as_json.only_json()
    assert {f["key"] for f in report["findings"]} == {keys[jobs[0]], keys[jobs[1]]}
    assert (report["jobs"], report["clean"], report["exit_code"]) == (3, False, 1)


# -- a reader that goes away ----------------------------------------------------------------


def _ledger_only(tmp_path: Path) -> Path:
    """A configuration whose commands need nothing but their SQLite ledger."""
    config = tmp_path / "retention.toml"
    config.write_text(
        f'[archive]\nbucket = "acme-archive"\n[ledger]\nurl = "sqlite:///{tmp_path}/ledger.db"\n'
        '[providers.daily]\ntype = "daily"\napi_key = "not-a-secret"\n'
    )
    return config


def test_the_first_command_on_a_new_ledger_logs_its_migrations_and_not_alembic_internals(
    tmp_path: Path,
) -> None:
    # when: a new ledger is migrated by the first command that opens it
    run = run_cli("status", config=_ledger_only(tmp_path))

    # then: each schema upgrade is a log line; alembic's plugin set-up is not
    assert run.code == 0, run.stderr
    events = [json.loads(line)["event"] for line in run.stderr.splitlines()]
    assert any(event.startswith("Running upgrade  -> 0001") for event in events), events
    assert not [event for event in events if event.startswith("setup plugin")]


def _with_closed_stdout(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI with its stdout a pipe whose reader has already gone, as in
    ``retention status | head -1`` once head has its line: every write fails with EPIPE."""
    reader, writer = os.pipe()
    os.close(reader)
    argv = [sys.executable, "-m", "worker"]
    if config is not None:
        argv += ["--config", str(config)]
    try:
        return subprocess.run(
            [*argv, *args],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
    finally:
        os.close(writer)


@pytest.mark.parametrize("command", [("config", "schema"), ("status",)])
def test_a_reader_that_closes_its_end_early_gets_no_error_or_traceback(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    # given: a ledger to show, and a stdout nobody reads any more
    config = _ledger_only(tmp_path)
    assert run_cli("status", config=config).code == 0  # migrates the new ledger

    # when
    run = _with_closed_stdout(*command, config=config)

    # then: the command stops quietly, as `git log | head` does; not "unexpected
    # BrokenPipeError" with a hint to run again at DEBUG, and no traceback at exit
    assert run.stderr == ""
    assert run.returncode == 1


@pytest.mark.slow
@pytest.mark.parametrize("output", [(), ("--jsonl",)])
def test_a_sweep_whose_reader_has_gone_still_finishes_every_job_quietly(
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    tmp_path: Path,
    output: tuple[str, ...],
) -> None:
    # given: jobs whose result lines go to a pipe nobody reads (a line per job, or --jsonl)
    jobs = [daily_sim.add_job(transcription=[("txt", f"job {n}\n".encode())]) for n in range(4)]
    config = config_of(tmp_path, daily_sim, bucket, s3_server)

    # when
    run = _with_closed_stdout("sweep", *output, config=config)

    # then: each job was carried out, none failed for want of a reader, and no thread's
    # callback wrote a traceback for every line it could not print
    assert sorted(daily_sim.deleted) == sorted(jobs)
    assert "Traceback" not in run.stderr
    assert "BrokenPipeError" not in run.stderr
    assert run.returncode == 1


def test_a_broken_pipe_that_is_not_stdouts_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # given: a command that meets a broken pipe of its own while stdout is fine
    def broken() -> str:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("worker.config_view.schema_text", broken)

    # when
    run = CliRunner().invoke(cli, ["config", "schema"])

    # then: it is an error like any other, not a reader that went away
    assert run.exit_code == 1
    assert "unexpected BrokenPipeError" in run.output
