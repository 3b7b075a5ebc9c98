"""`retention check`'s probe of the archive's server, and the settings it recommends.

The probe is tested against both servers; ``assess`` (what the findings mean for the
configuration) is pure and tested with plain data.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.archive.support import Endpoint, archive_for, client_of
from tests.helpers import run_cli, write_config
from worker.archive import Capabilities
from worker.check import Note, assess
from worker.errors import ArchiveError
from worker.settings import ArchiveSettings
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PROBES = "archive/.retention-probe/"


def versions_under(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    listing = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return [v["Key"] for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]


def test_the_probe_finds_what_moto_supports_and_removes_every_version_it_wrote(
    s3_server: S3Server, s3: S3Client
) -> None:
    # given a versioned bucket, where a delete without a version would leave the data
    bucket = f"versioned-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    caps = archive_for(s3_server, bucket, prefix="archive/").probe()

    assert caps.write_error is None
    assert caps.conditional == "enforced"
    assert "SHA256" in caps.checksums_stored
    assert caps.single_etag == "md5"
    assert caps.multipart_etag == "md5-of-md5s"
    assert caps.multipart_checksum_acknowledged is True  # uploads here compute no MD5
    assert caps.left_behind == []
    assert versions_under(s3, bucket, PROBES) == []


def test_the_probe_finds_what_s3rver_lacks(s3rver: Endpoint) -> None:
    s3 = client_of(s3rver)
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)

    caps = archive_for(s3rver, bucket, prefix="archive/").probe()

    assert caps.write_error is None
    assert caps.checksums_rejected is None
    assert caps.checksums_stored == ()
    assert caps.conditional == "ignored"
    assert caps.single_etag == "md5"
    assert caps.multipart_etag == "whole-md5"
    assert caps.multipart_checksum_acknowledged is False  # so uploads keep their MD5s
    assert caps.left_behind == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_probe_object_held_by_the_buckets_default_retention_is_reported_not_hidden(
    s3_server: S3Server, s3: S3Client
) -> None:
    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    settings = ArchiveSettings(bucket=bucket, prefix="archive/")

    caps = archive_for(s3_server, bucket, prefix="archive/").probe()
    notes, _ = assess(caps, settings)

    assert caps.left_behind
    assert all(left.startswith(PROBES) for left in caps.left_behind)
    held = next(note for note in notes if note.name == "probe objects")
    assert held.level == "warn"
    assert "default retention" in held.detail


def test_object_lock_is_optional_where_a_server_lacks_it_and_required_where_configured(
    s3rver: Endpoint,
) -> None:
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    client_of(s3rver).create_bucket(Bucket=bucket)

    assert archive_for(s3rver, bucket).check_bucket() == "Object Lock: not supported by this server"
    locked = archive_for(s3rver, bucket, object_lock_mode="GOVERNANCE", object_lock_days=1)
    with pytest.raises(ArchiveError, match="does not implement Object Lock") as caught:
        locked.check_bucket()
    assert caught.value.permanent


def test_a_health_check_writes_no_probe_object(
    s3_server: S3Server, s3: S3Client, bucket: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "retention.toml",
        {
            "archive": {
                "bucket": bucket,
                "prefix": "archive/",
                "endpoint_url": s3_server.endpoint_url,
                "region": "us-east-1",
            },
            "ledger": {"url": f"sqlite:///{tmp_path}/ledger.db"},
            "broker": {"url": "memory://"},
        },
    )
    run = run_cli("check", "--skip-providers", config=config)
    assert run.code == 0, run.stdout
    assert "no probe objects written" in run.stdout
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


# -- assess: what the findings mean, from plain data ----------------------------------------


def moto_like(**changes: Any) -> Capabilities:
    caps = Capabilities(
        checksums_stored=("SHA256",),
        single_etag="md5",
        conditional="enforced",
        multipart_etag="md5-of-md5s",
        prefix=PROBES,
    )
    for name, value in changes.items():
        setattr(caps, name, value)
    return caps


def levels(notes: list[Note]) -> dict[str, str]:
    return {note.name: note.level for note in notes}


def test_a_server_with_every_feature_needs_the_defaults() -> None:
    notes, recommended = assess(moto_like(), ArchiveSettings(bucket="archive"))
    assert set(levels(notes).values()) == {"ok"}
    assert recommended == {
        "checksum_mode": '"when_supported"',
        "if_none_match": "true",
        "verify": '"auto"',
    }


@pytest.mark.parametrize(
    ("changes", "settings", "note", "level", "recommended"),
    [
        # a server that refuses the checksum headers (R2 once, B2): writes fail by default
        (
            {"checksums_rejected": "answered InvalidArgument", "checksums_stored": ()},
            {},
            "checksums",
            "failed",
            ("checksum_mode", '"when_required"'),
        ),
        (
            {"checksums_rejected": "answered 501"},
            {"checksum_mode": "when_required"},
            "checksums",
            "ok",
            ("checksum_mode", '"when_required"'),
        ),
        # conditional writes refused: every write would fail with if_none_match on
        (
            {"conditional": "rejected"},
            {},
            "conditional writes",
            "failed",
            ("if_none_match", "false"),
        ),
        # ignored (s3rver, older MinIO): works, cannot protect against overwrites
        ({"conditional": "ignored"}, {}, "conditional writes", "warn", ("if_none_match", "false")),
        ({}, {"if_none_match": False}, "conditional writes", "warn", ("if_none_match", "true")),
        # no checksums and opaque multipart ETags (GCS): every multipart upload is read back
        (
            {"checksums_stored": (), "multipart_etag": "other"},
            {},
            "verify",
            "warn",
            ("verify", '"read_back"'),
        ),
        (
            {"checksums_stored": (), "multipart_etag": "other"},
            {"verify": "etag"},
            "verify",
            "failed",
            ("verify", '"read_back"'),
        ),
        (
            {"checksums_stored": ()},
            {"verify": "checksum"},
            "verify",
            "failed",
            ("verify", '"auto"'),
        ),
        ({}, {"verify": "read_back"}, "verify", "warn", ("verify", '"auto"')),
        # s3rver: no checksums, the whole object's MD5 as a multipart ETag: ETags suffice
        (
            {"checksums_stored": (), "multipart_etag": "whole-md5"},
            {},
            "verify",
            "ok",
            ("verify", '"auto"'),
        ),
        (
            {"multipart_etag": "failed", "multipart_detail": "answered 501"},
            {},
            "multipart ETag",
            "failed",
            ("verify", '"auto"'),
        ),
        (
            {"sse_kms": "rejected", "sse_kms_detail": "answered AccessDenied"},
            {"sse_kms_key_id": "alias/archive"},
            "SSE-KMS",
            "failed",
            ("verify", '"auto"'),
        ),
        (
            {"sse_kms": "ignored", "sse_kms_detail": "no SSE"},
            {"sse_kms_key_id": "alias/archive"},
            "SSE-KMS",
            "failed",
            ("verify", '"auto"'),
        ),
        # SSE-KMS without stored checksums: an encrypted object's ETag proves nothing
        (
            {"sse_kms": "applied", "checksums_stored": ()},
            {"sse_kms_key_id": "alias/archive"},
            "verify",
            "warn",
            ("verify", '"read_back"'),
        ),
        (
            {"checksum_wrong": "ChecksumSHA256 AAAA"},
            {},
            "checksums",
            "failed",
            ("checksum_mode", '"when_supported"'),
        ),
    ],
)
def test_each_finding_says_how_serious_it_is_and_what_to_set(
    changes: dict[str, Any],
    settings: dict[str, Any],
    note: str,
    level: str,
    recommended: tuple[str, str],
) -> None:
    notes, wanted = assess(moto_like(**changes), ArchiveSettings(bucket="archive", **settings))
    assert levels(notes)[note] == level
    key, value = recommended
    assert wanted[key] == value


def test_a_bucket_the_worker_cannot_write_to_fails_and_names_the_policy() -> None:
    notes, _ = assess(
        Capabilities(write_error="answered AccessDenied: denied", prefix=PROBES),
        ArchiveSettings(bucket="archive"),
    )
    assert [(n.name, n.level) for n in notes] == [("writes", "failed")]
    assert "deploy/iam/base.json" in notes[0].detail
