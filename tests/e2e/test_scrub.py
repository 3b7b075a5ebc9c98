"""`retention scrub`'s engine against the S3 server: every archived job re-verified against
its manifest and the ledger, damage named key by key, a sample read back."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.e2e.scenario import Scenario, build, folder
from tests.helpers import settings_of
from worker.bootstrap import build_runtime
from worker.job import process_job
from worker.outcomes import Outcome
from worker.scrub import scrub
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def scenario(
    daily_sim: DailySimulator, later_sim: DailySimulator, bucket: str, custom_bucket: str
) -> Scenario:
    return build(daily_sim, later_sim, bucket, custom_bucket)


def archived(scenario: Scenario, s3_server: S3Server, sqlite_url: str, *labels: str) -> None:
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    for label in labels:
        assert process_job(rt, "daily", scenario.ids[label]).outcome == Outcome.DELETED
    rt.close()


def test_a_clean_archive_scrubs_clean_and_a_sample_is_read_back(
    scenario: Scenario, s3_server: S3Server, sqlite_url: str
) -> None:
    archived(scenario, s3_server, sqlite_url, "finished", "custom")
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    report = scrub(rt.archive, rt.ledger, read_fraction=1.0)
    rt.close()
    assert report.clean, report.findings
    assert (report.jobs, report.files, report.read) == (2, 5, 5)


def test_damage_is_named_key_by_key(
    scenario: Scenario, s3: S3Client, s3_server: S3Server, sqlite_url: str
) -> None:
    # given: three deleted jobs; one loses a file, one has a file replaced by other bytes of
    # the same size, one loses its manifest
    archived(scenario, s3_server, sqlite_url, "finished", "finished_big", "custom")
    lost = (
        folder("daily", scenario.ids["finished"])
        + sorted(scenario.outputs[scenario.ids["finished"]])[0]
    )
    s3.delete_object(Bucket=scenario.bucket, Key=lost)
    base = folder("daily", scenario.ids["custom"])
    replaced = base + sorted(scenario.outputs[scenario.ids["custom"]])[0]
    size = s3.head_object(Bucket=scenario.bucket, Key=replaced)["ContentLength"]
    s3.delete_object(Bucket=scenario.bucket, Key=replaced)
    s3.put_object(Bucket=scenario.bucket, Key=replaced, Body=b"X" * size)
    manifest = folder("daily", scenario.ids["finished_big"]) + "manifest.json"
    s3.delete_object(Bucket=scenario.bucket, Key=manifest)

    # when: the archive is scrubbed, reading every file back
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    report = scrub(rt.archive, rt.ledger, read_fraction=1.0)
    rt.close()

    # then: each damaged key is named with what is wrong with it
    problems = {f.key: f.problem for f in report.findings}
    assert set(problems) == {lost, replaced, manifest}
    assert problems[lost] == "missing"
    assert "SHA-256" in problems[replaced] or "ETag" in problems[replaced]
    assert problems[manifest] == "the manifest is missing"
    assert not report.clean


def test_a_newer_version_at_an_archived_key_is_reported_without_a_read(
    scenario: Scenario, s3: S3Client, s3_server: S3Server, sqlite_url: str
) -> None:
    s3.put_bucket_versioning(Bucket=scenario.bucket, VersioningConfiguration={"Status": "Enabled"})
    archived(scenario, s3_server, sqlite_url, "finished")
    key = (
        folder("daily", scenario.ids["finished"])
        + sorted(scenario.outputs[scenario.ids["finished"]])[0]
    )
    s3.put_object(Bucket=scenario.bucket, Key=key, Body=b"someone wrote here")
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    report = scrub(rt.archive, rt.ledger)
    rt.close()
    assert [(f.key, f.problem[:16]) for f in report.findings] == [(key, "a newer version ")]
    assert report.read == 0


def test_a_manifest_that_leaves_out_a_verified_file_is_a_finding(
    scenario: Scenario, s3: S3Client, s3_server: S3Server, sqlite_url: str
) -> None:
    archived(scenario, s3_server, sqlite_url, "finished")
    key = folder("daily", scenario.ids["finished"]) + "manifest.json"
    document = json.loads(s3.get_object(Bucket=scenario.bucket, Key=key)["Body"].read())
    document["files"] = document["files"][1:]
    s3.delete_object(Bucket=scenario.bucket, Key=key)
    s3.put_object(Bucket=scenario.bucket, Key=key, Body=json.dumps(document).encode())
    rt = build_runtime(settings_of(scenario.config(sqlite_url, s3_server.endpoint_url)))
    report = scrub(rt.archive, rt.ledger, provider="daily")
    rt.close()
    assert [f.key for f in report.findings] == [key]
    assert "leaves out 1 verified file(s)" in report.findings[0].problem
