"""Metrics that tell the truth: the schedule's own next run, the ledger's gauges, requests and
S3 errors counted where they happen, and the same metrics for `retention sweep` from cron."""

from __future__ import annotations

import base64
import http.server
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from structlog.testing import capture_logs

from tests.helpers import settings_of
from worker import __version__
from worker.domain import JobState
from worker.errors import ArchiveError, ProviderRejected, ProviderUnavailable, RateLimited
from worker.ledger import Ledger
from worker.ledger.database import new_job
from worker.ledger.queries import ProviderGauges
from worker.ledger.schema import jobs
from worker.metrics import export, gauges, recorders, serving
from worker.outcomes import JobResult, Outcome
from worker.providers.base import HttpApi
from worker.s3 import s3_errors
from worker.schedules import next_run_after, schedule_of
from worker.settings import Settings, load_settings

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DAY = 86400.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def samples_of(families: Any) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families
        for s in family.samples
    }


def parse(text: str) -> Samples:
    return samples_of(text_string_to_metric_families(text))


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unique_provider() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


def settings_for(
    ledger_url: str, providers: dict[str, dict[str, Any]], **metrics_keys: Any
) -> Settings:
    return settings_of(
        {
            "archive": {"bucket": "acme-archive"},
            "ledger": {"url": ledger_url},
            "providers": {
                name: {"type": "daily", "api_key": "k", **table}
                for name, table in providers.items()
            },
            "metrics": metrics_keys,
        }
    )


# -- the schedule's own next run ----------------------------------------------------------------

WEEKDAYS = "0 9-17 * * 1-5"


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        # The instants sweep-schedules.test.yaml feeds promtool (the epoch is a Thursday).
        (WEEKDAYS, 0, 32400),  # Thursday 00:00 -> 09:00
        (WEEKDAYS, 86400 + 10 * 3600 + 30, 86400 + 11 * 3600),  # Friday 10:00:30 -> 11:00
        (WEEKDAYS, 86400 + 17 * 3600 + 30, 4 * 86400 + 9 * 3600),  # Friday 17:00:30 -> Monday
        ("0 * * * *", 3600, 7200),  # a run on the minute is not its own next run
        ("0 3 * * *", 10 * 3600 + 1800, 86400 + 3 * 3600),
        ("0 4 * * 0", 0, 3 * 86400 + 4 * 3600),  # the weekly scrub: Sunday 04:00
    ],
)
def test_the_next_run_is_the_schedules_own_and_strictly_later(
    cron: str, after: float, expected: float
) -> None:
    assert next_run_after(schedule_of(cron), epoch(after)) == epoch(expected)


def test_the_schedule_gauges_count_from_the_last_success_and_the_earliest_start() -> None:
    # given a weekday schedule whose last success was Friday 17:00:30, and a worker that
    # started on Saturday, after an earlier one started on Thursday
    families = gauges.schedule_families(
        {"daily": WEEKDAYS, "loom": "0 * * * *"},
        last_success={"daily": 86400 + 17 * 3600 + 30},
        started=2 * 86400 + 3600,
        earliest_first={("daily", WEEKDAYS): 32400},
    )

    samples = samples_of(families)
    daily = (("provider", "daily"), ("schedule", WEEKDAYS))
    # then the next run is Monday 09:00, the first scheduled run stays Thursday's
    assert samples[("retention_next_sweep_timestamp_seconds", daily)] == 4 * 86400 + 9 * 3600
    assert samples[("retention_first_scheduled_sweep_timestamp_seconds", daily)] == 32400
    # and loom, never successful, has no next run yet, only its first after the start
    loom = (("provider", "loom"), ("schedule", "0 * * * *"))
    assert ("retention_next_sweep_timestamp_seconds", loom) not in samples
    assert samples[("retention_first_scheduled_sweep_timestamp_seconds", loom)] == 2 * 86400 + 7200
    assert samples[("retention_sweep_period_seconds", (("provider", "loom"),))] == 3600


