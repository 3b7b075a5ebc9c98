"""Every delete rests on a fresh read of the job that matches its archive.

A job archived in an earlier run (while ``read_only`` was on, when the brake stopped the
sweep, after a delete that answered 503) is read again at the provider, under the same claim
and no older than ``max_read_age``, before its delete is sent. If the provider now lists an
output the manifest does not, the job is archived again (a new manifest beside the old) and
deleted on the new one; if it is no longer terminal, it waits. Simulators over HTTP, the S3
server and SQLite.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests.e2e.scenario import folder
from tests.helpers import config_data, daily_provider, objects, process_again, settings_of
from worker.bootstrap import Runtime, build_runtime
from worker.domain import JobState
from worker.outcomes import JobResult, Outcome
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server
from worker.sweep import sweep_provider

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def daily_runtime(
    sim: DailySimulator, bucket: str, s3_server: S3Server, ledger_url: str, **policy: Any
) -> Runtime:
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=ledger_url,
        providers={"daily": daily_provider(sim, **policy)},
    )
    return build_runtime(settings_of(data))


def archived_read_only(
    sim: DailySimulator, bucket: str, s3_server: S3Server, ledger_url: str
) -> str:
    """A finished Daily job, archived by a read-only sweep: at the provider, and in ARCHIVED."""
    job_id = sim.add_job("finished", transcription=[("txt", b"first take\n")])
    rt = daily_runtime(sim, bucket, s3_server, ledger_url, read_only=True)
    sweep_provider(rt, "daily")
    row = rt.ledger.query.get("daily", job_id)
    rt.close()
    assert row is not None
    assert row.state == JobState.ARCHIVED
    assert sim.deletes_of(job_id) == 0
    return job_id


def job_reads(sim: DailySimulator, job_id: str) -> int:
    return len(sim.seen("GET", f"/batch-processor/{job_id}$"))


def test_an_output_added_after_the_archive_is_archived_before_the_delete(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str, s3: S3Client
) -> None:
    # given: a job archived while deletes were paused, then given a summary at Daily
    job_id = archived_read_only(daily_sim, bucket, s3_server, sqlite_url)
    key = daily_sim.add_output(job_id, "summary", "txt", b"a summary written later\n")
    reads_before = job_reads(daily_sim, job_id)

    # when: deletes are turned back on and a sweep runs
    rt = daily_runtime(daily_sim, bucket, s3_server, sqlite_url)
    report = sweep_provider(rt, "daily")
    row = rt.ledger.query.get("daily", job_id)
    rt.close()

    # then: the job was read again, the new output archived and listed in a new manifest,
    # the old manifest kept beside it, and only then was the job deleted
    assert job_reads(daily_sim, job_id) > reads_before
    base = folder("daily", job_id)
    stored = objects(s3, bucket, base)
    assert stored[base + key] == b"a summary written later\n"
    manifests = sorted(k for k in stored if k.rsplit("/", 1)[-1].startswith("manifest"))
    assert len(manifests) == 2
    first = json.loads(stored[base + "manifest.json"])
    assert base + key not in {f["key"] for f in first["files"]}
    assert row is not None
    assert row.state == JobState.DELETED
    assert row.manifest_key is not None
    assert row.manifest_key != base + "manifest.json"
    latest = json.loads(stored[row.manifest_key])
    assert base + key in {f["key"] for f in latest["files"]}
    assert daily_sim.deletes_of(job_id) == 1
    assert report.summary().deleted == 1


def test_a_job_running_again_after_its_archive_waits_and_is_not_deleted(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: an archived job that Daily has set back to processing (a re-run)
    job_id = archived_read_only(daily_sim, bucket, s3_server, sqlite_url)
    daily_sim.set_status(job_id, "processing")

    # when: deletes are turned back on and a sweep runs
    rt = daily_runtime(daily_sim, bucket, s3_server, sqlite_url)
    report = sweep_provider(rt, "daily")
    row = rt.ledger.query.get("daily", job_id)
    rt.close()

    # then: nothing is deleted; the job stays archived and waits for its run to end
    assert daily_sim.deletes_of(job_id) == 0
    assert row is not None
    assert row.state == JobState.ARCHIVED
    assert report.summary().deleted == 0


def test_a_job_archived_and_deleted_in_one_run_is_read_once(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: a finished, due job
    job_id = daily_sim.add_job("finished", transcription=[("txt", b"one read\n")])

    # when: one sweep archives and deletes it
    rt = daily_runtime(daily_sim, bucket, s3_server, sqlite_url)
    sweep_provider(rt, "daily")
    rt.close()

    # then: the read that led to the archive was the one the delete rested on
    assert daily_sim.deletes_of(job_id) == 1
    assert job_reads(daily_sim, job_id) == 1


def test_a_stale_read_is_taken_again_before_the_delete(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: a read older than max_read_age by the time the archive is done (a slow download)
    job_id = daily_sim.add_job("finished", transcription=[("txt", b"slow archive\n")])

    # when: one sweep archives and deletes it
    daily_sim.inject("delay", method="GET", path="/files/", seconds=1.5)
    rt = daily_runtime(daily_sim, bucket, s3_server, sqlite_url, max_read_age_seconds=1)
    sweep_provider(rt, "daily")
    rt.close()

    # then: the job was read again right before its delete
    assert daily_sim.deletes_of(job_id) == 1
    assert job_reads(daily_sim, job_id) == 2


def deleting_job(
    sim: DailySimulator, bucket: str, s3_server: S3Server, ledger_url: str
) -> tuple[Runtime, str]:
    """A job whose delete was sent and answered in part: it stays DELETING, and its delete
    is sent again later."""
    job_id = sim.add_job("finished", transcription=[("txt", b"first take\n")])
    rt = daily_runtime(sim, bucket, s3_server, ledger_url)
    sim.fail_next_delete(job_id, keeps_job=True)
    result = process_again(rt, "daily", job_id)
    assert result.outcome == Outcome.DEFERRED
    row = rt.ledger.query.get("daily", job_id)
    assert row is not None
    assert row.state == JobState.DELETING
    return rt, job_id


def test_a_deleting_job_with_a_new_output_archives_it_before_the_delete_is_sent_again(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str, s3: S3Client
) -> None:
    # given: a delete that may have been sent, then a new output at Daily
    rt, job_id = deleting_job(daily_sim, bucket, s3_server, sqlite_url)
    key = daily_sim.add_output(job_id, "transcription", "vtt", b"WEBVTT\n\nadded later\n")
    deletes_before = daily_sim.deletes_of(job_id)

    # when: the job is tried again
    result = process_again(rt, "daily", job_id)
    row = rt.ledger.query.get("daily", job_id)
    rt.close()

    # then: the new output is archived and in the manifest the delete rests on
    base = folder("daily", job_id)
    stored = objects(s3, bucket, base)
    assert stored[base + key] == b"WEBVTT\n\nadded later\n"
    assert row is not None
    assert row.state == JobState.DELETED, result.error
    assert row.manifest_key is not None
    assert base + key in {f["key"] for f in json.loads(stored[row.manifest_key])["files"]}
    assert daily_sim.deletes_of(job_id) == deletes_before + 1


def test_a_deleting_job_whose_new_output_cannot_be_archived_is_kept_for_a_person(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: a delete that may have been sent, then an output the worker cannot archive
    rt, job_id = deleting_job(daily_sim, bucket, s3_server, sqlite_url)
    daily_sim.add_output(job_id, "recording", "mp4", b"not archivable\n", located=False)
    deletes_before = daily_sim.deletes_of(job_id)

    # when: the job is tried again
    result = process_again(rt, "daily", job_id)
    statuses = rt.ledger.query.status({"daily": 0}, now=rt.clock())
    rt.close()

    # then: the delete is not sent again; the job is kept with a reason that says why,
    # shown among the kept jobs of `retention status`
    assert daily_sim.deletes_of(job_id) == deletes_before
    assert result.outcome == Outcome.KEPT
    assert result.kept_reason == "changed_after_delete"
    assert result.error is not None
    assert "after its delete was sent" in result.error
    kept = {k.job_id: k for k in statuses[0].kept}
    assert job_id in kept
    assert "after its delete was sent" in (kept[job_id].reason or "")


def test_a_dry_run_reads_an_archived_job_before_it_says_it_would_delete_it(
    daily_sim: DailySimulator, bucket: str, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: an archived job given a new output at Daily
    job_id = archived_read_only(daily_sim, bucket, s3_server, sqlite_url)
    daily_sim.add_output(job_id, "summary", "txt", b"later\n")

    # when: a dry run plans the sweep with deletes on
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"daily": daily_provider(daily_sim)},
    )
    rt = build_runtime(settings_of(data), dry_run=True)
    results: dict[str, JobResult] = {}
    sweep_provider(rt, "daily", on_result=lambda r: results.update({r.job_id: r}))
    rt.close()

    # then: it says the job would be archived again (and then deleted), listing the new file
    assert results[job_id].outcome == Outcome.WOULD_DELETE
    assert any("summary" in f.key for f in results[job_id].plan)
