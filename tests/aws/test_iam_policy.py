"""deploy/iam/'s policies grant what the worker does, and no more.

1. Every S3 operation the worker's clients send during real runs (sweep, `retention check`'s
   probe, `retention restore`) is recorded with its parameters, mapped to the IAM actions
   AWS's reference names for it (tests/aws/iam.py), and checked against the policy files for
   the features of that run; and every action the files grant is needed by some run.
2. A sweep and a restore run end to end against moto with IAM enforced
   (``INITIAL_NO_AUTH_ACTION_COUNT``), as a user that holds only those policies.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError

import worker.archive
import worker.bootstrap
import worker.s3
from tests.aws.iam import POLICIES, allows, granted, load_policy, needs, policy_files
from tests.aws.support import Jobs, two_jobs
from tests.helpers import run_cli, settings_of, unused_port, write_to_bucket
from worker.archive import Archive, MiB
from worker.check import run_checks
from worker.errors import DownloadError
from worker.restore import restore
from worker.simulators.blobs import Blob
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import LOCAL_CREDENTIALS, S3Server, start_s3_server
from worker.sweep import sweep_provider

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass
class Recorder:
    """Every operation any S3 client the worker builds sends, with its parameters."""

    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.seen.append((model.name, dict(params)))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    found = Recorder()
    real = worker.s3.make_s3_client

    def recording(*args: Any, **kwargs: Any) -> Any:
        client = real(*args, **kwargs)
        client.meta.events.register("before-parameter-build.s3", found)
        return client

    # Where the runtime, the check, the probe and the restore each look the factory up.
    for module in (worker.s3, worker.archive, worker.bootstrap):
        monkeypatch.setattr(module, "make_s3_client", recording)
    return found


@dataclass(frozen=True)
class Feature:
    name: str
    policies: tuple[str, ...]
    archive: dict[str, Any]
    locked: bool = False
    kms: bool = False


FEATURES = (
    Feature("plain", ("base", "custom-buckets"), {}),
    Feature(
        "object lock",
        ("base", "object-lock", "custom-buckets"),
        {"object_lock_mode": "GOVERNANCE", "object_lock_days": 1},
        locked=True,
    ),
    Feature("sse-kms", ("base", "sse-kms", "custom-buckets"), {}, kms=True),
    Feature("cold storage", ("base", "restore", "custom-buckets"), {"storage_class": "GLACIER"}),
)


def run_feature(
    feature: Feature, s3_server: S3Server, s3: S3Client, tmp_path: Path, recorder: Recorder
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str], str | None, str]:
    """Sweep two jobs, check the bucket, restore a job: what the worker sent, and the names
    the policies' placeholders stand for."""
    suffix = uuid.uuid4().hex[:10]
    bucket, custom = f"archive-{suffix}", f"outputs-{suffix}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=feature.locked)
    s3.create_bucket(Bucket=custom)
    if feature.locked:  # a versioned source bucket too: copies and cleanup by version
        s3.put_bucket_versioning(Bucket=custom, VersioningConfiguration={"Status": "Enabled"})
    archive_options = dict(feature.archive)
    kms_key = None
    if feature.kms:
        kms = boto3.client("kms", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
        kms_key = kms.create_key()["KeyMetadata"]["Arn"]
        archive_options["sse_kms_key_id"] = kms_key
    daily = DailySimulator(f"key-{suffix}", bucket_writer=write_to_bucket(s3))
    daily.start()
    start = len(recorder.seen)
    try:
        jobs: Jobs = two_jobs(daily, bucket, custom, s3_server.endpoint_url)
        ledger = f"sqlite:///{tmp_path}/{suffix}.db"
        settings = settings_of(jobs.config(ledger, **archive_options))
        rt = jobs.runtime(ledger, **archive_options)
        summary = sweep_provider(rt, "daily").summary()
        assert (summary.archived, summary.deleted, summary.failed) == (2, 2, 0), summary
        if feature.name == "plain":
            # a failed multipart upload is aborted: AbortMultipartUpload
            def broken() -> Iterator[bytes]:
                yield Blob(6 * MiB).read()
                raise DownloadError("the body broke off")

            with pytest.raises(DownloadError):
                rt.archive.store_stream("archive/broken", broken(), size_hint=12 * MiB)
        rt.close()
        checks = {c.name: c for c in run_checks(settings, "test", providers=False)}
        assert checks["archive"].ok, checks["archive"]
        archive = Archive(worker.archive.make_s3_client(settings.archive), settings.archive)
        restored = list(
            restore(archive, settings, "daily", jobs.ids["links"], to=None, wait=60, sleep=_no)
        )
        assert restored
        assert all(r.ok for r in restored), restored
    finally:
        daily.stop()
    names = {
        "ARCHIVE_BUCKET": bucket,
        "ARCHIVE_PREFIX": "archive/",
        "CUSTOM_BUCKET": custom,
        "KMS_KEY_ARN": kms_key or "arn:aws:kms:us-east-1:123456789012:key/none",
    }
    return recorder.seen[start:], names, kms_key, bucket


def _no(_: float) -> None:
    return None


@pytest.mark.slow
def test_every_call_the_worker_makes_is_granted_and_every_grant_is_used(
    s3_server: S3Server, s3: S3Client, tmp_path: Path, recorder: Recorder
) -> None:
    denied: list[str] = []
    needed: set[str] = set()
    operations: set[str] = set()
    for feature in FEATURES:
        # when the worker sweeps, checks and restores with this feature on
        calls, names, kms_key, bucket = run_feature(feature, s3_server, s3, tmp_path, recorder)
        policies = [load_policy(name, names) for name in feature.policies]
        # then each operation it sent is granted by this feature's policy files
        for operation, params in calls:
            operations.add(operation)
            for need in needs(
                operation,
                params,
                kms_key=kms_key,
                encrypted_buckets=[bucket] if kms_key else [],
                locked_buckets=[bucket] if feature.locked else [],
            ):
                needed.add(need.action)
                if not allows(policies, need):
                    denied.append(f"{feature.name}: {need.action} on {need.resource} ({need.why})")
    assert denied == []
    # and every action the files grant is one some run needed
    grants = set().union(*(granted(load_policy(name, {})) for name in POLICIES))
    assert grants - needed == set()
    assert {"PutObject", "CopyObject", "HeadObject", "RestoreObject", "DeleteObject"} <= operations


def test_the_policy_files_are_the_five_features_and_never_let_the_worker_delete_an_archive() -> (
    None
):
    assert {path.stem for path in policy_files()} == set(POLICIES)
    for name in POLICIES:
        policy = load_policy(name, {})
        assert policy["Version"] == "2012-10-17"
        for statement in policy["Statement"]:
            actions = statement["Action"]
            deletes = [a for a in actions if a.startswith("s3:Delete")]
            if deletes and any("ARCHIVE_BUCKET" in r for r in statement["Resource"]):
                # only `retention check`'s own probe objects
                assert statement["Resource"] == [
                    "arn:aws:s3:::ARCHIVE_BUCKET/ARCHIVE_PREFIX.retention-probe/*"
                ], (name, statement)
            assert "*" not in actions
            assert "s3:*" not in actions


# -- moto with IAM enforced -------------------------------------------------------------------


@pytest.fixture
def iam_server() -> Iterator[S3Server]:
    """A moto server of its own that authorizes every request against the caller's IAM
    policies, after the first three (which create the administrator below)."""
    server = start_s3_server(unused_port(), env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    # The start-up probe may have been counted; count from zero from here.
    import urllib.request

    reset = urllib.request.Request(  # noqa: S310 - loopback only
        f"{server.endpoint_url}/moto-api/reset-auth",
        data=b"3",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(reset, timeout=10):  # noqa: S310 - loopback only
        pass
    yield server
    server.stop()


def clients(endpoint: str, key: dict[str, str]) -> tuple[Any, Any, Any]:
    session = boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        region_name="us-east-1",
    )
    return (
        session.client("iam", endpoint_url=endpoint),
        session.client("s3", endpoint_url=endpoint),
        session.client("kms", endpoint_url=endpoint),
    )


@pytest.mark.slow
def test_a_user_holding_only_the_policies_archives_deletes_and_restores_under_moto_iam(
    iam_server: S3Server, tmp_path: Path
) -> None:
    endpoint = iam_server.endpoint_url
    # given an administrator (the three requests moto lets through unauthenticated)
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    iam.create_user(UserName="admin")
    iam.put_user_policy(
        UserName="admin",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    admin_key = iam.create_access_key(UserName="admin")["AccessKey"]
    admin_iam, admin_s3, admin_kms = clients(endpoint, admin_key)
    # and, made by the administrator: a locked archive bucket, a custom bucket, a KMS key, and
    # the worker's user holding exactly the five policy files
    suffix = uuid.uuid4().hex[:10]
    bucket, custom = f"archive-{suffix}", f"outputs-{suffix}"
    admin_s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    admin_s3.create_bucket(Bucket=custom)
    kms_key = admin_kms.create_key()["KeyMetadata"]["Arn"]
    names = {
        "ARCHIVE_BUCKET": bucket,
        "ARCHIVE_PREFIX": "archive/",
        "CUSTOM_BUCKET": custom,
        "KMS_KEY_ARN": kms_key,
    }
    admin_iam.create_user(UserName="retention-worker")
    for name in POLICIES:
        arn = admin_iam.create_policy(
            PolicyName=f"retention-{name}", PolicyDocument=json.dumps(load_policy(name, names))
        )["Policy"]["Arn"]
        admin_iam.attach_user_policy(UserName="retention-worker", PolicyArn=arn)
    worker_key = admin_iam.create_access_key(UserName="retention-worker")["AccessKey"]
    as_worker = {
        "AWS_ACCESS_KEY_ID": worker_key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": worker_key["SecretAccessKey"],
    }
    daily = DailySimulator(f"key-{suffix}", bucket_writer=write_to_bucket(admin_s3))
    daily.start()
    try:
        jobs = two_jobs(daily, bucket, custom, endpoint)
        config = jobs.write(
            tmp_path / "retention.toml",
            f"sqlite:///{tmp_path}/ledger.db",
            object_lock_mode="GOVERNANCE",
            object_lock_days=1,
            sse_kms_key_id=kms_key,
            storage_class="GLACIER",
        )

        # when the worker's user sweeps, then restores a job
        sweep = run_cli("sweep", "--json", config=config, env=as_worker)
        restored = run_cli(
            "restore",
            "daily",
            jobs.ids["links"],
            "--verify-only",
            "--wait",
            "--timeout",
            "2m",
            config=config,
            env=as_worker,
        )
    finally:
        daily.stop()

    # then both jobs were archived and deleted, and the restore verified every file
    assert sweep.code == 0, sweep.stdout[-3000:] + sweep.stderr
    summary = sweep.last_json()
    assert (summary["archived"], summary["deleted"], summary["failed"]) == (2, 2, 0), summary
    assert restored.code == 0, restored.stdout + restored.stderr
    # and the policies were enforced: the worker's user cannot remove an archived object
    _, worker_s3, _ = clients(
        endpoint,
        {
            "AccessKeyId": as_worker["AWS_ACCESS_KEY_ID"],
            "SecretAccessKey": as_worker["AWS_SECRET_ACCESS_KEY"],
        },
    )
    archived = sorted(jobs.data_keys("links"))[0]
    with pytest.raises(ClientError, match="AccessDenied"):
        worker_s3.delete_object(Bucket=bucket, Key=archived)