# -- the ledger's gauges ------------------------------------------------------------------------


def insert_jobs(ledger: Ledger, rows: list[dict[str, Any]]) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(jobs.insert(), rows)


def job(
    provider: str,
    job_id: str,
    state: JobState,
    *,
    terminal_days_ago: float | None,
    held: bool = False,
) -> dict[str, Any]:
    row = new_job(provider, job_id, NOW - timedelta(days=30))
    terminal = None if terminal_days_ago is None else NOW - timedelta(days=terminal_days_ago)
    return row | {"state": state.value, "terminal_at": terminal, "held": held}


def test_the_ledger_gauges_count_states_holds_and_the_overdue_as_an_operator_would(
    ledger_url: str,
) -> None:
    # given jobs of daily (7 days), of a read_only provider (0 days) and of a provider no
    # longer configured
    ledger = Ledger.open(ledger_url)
    insert_jobs(
        ledger,
        [
            job("daily", "late", JobState.PENDING, terminal_days_ago=9),
            job("daily", "held", JobState.PENDING, terminal_days_ago=20, held=True),
            job("daily", "fresh", JobState.PENDING, terminal_days_ago=1),
            job("daily", "running", JobState.PENDING, terminal_days_ago=None),
            job("daily", "stuck", JobState.ARCHIVED, terminal_days_ago=8),
            job("daily", "bad", JobState.FAILED, terminal_days_ago=8),
            job("daily", "done", JobState.DELETED, terminal_days_ago=10),
            job("ro", "kept", JobState.ARCHIVED, terminal_days_ago=5),
            job("ro", "due", JobState.PENDING, terminal_days_ago=1),
            job("removed", "old", JobState.FAILED, terminal_days_ago=100),
        ],
    )

    # when the gauges are read
    rows = ledger.query.gauges({"daily": 7, "ro": 0}, now=NOW, archived_on_purpose={"ro"})
    ledger.close()

    # then
    daily, ro = rows
    assert daily.provider == "daily"
    assert daily.states == {state.value: 0 for state in JobState} | {
        "pending": 4,
        "archived": 1,
        "failed": 1,
        "deleted": 1,
    }
    assert daily.held == 1
    # late (due 2 days ago) and stuck (archived, resumed by every sweep); the held one never
    assert daily.overdue == 2
    assert daily.oldest_overdue_seconds == 2 * DAY
    # the read_only provider's archived job waits on purpose; its due pending job does not
    assert (ro.provider, ro.overdue, ro.oldest_overdue_seconds) == ("ro", 1, DAY)


def test_status_counts_the_overdue_jobs_the_gauge_counts(ledger_url: str) -> None:
    # given a provider that archives without deleting (read_only), and one that deletes
    ledger = Ledger.open(ledger_url)
    insert_jobs(
        ledger,
        [
            job("daily", "late", JobState.PENDING, terminal_days_ago=9),
            job("daily", "stuck", JobState.ARCHIVED, terminal_days_ago=8),
            job("ro", "waits", JobState.ARCHIVED, terminal_days_ago=5),
            job("ro", "due", JobState.PENDING, terminal_days_ago=1),
        ],
    )
    days, on_purpose = {"daily": 7, "ro": 0}, {"ro"}

    # when retention status and the gauges read the same ledger
    statuses = ledger.query.status(days, now=NOW, archived_on_purpose=on_purpose)
    gauges = ledger.query.gauges(days, now=NOW, archived_on_purpose=on_purpose)
    ledger.close()

    # then they agree: the read_only provider's archived job waits on purpose, so neither
    # calls it overdue, and status lists the jobs it counts
    assert [(s.provider, s.overdue_count) for s in statuses] == [
        (g.provider, g.overdue) for g in gauges
    ]
    assert [(s.provider, s.overdue_count) for s in statuses] == [("daily", 2), ("ro", 1)]
    assert [[o.job_id for o in s.overdue] for s in statuses] == [["late", "stuck"], ["due"]]


