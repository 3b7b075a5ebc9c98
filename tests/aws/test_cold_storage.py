"""Cold storage classes: files in GLACIER, manifests and receipts readable at once, the delete
gate on HEAD alone, and `retention restore` thawing what it must (moto answers a GET of a
GLACIER object with InvalidObjectState, and carries out a RestoreObject at once)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from tests.archive.support import record_calls
from tests.aws.support import Jobs, two_jobs
from tests.helpers import run_cli, settings_of
from worker.archive import Archive, make_s3_client
from worker.restore import restore
from worker.settings import ArchiveSettings
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server
from worker.sweep import sweep_provider

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def jobs(daily_sim: DailySimulator, bucket: str, custom_bucket: str, s3_server: S3Server) -> Jobs:
    return two_jobs(daily_sim, bucket, custom_bucket, s3_server.endpoint_url)


@pytest.fixture
def swept(jobs: Jobs, sqlite_url: str) -> Jobs:
    """Both jobs swept with storage_class = "GLACIER"."""
    rt = jobs.runtime(sqlite_url, storage_class="GLACIER")
    summary = sweep_provider(rt, "daily").summary()
    rt.close()
    assert (summary.archived, summary.deleted, summary.failed) == (2, 2, 0), summary
    return jobs


def storage_class(s3: S3Client, bucket: str, key: str) -> str:
    return s3.head_object(Bucket=bucket, Key=key).get("StorageClass", "STANDARD")


@pytest.mark.slow
def test_with_glacier_jobs_are_archived_and_deleted_and_no_data_file_is_read(
    jobs: Jobs, s3: S3Client, sqlite_url: str
) -> None:
    # given storage_class = "GLACIER" for archived files
    rt = jobs.runtime(sqlite_url, storage_class="GLACIER")
    calls = record_calls(rt.archive)

    # when one sweep runs
    summary = sweep_provider(rt, "daily").summary()
    rt.close()

    # then both jobs are archived and deleted at the provider
    assert (summary.archived, summary.deleted, summary.failed) == (2, 2, 0), summary
    for label in ("links", "custom"):
        assert jobs.daily.deletes_of(jobs.ids[label]) == 1
        # and the files went cold while the manifest and the receipt stayed readable
        for key in jobs.data_keys(label):
            assert storage_class(s3, jobs.bucket, key) == "GLACIER"
        for name in ("manifest.json", "deletion.json"):
            assert storage_class(s3, jobs.bucket, jobs.folder(label) + name) == "STANDARD"
    # and nothing on the way to the delete read a data file: HEAD works on cold objects
    read = {params["Key"] for params in calls.reads() if params["Bucket"] == jobs.bucket}
    assert all(key.endswith(("manifest.json", "deletion.json")) for key in read), read


def test_restore_of_a_cold_job_starts_a_thaw_and_says_when_to_come_back(
    swept: Jobs, s3_server: S3Server, sqlite_url: str, tmp_path: Path
) -> None:
    config = swept.write(tmp_path / "retention.toml", sqlite_url, storage_class="GLACIER")
    job = swept.ids["links"]

    # when the job is restored without --wait
    first = run_cli("restore", "daily", job, "--to", str(tmp_path / "out"), config=config)

    # then no file is read yet: a Standard restore is started for each, and the command
    # says when to come back
    assert first.code == 1, first.stdout + first.stderr
    waiting = [line for line in first.lines if line.startswith("WAITING")]
    assert len(waiting) == len(swept.outputs[job])
    assert all("in GLACIER: a Standard restore was started" in line for line in waiting)
    assert "typically ready in 3-5 hours" in first.stdout
    assert "stays readable 7 days" in first.stdout
    assert "--wait" in first.stdout
    assert "3 waiting for a restore from cold storage" in first.lines[-1]

    # and once the restores have finished (moto carries them out at once), a second run
    # restores every file, byte for byte
    second = run_cli("restore", "daily", job, "--to", str(tmp_path / "out"), config=config)
    assert second.code == 0, second.stdout + second.stderr
    for key, data in swept.outputs[job].items():
        assert (tmp_path / "out" / key).read_bytes() == data


@pytest.mark.slow
def test_restore_with_wait_thaws_and_restores_in_one_run(
    swept: Jobs, sqlite_url: str, tmp_path: Path
) -> None:
    config = swept.write(tmp_path / "retention.toml", sqlite_url, storage_class="GLACIER")
    job = swept.ids["custom"]

    run = run_cli(
        "restore", "daily", job, "--verify-only", "--wait", "--timeout", "2m", config=config
    )

    assert run.code == 0, run.stdout + run.stderr
    assert f"{len(swept.outputs[job])} of {len(swept.outputs[job])} file(s) verified" in run.stdout


def test_waiting_for_a_thaw_gives_up_at_its_timeout_and_says_so(
    swept: Jobs, s3_server: S3Server
) -> None:
    # given a restore that never finishes
    full = settings_of(swept.config("sqlite://", storage_class="GLACIER"))
    archive = Archive(make_s3_client(full.archive), full.archive)

    def never_done(parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get("StorageClass") == "GLACIER":
            parsed["Restore"] = 'ongoing-request="true"'

    archive.client.meta.events.register("after-call.s3.HeadObject", never_done)
    now = [0.0]
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        now[0] += seconds

    # when a restore waits for an hour
    results = list(
        restore(
            archive,
            full,
            "daily",
            swept.ids["links"],
            to=None,
            wait=3600,
            sleep=sleep,
            clock=lambda: now[0],
        )
    )

    # then it polled ever less often, stopped at the hour, and says the files are thawing
    assert sum(naps) == pytest.approx(3600)
    assert naps[:3] == [10, 20, 40]
    assert max(naps) <= 300
    assert results
    assert all(
        not r.ok and r.waiting and "still thawing after waiting 3600 s" in r.waiting
        for r in results
    )


def test_a_restore_asks_for_the_configured_tier_and_days(
    swept: Jobs, s3: S3Client, sqlite_url: str
) -> None:
    settings = ArchiveSettings(
        bucket=swept.bucket,
        endpoint_url=swept.endpoint_url,
        region="us-east-1",
        restore_tier="Bulk",
        restore_days=3,
    )
    archive = Archive(make_s3_client(settings), settings)
    calls = record_calls(archive)
    key = sorted(swept.data_keys("links"))[0]

    thaw = archive.thaw(key)

    assert thaw is not None
    assert (thaw.state, thaw.storage_class, thaw.tier) == ("started", "GLACIER", "Bulk")
    (request,) = calls.named("RestoreObject")
    assert request["RestoreRequest"] == {"Days": 3, "GlacierJobParameters": {"Tier": "Bulk"}}


def test_deep_archive_is_never_asked_for_the_expedited_tier_it_does_not_have(
    s3_server: S3Server, s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="deep", Body=b"x", StorageClass="DEEP_ARCHIVE")
    settings = ArchiveSettings(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        region="us-east-1",
        restore_tier="Expedited",
    )
    archive = Archive(make_s3_client(settings), settings)

    thaw = archive.thaw("deep")

    assert thaw is not None
    assert thaw.tier == "Standard"


def test_a_manifest_class_that_cannot_be_read_at_once_is_refused() -> None:
    for cold in ("GLACIER", "DEEP_ARCHIVE"):
        with pytest.raises(ValidationError, match="read at once"):
            ArchiveSettings(bucket="archive", manifest_storage_class=cold)
    assert ArchiveSettings(bucket="archive", manifest_storage_class="STANDARD_IA")
