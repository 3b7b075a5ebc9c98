"""Failing closed where the real world differs from the test bed: every delete counted by the
brake, leases that a dead or paused holder cannot abuse, a backoff every task honours, a gate
that checks the manifest against the ledger, cleanup that removes only what was archived, and
restores of the verified version. Simulators over HTTP, the S3 server, SQLite and Redis."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.scenario import Scenario, build, folder
from tests.helpers import (
    REDIS_URL,
    config_data,
    daily_provider,
    objects,
    process_again,
    run_cli,
    settings_of,
    write_config,
)
from worker import leases
from worker.bootstrap import Runtime, build_runtime
from worker.domain import JobState, ListedJob, Phase
from worker.job import process_job
from worker.outcomes import Outcome
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server
from worker.simulators.unsiloed import UnsiloedSimulator
from worker.sweep import sweep_provider

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LONG_AGO = datetime.now(UTC) - timedelta(days=30)
# A source document: a completed Unsiloed job whose result links none is kept, not deleted.
PDF = b"%PDF-1.7\n%%EOF\n"


@pytest.fixture
def unsiloed() -> Iterator[UnsiloedSimulator]:
    sim = UnsiloedSimulator("unsiloed-fail-closed-key-7c2d")
    sim.start()
    yield sim
    sim.stop()


def unsiloed_runtime(
    sim: UnsiloedSimulator, bucket: str, s3_server: S3Server, ledger_url: str, **policy: Any
) -> Runtime:
    provider = sim.provider_table(**policy)
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=ledger_url,
        providers={"unsiloed": provider},
    )
    return build_runtime(settings_of(data))


def tracked_jobs(rt: Runtime, sim: UnsiloedSimulator, count: int) -> list[str]:
    ids = [sim.add_job("completed", document=PDF, updated_at=LONG_AGO) for _ in range(count)]
    rt.ledger.operator.track("unsiloed", ids, now=rt.clock())
    return ids


def state(rt: Runtime, provider: str, job_id: str) -> JobState | None:
    row = rt.ledger.query.get(provider, job_id)
    return row.state if row else None


# -- the brake counts every delete ---------------------------------------------------------


def test_the_brake_counts_tracked_jobs_too(
    unsiloed: UnsiloedSimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: six tracked jobs, all due, and a brake of two (Unsiloed has no listing)
    rt = unsiloed_runtime(unsiloed, bucket, s3_server, sqlite_url, max_deletes_per_sweep=2)
    ids = tracked_jobs(rt, unsiloed, 6)

    # when: one sweep, then another
    first = sweep_provider(rt, "unsiloed")
    after_first = len(unsiloed.deleted)
    second = sweep_provider(rt, "unsiloed")
    rt.close()

    # then: each sweep starts two deletes, says why it stopped, and nothing is lost
    assert after_first == 2
    assert first.summary().deleted == 2
    assert first.stopped_reason is not None
    assert "max_deletes_per_sweep (2)" in first.stopped_reason
    assert len(unsiloed.deleted) == 4
    assert second.summary().deleted == 2
    assert all(unsiloed.deletes_of(job_id) <= 1 for job_id in ids)


def test_a_read_only_sweep_spends_no_brake_and_reaches_every_due_job(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str, s3: S3Client
) -> None:
    # given: read-only, a brake of two, and three listed jobs, all due
    ids = [daily_sim.add_job("finished", transcription=[("txt", b"%d\n" % i)]) for i in range(3)]
    provider = daily_provider(daily_sim, read_only=True, max_deletes_per_sweep=2)
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"daily": provider},
    )
    rt = build_runtime(settings_of(data))

    # when: two sweeps run
    first = sweep_provider(rt, "daily")
    second = sweep_provider(rt, "daily")
    rt.close()

    # then: every job is archived by the first, none deleted, and nothing stood in line
    for job_id in ids:
        assert folder("daily", job_id) + "manifest.json" in objects(s3, bucket)
    assert daily_sim.seen("DELETE") == []
    assert first.summary().archived == 3
    assert first.stopped_reason is None
    assert second.dispatched == 0


@pytest.mark.redis
@pytest.mark.slow
def test_under_celery_the_brake_is_shared_by_every_worker_of_the_sweep(
    unsiloed: UnsiloedSimulator,
    bucket: str,
    s3_server: S3Server,
    sqlite_url: str,
    tmp_path: Path,
    celery_queue: str,
    start_worker: Any,
) -> None:
    # given: two Celery workers of two processes each, eight due jobs, a brake of three
    provider = unsiloed.provider_table(max_deletes_per_sweep=3)
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"unsiloed": provider},
        broker={"url": REDIS_URL, "queue": celery_queue},
    )
    config = write_config(tmp_path / "retention.toml", data)
    ids = [unsiloed.add_job("completed", document=PDF, updated_at=LONG_AGO) for _ in range(8)]
    assert run_cli("track", "unsiloed", *ids, config=config).code == 0
    start_worker(config, celery_queue, concurrency=2)
    start_worker(config, celery_queue, concurrency=2)

    # when: one sweep is enqueued, and its jobs run on all four processes
    assert run_cli("sweep", "--enqueue", config=config).code == 0
    rt = build_runtime(settings_of(data))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        states = [state(rt, "unsiloed", job_id) for job_id in ids]
        settled = sum(s in (JobState.DELETED, JobState.ARCHIVED) for s in states)
        if len(unsiloed.deleted) >= 3 and settled == len(ids):
            break
        time.sleep(0.5)
    time.sleep(2)  # any delete over the budget would have arrived by now
    rt.close()

    # then: three deletes in all, the rest archived and waiting for the next sweep
    assert len(unsiloed.deleted) == 3, states
    assert states.count(JobState.DELETED) == 3
    assert states.count(JobState.ARCHIVED) == 5


# -- leases --------------------------------------------------------------------------------


@pytest.fixture
def scenario(
    daily_sim: DailySimulator, later_sim: DailySimulator, bucket: str, custom_bucket: str
) -> Scenario:
    return build(daily_sim, later_sim, bucket, custom_bucket)


@pytest.mark.redis
def test_a_busy_sweep_names_the_holder_its_last_renewal_and_the_end_of_its_lease(
    scenario: Scenario, s3_server: S3Server, sqlite_url: str
) -> None:
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    other = rt.sweep_lease("daily", timedelta(seconds=30))
    assert other.acquire()
    try:
        report = sweep_provider(rt, "daily")
    finally:
        other.release()
        rt.close()
    host, pid = other.owner.split(":")[:2]
    assert report.busy
    assert report.busy_detail is not None
    assert f"held by {host} (pid {pid})" in report.busy_detail
    assert "renewed 0 s ago" in report.busy_detail
    assert "lease ends in 30 s" in report.busy_detail or "lease ends in 29 s" in report.busy_detail


@pytest.mark.redis
def test_a_sweep_that_loses_its_lease_stops_dispatching(
    unsiloed: UnsiloedSimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: a slow provider, one job at a time, and a lease renewed every half second
    rt = unsiloed_runtime(unsiloed, bucket, s3_server, sqlite_url, concurrency=1)
    ids = tracked_jobs(rt, unsiloed, 12)
    unsiloed.inject("delay", method="GET", path="^/jobs/[^/]+$", times=100, seconds=0.4)
    assert rt.redis is not None
    key = f"{rt.namespace}:sweep-lease:sweep:unsiloed"

    def steal() -> None:
        time.sleep(1.5)
        assert rt.redis is not None
        rt.redis.hset(key, "owner", "another-host:1:stolen")

    # when: someone else takes the lease while the sweep runs
    thief = threading.Thread(target=steal)
    thief.start()
    report = sweep_provider(rt, "unsiloed", lease_ttl=timedelta(seconds=1.5))
    thief.join()
    rt.close()

    # then: the sweep stopped handing out jobs and said why
    assert report.stopped_reason is not None
    assert "lost its lease" in report.stopped_reason
    assert report.dispatched < len(ids)


def test_a_duplicate_task_honours_the_jobs_backoff(
    unsiloed: UnsiloedSimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: a job deferred a moment ago by an outage
    rt = unsiloed_runtime(unsiloed, bucket, s3_server, sqlite_url)
    (job_id,) = tracked_jobs(rt, unsiloed, 1)
    unsiloed.inject(method="GET", status=503, times=20)
    assert process_job(rt, "unsiloed", job_id).outcome == Outcome.DEFERRED
    unsiloed.clear_faults()
    asked = len(unsiloed.requests)

    # when: a second task for the same job runs at once (a duplicate message)
    again = process_job(rt, "unsiloed", job_id)
    rt.close()

    # then: it waits for the backoff like the sweep does, and asks the provider nothing
    assert again.outcome == Outcome.WAITING
    assert len(unsiloed.requests) == asked


def test_a_worker_paused_past_its_claim_sends_no_delete(
    unsiloed: UnsiloedSimulator,
    bucket: str,
    s3_server: S3Server,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: a one-second claim whose heartbeat stalls (the whole process pauses: GC, a
    # stopped VM), and a pause right before the delete would leave
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"unsiloed": unsiloed.provider_table()},
        worker={"job_lease_seconds": 1},
    )
    rt = build_runtime(settings_of(data))
    (job_id,) = tracked_jobs(rt, unsiloed, 1)
    monkeypatch.setattr(leases.Heartbeat, "_run", lambda self: None)
    limiter = rt.providers["unsiloed"].api.limiter  # type: ignore[attr-defined]
    real_acquire = limiter.acquire

    def pause_before_delete(**kwargs: Any) -> None:
        if state(rt, "unsiloed", job_id) == JobState.DELETING:  # the gate is open
            time.sleep(1.5)
        real_acquire(**kwargs)

    monkeypatch.setattr(limiter, "acquire", pause_before_delete)

    # when: the job runs
    result = process_job(rt, "unsiloed", job_id)

    # then: the delete never left; the job stays past the gate for a live worker to finish
    assert unsiloed.seen("DELETE") == []
    assert result.outcome in (Outcome.DEFERRED, Outcome.BUSY)
    assert "claim" in (result.error or "claim")
    assert state(rt, "unsiloed", job_id) == JobState.DELETING
    rt.close()


# A huge Retry-After (deferred no longer than the longest backoff) and a manifest that lists
# fewer files than the ledger (the gate stays shut) are in tests/pipeline/test_process_job.py,
# on the fakes; the header's parsing and cap are tests/unit/test_http_api.py's.


# -- the gate, cleanup and restore ---------------------------------------------------------


def test_cleanup_leaves_a_custom_bucket_object_that_changed_since_it_was_archived(
    scenario: Scenario, s3: S3Client, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: a job with outputs in the user's own bucket, archived; then one output is
    # written again at its key
    data = scenario.config(sqlite_url, s3_server.endpoint_url)
    data["providers"]["daily"]["read_only"] = True
    rt = build_runtime(settings_of(data))
    job_id = scenario.ids["custom"]
    assert process_job(rt, "daily", job_id).outcome == Outcome.ARCHIVED
    rt.close()
    changed, untouched = sorted(scenario.outputs[job_id])
    s3.put_object(Bucket=scenario.custom_bucket, Key=changed, Body=b"written after the archive")

    # when: the delete goes ahead
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    assert process_job(rt, "daily", job_id).outcome == Outcome.DELETED
    rt.close()

    # then: the changed object stays, the other is removed, and the receipt says which
    left = objects(s3, scenario.custom_bucket)
    assert left == {changed: b"written after the archive"}
    receipt_key = folder("daily", job_id) + "deletion.json"
    receipt = json.loads(s3.get_object(Bucket=scenario.bucket, Key=receipt_key)["Body"].read())
    assert [o["key"] for o in receipt["custom_bucket_objects_deleted"]] == [untouched]
    assert [o["key"] for o in receipt["custom_bucket_objects_left"]] == [changed]
    assert (
        "changed since it was archived" in receipt["custom_bucket_objects_left"][0]["left_because"]
    )


def test_cleanup_in_a_versioned_bucket_deletes_the_archived_version_only(
    scenario: Scenario, s3: S3Client, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: the user's bucket keeps versions; an output is archived, then rewritten
    s3.put_bucket_versioning(
        Bucket=scenario.custom_bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    job_id = scenario.ids["custom"]
    for key, content in scenario.outputs[job_id].items():  # versioned copies of each output
        body = content if isinstance(content, bytes) else b""
        s3.put_object(Bucket=scenario.custom_bucket, Key=key, Body=body)
    data = scenario.config(sqlite_url, s3_server.endpoint_url)
    data["providers"]["daily"]["read_only"] = True
    rt = build_runtime(settings_of(data))
    assert process_job(rt, "daily", job_id).outcome == Outcome.ARCHIVED
    rt.close()
    changed = sorted(scenario.outputs[job_id])[0]
    s3.put_object(Bucket=scenario.custom_bucket, Key=changed, Body=b"a newer version")

    # when
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    assert process_job(rt, "daily", job_id).outcome == Outcome.DELETED
    rt.close()

    # then: the newer version is what remains at the key
    assert s3.get_object(Bucket=scenario.custom_bucket, Key=changed)["Body"].read() == (
        b"a newer version"
    )


def test_restore_reads_the_verified_version_and_reports_a_newer_one(
    scenario: Scenario, s3: S3Client, s3_server: S3Server, sqlite_url: str, tmp_path: Path
) -> None:
    # given: a versioned archive; a job archived and deleted; then an archived key rewritten
    s3.put_bucket_versioning(Bucket=scenario.bucket, VersioningConfiguration={"Status": "Enabled"})
    config = scenario.write(tmp_path / "retention.toml", sqlite_url, s3_server.endpoint_url)
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    job_id = scenario.ids["finished"]
    assert process_job(rt, "daily", job_id).outcome == Outcome.DELETED
    rt.close()
    key = folder("daily", job_id) + sorted(scenario.outputs[job_id])[0]
    s3.put_object(Bucket=scenario.bucket, Key=key, Body=b"not what was archived")

    # when
    run = run_cli("restore", "daily", job_id, "--verify-only", config=config)

    # then: every file verifies at its archived version, and the newer one is named
    assert run.code == 0, run.stdout + run.stderr
    assert "3 of 3 file(s) verified" in run.stdout
    assert "a newer version" in run.stdout


def test_a_job_task_expires_after_one_schedule_period(
    scenario: Scenario, s3_server: S3Server, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import tasks

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.process_job_task, "apply_async", lambda *a, **kw: sent.append(kw))
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    dispatch = tasks.job_dispatcher(rt, "daily", timedelta(minutes=15))
    dispatch("job-1", "budget-1")
    rt.close()
    assert sent[0]["expires"] == 15 * 60


# -- every output the delete would destroy is accounted for --------------------------------


def test_an_output_the_worker_does_not_recognise_keeps_the_job_until_it_is_accepted(
    daily_sim: DailySimulator,
    bucket: str,
    s3: S3Client,
    s3_server: S3Server,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    # given: a finished Daily job with a transcript and a section the adapter does not know
    job_id = daily_sim.add_job(
        "finished",
        transcription=[("txt", b"hello\n")],
        linked={"recording": [("mp4", b"a recording")]},
    )
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"daily": daily_provider(daily_sim)},
    )
    config = write_config(tmp_path / "retention.toml", data)

    # when: it is swept
    run = run_cli("sweep", "--json", config=config)

    # then: nothing is deleted or archived, and the job is kept with the field named (exit 1)
    assert run.code == 1, run.stderr
    assert run.last_json()["kept"] == 1
    assert daily_sim.seen("DELETE") == []
    assert objects(s3, bucket) == {}
    status = run_cli("status", config=config)
    assert f"kept    {job_id}" in status.stdout
    assert "output.recording[0]" in status.stdout
    assert "nothing deleted" in status.stdout
    kept = [e for e in run.log_events() if e["event"] == "job_finished" and e["outcome"] == "kept"]
    assert kept[0]["kept_reason"] == "unrecognised_output"

    # and once the operator accepts that section on purpose and puts the job back in line,
    # the next sweep archives the rest and deletes
    data["providers"]["daily"]["ignore_outputs"] = ["recording"]
    write_config(config, data)
    assert run_cli("retry", "daily", job_id, config=config).code == 0
    again = run_cli("sweep", "--json", config=config)
    assert again.last_json()["deleted"] == 1, again.stdout
    archived = objects(s3, bucket)
    assert not any("recording" in key for key in archived)
    assert any(key.endswith("out-0.txt") for key in archived)


def test_the_metric_counts_each_kept_job_by_reason(
    unsiloed: UnsiloedSimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    from prometheus_client import REGISTRY

    def kept(reason: str) -> float:
        labels = {"provider": "unsiloed", "reason": reason}
        return REGISTRY.get_sample_value("retention_jobs_kept_total", labels) or 0.0

    # given: a failed Unsiloed job (its source document cannot be fetched), and a completed
    # one whose source document does not match the hash Unsiloed declares for it
    rt = unsiloed_runtime(unsiloed, bucket, s3_server, sqlite_url)
    failed = unsiloed.add_job("failed", error="unreadable", updated_at=LONG_AGO)
    mismatch = unsiloed.add_job(
        "completed", document=b"%PDF-1.4", pdf_hash="sha256:" + "0" * 64, updated_at=LONG_AGO
    )
    rt.ledger.operator.track("unsiloed", [failed, mismatch], now=rt.clock())
    before = kept("failed_job"), kept("hash_mismatch")

    # when
    report = sweep_provider(rt, "unsiloed")
    rt.close()

    # then: both are kept, counted by reason, and nothing is deleted
    assert unsiloed.deleted == []
    assert report.summary().kept == 2
    assert (kept("failed_job"), kept("hash_mismatch")) == (before[0] + 1, before[1] + 1)


def test_a_completed_unsiloed_job_whose_result_links_no_source_document_stays_there(
    unsiloed: UnsiloedSimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    from prometheus_client import REGISTRY

    labels = {"provider": "unsiloed", "reason": "no_source"}
    before = REGISTRY.get_sample_value("retention_jobs_kept_total", labels) or 0.0

    # given: a tracked, due job whose result has no file_url (the older result shape), so
    # nothing says where the source document is that Unsiloed's delete also removes
    served = b'{"data": {"total": {"value": "12.00"}}, "processing_time": 1.5}'
    job_id = unsiloed.add_job("completed", result=served, updated_at=LONG_AGO)
    rt = unsiloed_runtime(unsiloed, bucket, s3_server, sqlite_url)
    rt.ledger.operator.track("unsiloed", [job_id], now=rt.clock())

    # when
    result = process_job(rt, "unsiloed", job_id)
    (status,) = rt.ledger.query.status({"unsiloed": 0}, now=rt.clock())
    rt.close()

    # then: kept, not deleted; retention status says why; the metric counts it
    assert result.outcome == Outcome.KEPT
    assert unsiloed.deleted == []
    (kept,) = status.kept
    assert kept.job_id == job_id
    assert kept.reason is not None
    assert "the result gives no file_url" in kept.reason
    assert 'add "file_url" to ignore_outputs' in kept.reason
    assert REGISTRY.get_sample_value("retention_jobs_kept_total", labels) == before + 1

    # and once the operator accepts losing source documents, the result alone is archived
    # and the job deleted
    rt = unsiloed_runtime(unsiloed, bucket, s3_server, sqlite_url, ignore_outputs=["file_url"])
    assert process_again(rt, "unsiloed", job_id).outcome == Outcome.DELETED
    rt.close()
    assert unsiloed.deleted == [job_id]


def test_deleting_failed_unsiloed_jobs_is_an_explicit_choice(
    unsiloed: UnsiloedSimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    rt = unsiloed_runtime(unsiloed, bucket, s3_server, sqlite_url, delete_failed_jobs=True)
    failed = unsiloed.add_job("failed", error="unreadable", updated_at=LONG_AGO)
    rt.ledger.operator.track("unsiloed", [failed], now=rt.clock())
    assert process_job(rt, "unsiloed", failed).outcome == Outcome.DELETED
    rt.close()
    assert unsiloed.deleted == [failed]


def _a_due_daily_job(
    sim: DailySimulator, bucket: str, s3_server: S3Server, ledger_url: str
) -> tuple[Runtime, str]:
    """A runtime, and a finished Daily job it has seen listed and may delete now."""
    job_id = sim.add_job("finished", transcription=[("txt", b"hello\n")])
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=ledger_url,
        providers={"daily": daily_provider(sim)},
    )
    rt = build_runtime(settings_of(data))
    listed = ListedJob(job_id, "finished", Phase.SUCCEEDED)
    rt.ledger.discovery.record_listing("daily", [listed], rt.clock())
    return rt, job_id


def _receipt(s3: S3Client, bucket: str, job_id: str) -> Any:
    return json.loads(objects(s3, bucket)[folder("daily", job_id) + "deletion.json"])


def test_a_job_daily_drops_after_a_partial_delete_gets_a_receipt_that_says_so(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str, s3: S3Client
) -> None:
    from prometheus_client import REGISTRY
    from structlog.testing import capture_logs

    from tests.helpers import process_again

    def closed_with_remains() -> float:
        labels = {"provider": "daily"}
        return REGISTRY.get_sample_value("retention_jobs_closed_with_remains_total", labels) or 0

    before = closed_with_remains()

    # given: a Daily job whose delete fails to clean up its files, and Daily drops the job
    # record anyway, so the next delete finds nothing to delete
    rt, job_id = _a_due_daily_job(daily_sim, bucket, s3_server, sqlite_url)
    daily_sim.fail_next_delete(job_id, keeps_job=False)

    # when: the job is processed, then again later
    first = process_job(rt, "daily", job_id)
    with capture_logs() as logs:
        second = process_again(rt, "daily", job_id)
    rt.close()

    # then: the ledger closes the job (Daily holds no job to delete), but the receipt does not
    # claim a clean delete: it names the partial delete and says outputs may remain at Daily
    assert (first.outcome, second.outcome) == (Outcome.DEFERRED, Outcome.DELETED)
    receipt = _receipt(s3, bucket, job_id)
    assert receipt["provider_answer"]["result"] == "already_gone"
    assert receipt["outputs_may_remain_at_provider"] is True
    (partial,) = receipt["partial_deletes"]
    assert "Failed to delete" in partial["error"]
    assert partial["at"]
    warned = [e for e in logs if e["event"] == "provider_dropped_job_after_partial_delete"]
    assert [(e["log_level"], e["job_id"]) for e in warned] == [("warning", job_id)]
    assert closed_with_remains() == before + 1


def test_a_clean_delete_receipt_has_no_partial_deletes(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str, s3: S3Client
) -> None:
    rt, job_id = _a_due_daily_job(daily_sim, bucket, s3_server, sqlite_url)
    assert process_job(rt, "daily", job_id).outcome == Outcome.DELETED
    rt.close()
    receipt = _receipt(s3, bucket, job_id)
    assert (receipt["partial_deletes"], receipt["outputs_may_remain_at_provider"]) == ([], False)


def test_a_partial_delete_stays_deleting_is_retried_and_never_recorded_deleted(
    bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    from tests.helpers import process_again
    from worker.simulators.loom import LoomSimulator

    # given: a Loom job whose first delete leaves the audio behind
    sim = LoomSimulator("loom-fail-closed-key", "loom-fail-closed-secret")
    sim.start()
    provider = sim.provider_table()
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"loom": provider},
    )
    rt = build_runtime(settings_of(data))
    ref = sim.add_job(inputs=[("a.mp3", "audio", b"audio")], transcripts=[("t.txt", b"text")])
    rt.ledger.operator.track("loom", [ref], now=rt.clock())
    sim.fail_next_delete(ref, ("Audio file",))
    try:
        # when: the job is processed, then tried again later
        first = process_job(rt, "loom", ref)
        between = state(rt, "loom", ref)
        status = rt.ledger.query.status({"loom": 0}, now=rt.clock())
        second = process_again(rt, "loom", ref)
    finally:
        rt.close()
        sim.stop()

    # then: the first is no delete, the job stays past the gate and is reported; the retry
    # deletes it
    assert first.outcome == Outcome.DEFERRED
    assert "Audio file" in (first.error or "")
    assert between == JobState.DELETING
    (loom,) = status
    assert [job.job_id for job in loom.overdue] == [ref]
    assert "did not delete: Audio file" in (loom.overdue[0].last_error or "")
    assert second.outcome == Outcome.DELETED


def test_a_bare_404_is_not_taken_for_gone(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: a gateway answers the job's read with an HTML 404
    job_id = daily_sim.add_job("finished", transcription=[("txt", b"x\n")])
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"daily": daily_provider(daily_sim)},
    )
    rt = build_runtime(settings_of(data))
    rt.ledger.operator.track("daily", [job_id], now=rt.clock())
    daily_sim.inject(method="GET", path=f"{job_id}$", status=404, body="<html>404</html>", times=9)

    # when
    result = process_job(rt, "daily", job_id)

    # then: the job is not recorded gone; it is read again later
    assert result.outcome == Outcome.DEFERRED
    assert state(rt, "daily", job_id) == JobState.PENDING
    rt.close()