def test_retention_status_does_not_call_a_read_only_providers_archived_jobs_overdue(
    tmp_path: Path,
) -> None:
    import json

    from click.testing import CliRunner

    from worker.cli import cli

    # given a read_only provider: it archives and never deletes, so its archived jobs wait at
    # the provider on purpose, and the overdue gauge and its alert leave them out
    url = f"sqlite:///{tmp_path}/ledger.db"
    ledger = Ledger.open(url)
    insert_jobs(ledger, [job("ro", "waits", JobState.ARCHIVED, terminal_days_ago=5)])
    ledger.close()
    config = tmp_path / "retention.toml"
    config.write_text(
        f'[archive]\nbucket = "acme-archive"\n[ledger]\nurl = "{url}"\n'
        '[providers.ro]\ntype = "daily"\napi_key = "not-a-secret"\nread_only = true\n'
        "retain_days = 0\n"
    )

    # when an operator asks
    shown = CliRunner().invoke(cli, ["--config", str(config), "status", "--json"])

    # then status agrees with the gauge: nothing overdue
    assert shown.exit_code == 0, shown.output
    (ro,) = json.loads(shown.stdout)["providers"]
    assert (ro["provider"], ro["states"], ro["overdue_count"]) == ("ro", {"archived": 1}, 0)
    assert ro["overdue"] == []
    (gauge,) = gauges.read_ledger_gauges(load_settings(config), now=NOW)
    assert gauge.overdue == 0


def test_a_failed_job_stays_in_the_failed_gauge_until_a_person_retries_it(
    sqlite_url: str,
) -> None:
    ledger = Ledger.open(sqlite_url)
    insert_jobs(ledger, [job("daily", "bad", JobState.FAILED, terminal_days_ago=1)])

    def failed(now: datetime) -> int:
        (row,) = ledger.query.gauges({"daily": 7}, now=now)
        return row.states["failed"]

    assert failed(NOW) == failed(NOW + timedelta(days=3)) == 1
    assert ledger.operator.retry("daily", "bad", now=NOW + timedelta(days=3))
    assert failed(NOW + timedelta(days=3)) == 0
    ledger.close()


def test_an_unreadable_ledger_is_served_as_down_without_stale_counts() -> None:
    row = ProviderGauges("daily", {"failed": 2}, held=0, overdue=0, oldest_overdue_seconds=0)
    up = samples_of(gauges.ledger_families([row]))
    down = samples_of(gauges.ledger_families(None))
    assert up[("retention_ledger_failed_jobs", (("provider", "daily"),))] == 2
    assert up[("retention_ledger_up", ())] == 1
    assert down == {("retention_ledger_up", ()): 0}


@pytest.mark.postgres
def test_the_gauges_read_postgresql_in_the_urls_schema_with_timeouts(postgres_url: str) -> None:
    # given a ledger in a schema of its own, named by the URL's options
    ledger = Ledger.open(postgres_url)
    insert_jobs(ledger, [job("daily", "bad", JobState.FAILED, terminal_days_ago=1)])
    ledger.close()

    # when the metrics read it (their own connection, timeouts added to the options)
    (row,) = gauges.read_ledger_gauges(settings_for(postgres_url, {"daily": {}}), now=NOW)

    # then the URL's search_path was kept
    assert row.states["failed"] == 1


def test_the_gauges_never_create_a_missing_sqlite_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/absent.db"
    (row,) = gauges.read_ledger_gauges(settings_for(url, {"daily": {}}), now=NOW)
    assert row.states["pending"] == 0
    assert not (tmp_path / "absent.db").exists()


class CountingReader:
    def __init__(self, *, delay: float = 0.0, fail_after: int | None = None) -> None:
        self.calls = 0
        self.delay = delay
        self.fail_after = fail_after

    def __call__(self) -> list[ProviderGauges]:
        self.calls += 1
        time.sleep(self.delay)
        if self.fail_after is not None and self.calls > self.fail_after:
            raise OSError("the ledger went away")
        return [ProviderGauges("daily", {"failed": self.calls}, 0, 0, 0.0)]


def collector(reader: CountingReader, **options: Any) -> gauges.LedgerCollector:
    settings = settings_for("sqlite:///unused.db", {"daily": {}})
    return gauges.LedgerCollector(settings, read_ledger=reader, **options)


def failed_gauge(families: Any) -> float | None:
    return samples_of(families).get(("retention_ledger_failed_jobs", (("provider", "daily"),)))


def test_the_ledger_is_read_once_per_cache_period_whatever_the_scrapes() -> None:
    # given an exporter's collector whose cache period is a fifth of a second
    reader = CountingReader()
    gauges = collector(reader, ttl=0.2)

    # when it is scraped three times at once, then again once the period is over
    first = [gauges.collect() for _ in range(3)]
    time.sleep(0.3)
    after = gauges.collect()

    # then the ledger was read once for the three scrapes, and once more after the period
    assert [failed_gauge(f) for f in first] == [1, 1, 1]
    assert failed_gauge(after) == 2
    assert reader.calls == 2


def test_a_worker_serves_what_it_did_and_no_ledger_gauge(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a worker's metrics server, on a ledger with a failed job
    ledger = Ledger.open(sqlite_url)
    insert_jobs(ledger, [job("daily", "bad", JobState.FAILED, terminal_days_ago=8)])
    ledger.close()
    (tmp_path / "prometheus").mkdir()
    monkeypatch.setenv(recorders.MULTIPROC_ENV, str(tmp_path / "prometheus"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = settings_for(sqlite_url, {"daily": {}}, port=port, address="127.0.0.1")

    # when it is scraped
    assert serving.serve(settings)
    samples = parse(httpx.get(f"http://127.0.0.1:{port}/metrics").text)

    # then it serves the schedules' gauges and the build, and leaves the ledger to the exporter
    names = {name for name, _ in samples}
    assert "retention_sweep_period_seconds" in names
    assert "retention_build_info" in names
    assert not {name for name in names if name.startswith("retention_ledger_")}


def test_the_exporter_serves_the_ledgers_gauges_until_it_is_stopped(sqlite_url: str) -> None:
    # given a ledger with a job of each of two providers
    ledger = Ledger.open(sqlite_url)
    insert_jobs(
        ledger,
        [
            job(provider, "job-1", JobState.PENDING, terminal_days_ago=None)
            for provider in ("daily", "daily_eu")
        ],
    )
    ledger.close()
    settings = settings_for(sqlite_url, {"daily": {}, "daily_eu": {}})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    # when `retention exporter` runs, and is scraped
    stop = threading.Event()
    thread = threading.Thread(
        target=serving.run_exporter,
        args=(settings,),
        kwargs={"port": port, "address": "127.0.0.1", "stop": stop},
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)

    # then it serves each provider's jobs once, the ledger as read, and nothing a worker does
    samples = parse(text)
    for provider in ("daily", "daily_eu"):
        key = ("retention_ledger_jobs", (("provider", provider), ("state", "pending")))
        assert samples[key] == 1
    assert samples[("retention_ledger_up", ())] == 1
    assert not any(name.startswith("retention_jobs_") for name, _ in samples)
    assert not thread.is_alive()


def test_a_slow_ledger_never_holds_a_scrape_past_the_wait() -> None:
    reader = CountingReader(delay=0.5)
    gauges = collector(reader, ttl=3600, wait=0.05)

    began = time.monotonic()
    first = gauges.collect()
    waited = time.monotonic() - began
    time.sleep(0.6)
    later = gauges.collect()

    # the first scrape is answered without the ledger's counts, the next one with them
    assert waited < 0.4
    assert failed_gauge(first) is None
    assert ("retention_build_info", (("version", __version__),)) in samples_of(first)
    assert failed_gauge(later) == 1


def test_a_ledger_that_stops_answering_is_served_as_down() -> None:
    gauges = collector(CountingReader(fail_after=1), ttl=0)
    assert failed_gauge(gauges.collect()) == 1
    samples = samples_of(gauges.collect())
    assert samples[("retention_ledger_up", ())] == 0
    assert failed_gauge(gauges.collect()) is None


# -- recorded where it happens -------------------------------------------------------------------


def test_provider_requests_are_counted_by_outcome_with_429s_apart() -> None:
    # given a provider API that answers 200, 429 and 500, then times out
    provider = unique_provider()
    answers = iter([200, 429, 500, None])

    def respond(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status is None:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(status, json={})

    api = HttpApi(
        provider=provider,
        base_url="https://api.example.com",
        timeout=5,
        transport=httpx.MockTransport(respond),
    )

    # when four requests are made, none retried
    api.request("GET", "/jobs", retry=False)
    for error in (RateLimited, ProviderUnavailable, ProviderUnavailable):
        with pytest.raises(error):
            api.request("DELETE", "/jobs/1", retry=False)
    api.close()

    # then each is counted by its outcome, and the 429 once more on its own
    def requests(method: str, outcome: str) -> float:
        return counted(
            "retention_provider_requests_total", provider=provider, method=method, outcome=outcome
        )

    assert requests("GET", "2xx") == 1
    assert requests("DELETE", "4xx") == requests("DELETE", "5xx") == 1
    assert requests("DELETE", "timeout") == 1
    assert counted("retention_provider_rate_limited_total", provider=provider) == 1
    latency = "retention_provider_request_duration_seconds_count"
    assert counted(latency, provider=provider, method="DELETE") == 3


def test_a_refused_request_is_not_counted_as_sent() -> None:
    provider = unique_provider()
    api = HttpApi(
        provider=provider,
        base_url="https://api.example.com",
        timeout=5,
        transport=httpx.MockTransport(lambda r: httpx.Response(401, json={})),
    )
    with pytest.raises(ProviderRejected):
        api.request("GET", "/me", retry=False)
    api.close()
    assert (
        counted("retention_provider_requests_total", provider=provider, method="GET", outcome="4xx")
        == 1
    )
    assert counted("retention_provider_rate_limited_total", provider=provider) == 0


def test_s3_errors_are_counted_by_operation_and_code() -> None:
    code = f"Code{uuid.uuid4().hex[:8]}"
    before = counted("retention_s3_errors_total", operation="PutObject", code=code)
    with pytest.raises(ArchiveError), s3_errors("writing", "acme-archive", "k"):
        raise ClientError({"Error": {"Code": code, "Message": "no"}}, "PutObject")
    assert counted("retention_s3_errors_total", operation="PutObject", code=code) == before + 1

    unreachable = {"operation": "uploading_part_of", "code": "EndpointConnectionError"}
    before = counted("retention_s3_errors_total", **unreachable)
    with pytest.raises(ArchiveError), s3_errors("uploading part 3 of", "acme-archive", "k"):
        raise EndpointConnectionError(endpoint_url="http://s3.invalid")
    assert counted("retention_s3_errors_total", **unreachable) == before + 1


def test_a_process_other_than_the_worker_records_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(recorders.MULTIPROC_ENV, str(tmp_path))
    owner = tmp_path / "served-by"
    assert recorders._record_in_process()  # no worker serves the directory
    for pid, expected in ((os.getpid(), False), (os.getppid(), False), (2**22 + 7, True)):
        owner.write_text(str(pid))
        assert recorders._record_in_process() is expected, pid


def test_every_metric_has_one_name_whatever_its_source() -> None:
    declared = gauges.declared_metrics()
    recorded = {f.name for v in vars(recorders.metrics()).values() for f in v.describe()}
    computed = [d.name for d in gauges.COMPUTED]
    assert len(set(computed)) == len(computed)
    assert not recorded & set(computed)
    assert all(name.startswith("retention_") for name in declared)
    assert declared["retention_archived_bytes"] == "counter"
    assert "retention_bytes_archived" not in declared


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"textfile": "/var/lib/node_exporter/retention.txt"}, "must end in .prom"),
        ({"pushgateway_url": "ftp://push.example.com"}, "http:// or https://"),
    ],
)
def test_an_export_target_node_exporter_or_a_pushgateway_would_ignore_is_refused(
    keys: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        settings_for("sqlite:///x.db", {}, **keys)


# -- exported after a command -------------------------------------------------------------------


def record_a_sweep_that_deleted(provider: str, jobs_deleted: int) -> None:
    for n in range(jobs_deleted):
        result = JobResult(
            provider, f"j{n}", Outcome.DELETED, archived=True, deleted=True, bytes=10
        )
        recorders.record_job(result, due_seconds=60)
    recorders.record_sweep(provider, seconds=1.5, succeeded=True)


def test_a_cli_sweep_writes_a_textfile_that_adds_up_across_runs(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given what an earlier run left in the textfile: 5 deletes, a success at 1000 and a
    # first scheduled run at 3600
    provider = unique_provider()
    textfile = tmp_path / "retention.prom"
    labels = f'provider="{provider}"'
    textfile.write_text(
        "# TYPE retention_jobs_deleted_total counter\n"
        f"retention_jobs_deleted_total{{{labels}}} 5\n"
        "# TYPE retention_last_successful_sweep_timestamp_seconds gauge\n"
        f"retention_last_successful_sweep_timestamp_seconds{{{labels}}} 1000\n"
        "# TYPE retention_first_scheduled_sweep_timestamp_seconds gauge\n"
        f'retention_first_scheduled_sweep_timestamp_seconds{{{labels},schedule="0 * * * *"}} 3600\n'
        "# TYPE retention_ledger_jobs gauge\n"
        f'retention_ledger_jobs{{{labels},state="failed"}} 9\n'
        "# TYPE retention_bytes_archived_total counter\n"
        f"retention_bytes_archived_total{{{labels}}} 99\n"
    )
    Ledger.open(sqlite_url).close()
    settings = settings_for(sqlite_url, {provider: {}}, textfile=str(textfile))
    monkeypatch.setattr(recorders, "_scrubbed", False)  # as in a `retention sweep` process

    # when this run deletes two jobs and exports, twice (the second with nothing new)
    record_a_sweep_that_deleted(provider, 2)
    started = time.time()
    assert export.export_after_command(settings) == [str(textfile)]
    assert export.export_after_command(settings) == [str(textfile)]

    # then the counts add up once, the newest success wins, and the schedule's next run is
    # the hour after it, the first scheduled run the earliest
    samples = parse(textfile.read_text())
    key = (("provider", provider),)
    assert samples[("retention_jobs_deleted_total", key)] == 7
    assert samples[("retention_archived_bytes_total", key)] == 20
    assert samples[("retention_due_to_deleted_seconds_count", key)] == 2
    success = samples[("retention_last_successful_sweep_timestamp_seconds", key)]
    assert started - 60 < success <= time.time()
    scheduled = (("provider", provider), ("schedule", "0 * * * *"))
    assert samples[("retention_next_sweep_timestamp_seconds", scheduled)] == (
        (success // 3600 + 1) * 3600
    )
    assert samples[("retention_first_scheduled_sweep_timestamp_seconds", scheduled)] == 3600
    # and the ledger's gauges are read now, never carried over
    assert samples[("retention_ledger_jobs", (*key, ("state", "failed")))] == 0
    assert samples[("retention_ledger_up", ())] == 1
    assert samples[("retention_build_info", (("version", __version__),))] == 1
    # and the name retention_archived_bytes_total replaced is dropped
    assert ("retention_bytes_archived_total", key) not in samples
    # and a sweep leaves the findings of the last scrub alone
    assert ("retention_scrub_findings", ()) not in samples
    # and node_exporter (another user) can read it, and finds no other .prom file
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.glob("*.prom")] == ["retention.prom"]

    # when one more job is deleted in this process
    record_a_sweep_that_deleted(provider, 1)
    export.export_after_command(settings)

    # then it is added once
    assert parse(textfile.read_text())[("retention_jobs_deleted_total", key)] == 8


def test_an_export_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = settings_for(sqlite_url, {}, textfile=str(tmp_path / "missing" / "r.prom"))
    assert export.export_after_command(settings) == []


def test_a_metrics_port_already_taken_is_an_error_in_the_log_at_start(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: another process (a second worker on this host, say) listens on the port
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    monkeypatch.setenv(recorders.MULTIPROC_ENV, str(tmp_path))
    settings = settings_for(sqlite_url, {}, port=port, address="127.0.0.1")

    # when: the worker starts its metrics server
    with capture_logs() as logs:
        served = serving.serve(settings)
    taken.close()

    # then: it says so, as an error naming the port and what to do, and the worker goes on
    assert served is False
    (event,) = [e for e in logs if e["event"] == "metrics_not_served"]
    assert event["log_level"] == "error"
    assert (event["port"], event["address"]) == (port, "127.0.0.1")
    assert "in use" in event["error"]
    assert "RETENTION_METRICS__PORT" in event["hint"]


class FakePushgateway(http.server.ThreadingHTTPServer):
    """Keeps the last group PUT to it and serves it back with the labels a Pushgateway adds."""

    def __init__(self) -> None:
        self.body = ""
        self.authorization: list[str | None] = []
        super().__init__(("127.0.0.1", 0), self._handler())

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.authorization.append(self.headers.get("Authorization"))
                families = []
                for family in text_string_to_metric_families(server.body):
                    for sample in family.samples:
                        sample.labels.update(job=export.PUSH_JOB, instance="")
                    families.append(family)
                body = export._render(export._snapshot(families))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                server.authorization.append(self.headers.get("Authorization"))
                assert self.path == f"/metrics/job/{export.PUSH_JOB}"
                length = int(self.headers["Content-Length"])
                server.body = self.rfile.read(length).decode()
                self.send_response(200)
                self.end_headers()

        return Handler


@pytest.fixture
def pushgateway() -> Iterator[FakePushgateway]:
    server = FakePushgateway()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_cli_sweep_pushes_its_group_adding_to_what_the_gateway_holds(
    pushgateway: FakePushgateway, sqlite_url: str
) -> None:
    # given a Pushgateway behind basic auth that holds an earlier run's 5 deletes
    provider = unique_provider()
    pushgateway.body = (
        "# TYPE retention_jobs_deleted_total counter\n"
        f'retention_jobs_deleted_total{{provider="{provider}"}} 5\n'
    )
    port = pushgateway.server_address[1]
    settings = settings_for(
        sqlite_url, {provider: {}}, pushgateway_url=f"http://ops:s3cret@127.0.0.1:{port}/"
    )

    # when this run deletes two jobs and pushes
    record_a_sweep_that_deleted(provider, 2)
    written = export.export_after_command(settings)

    # then the group holds 7, it was read and replaced with the credentials in a header, and
    # the password is nowhere in what the command reports
    assert written == [f"http://127.0.0.1:{port}"]
    assert parse(pushgateway.body)[("retention_jobs_deleted_total", (("provider", provider),))] == 7
    token = base64.b64encode(b"ops:s3cret").decode()
    assert pushgateway.authorization == [f"Basic {token}", f"Basic {token}"]
