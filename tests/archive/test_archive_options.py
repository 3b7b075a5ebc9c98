"""Archive options against the S3 server: never overwrite, Object Lock, SSE-KMS, owner, class."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from tests.archive.support import Endpoint, archive_for, chunked, copy_in
from tests.json_at import at
from worker.archive import MiB
from worker.errors import ArchiveError, VerifyError
from worker.settings import ArchiveSettings
from worker.simulators.blobs import Blob
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def locked_bucket(s3: S3Client) -> str:
    name = f"locked-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["single", "multipart"])
def test_the_same_bytes_at_a_taken_key_are_kept_and_different_bytes_refused(
    s3_server: S3Server, s3: S3Client, bucket: str, size: int
) -> None:
    archive = archive_for(s3_server, bucket)
    data = Blob(size, seed=1).read()
    first = archive.store_stream("k", chunked(data), size_hint=size)

    again = archive.store_stream("k", chunked(data), size_hint=size)

    assert again.sha256 == first.sha256 == hashlib.sha256(data).hexdigest()
    other = Blob(size, seed=2).read()
    with pytest.raises(ArchiveError, match="already holds different content") as caught:
        archive.store_stream("k", chunked(other), size_hint=size)
    assert caught.value.permanent
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == data
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_earlier_copy_with_other_part_sizes_is_recognised_by_its_bytes(
    s3_server: S3Server, bucket: str
) -> None:
    data = Blob(13 * MiB, seed=5).read()
    archive_for(s3_server, bucket, part_size_mib=5).store_stream("k", chunked(data))
    stored = archive_for(s3_server, bucket, part_size_mib=6).store_stream("k", chunked(data))
    assert stored.sha256 == hashlib.sha256(data).hexdigest()


def test_overwriting_is_allowed_only_when_if_none_match_is_off(
    s3_server: S3Server, s3: S3Client, bucket: str
) -> None:
    archive = archive_for(s3_server, bucket, if_none_match=False)
    archive.store_stream("k", iter([b"one"]))
    archive.store_stream("k", iter([b"two"]))
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"


def test_a_json_document_at_a_taken_key_is_kept_only_if_it_records_the_same_thing(
    s3_server: S3Server, bucket: str
) -> None:
    archive = archive_for(s3_server, bucket)
    archive.put_json("m.json", {"job_id": "a", "archived_at": "t1"})
    kept = archive.put_json(
        "m.json", {"job_id": "a", "archived_at": "t2"}, same=lambda old: old["job_id"] == "a"
    )
    assert kept.size > 0
    assert at(archive.get_json("m.json"), "archived_at") == "t1"
    with pytest.raises(ArchiveError, match="different content"):
        archive.put_json("m.json", {"job_id": "b"}, same=lambda old: old["job_id"] == "b")


@pytest.mark.parametrize("size", [1000, 11 * MiB], ids=["single", "multipart"])
def test_object_lock_retention_is_on_every_archived_object(
    s3_server: S3Server, s3: S3Client, locked_bucket: str, size: int
) -> None:
    archive = archive_for(
        s3_server, locked_bucket, object_lock_mode="COMPLIANCE", object_lock_days=2
    )
    stored = archive.store_stream("k", chunked(Blob(size).read()), size_hint=size)
    head = s3.head_object(Bucket=locked_bucket, Key="k")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert timedelta(days=1) < until - datetime.now(UTC) <= timedelta(days=2)
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=locked_bucket, Key="k", VersionId=stored.version_id or "")
    archive.put_json("manifest.json", {"job_id": "x"})
    assert s3.head_object(Bucket=locked_bucket, Key="manifest.json")["ObjectLockMode"] == (
        "COMPLIANCE"
    )


def test_object_lock_on_a_bucket_without_it_is_a_clear_error(
    s3_server: S3Server, bucket: str
) -> None:
    archive = archive_for(s3_server, bucket, object_lock_mode="GOVERNANCE", object_lock_days=1)
    with pytest.raises((ArchiveError, VerifyError), match=r"Object Lock|InvalidRequest"):
        archive.store_stream("k", iter([b"data"]))


def test_sse_kms_objects_are_encrypted_and_verified_by_checksum(
    s3_server: S3Server, s3: S3Client, bucket: str
) -> None:
    archive = archive_for(s3_server, bucket, sse_kms_key_id="alias/archive")
    for key, size in (("small", 100), ("large", 11 * MiB)):
        archive.store_stream(key, chunked(Blob(size).read()), size_hint=size)
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == "alias/archive"


def test_sse_kms_without_checksums_is_read_back_in_auto_and_refused_where_etags_are_required(
    s3_server: S3Server, bucket: str
) -> None:
    # given SSE-KMS (whose ETags are not MD5s) and no checksums
    options: dict[str, Any] = {"sse_kms_key_id": "alias/archive", "checksum_mode": "when_required"}

    # when verify is "auto", the object is read back and hashed
    stored = archive_for(s3_server, bucket, **options).store_stream("k", iter([b"data"]))
    assert stored.proof == "read-back"

    # and when ETags are required, verification fails and names the setting
    strict = archive_for(s3_server, bucket, verify="etag", **options)
    with pytest.raises(VerifyError, match=r"cannot be verified by ETag.*encrypted") as caught:
        strict.store_stream("k2", iter([b"data"]))
    assert not caught.value.permanent
    assert 'verify = "auto"' in str(caught.value)


def test_every_request_to_the_archive_bucket_names_its_expected_owner(
    s3_server: S3Server, bucket: str, custom_bucket: str, s3: S3Client
) -> None:
    archive = archive_for(s3_server, bucket, expected_bucket_owner="123456789012")
    seen: list[tuple[str, str | None]] = []

    def record(request: Any, **_: Any) -> None:
        seen.append((request.url, request.headers.get("x-amz-expected-bucket-owner")))

    archive.client.meta.events.register("before-send.s3", record)
    archive.store_stream("small", iter([b"x"]))
    archive.store_stream("large", chunked(Blob(11 * MiB).read()), size_hint=11 * MiB)
    archive.put_json("m.json", {"a": 1})
    archive.get_json("m.json")
    s3.put_object(Bucket=custom_bucket, Key="src", Body=b"from your bucket")
    copy_in(archive, custom_bucket, "src", "copied")
    to_archive = [(url, owner) for url, owner in seen if f"/{bucket}/" in url]
    assert len(to_archive) >= 10
    assert all(owner in {b"123456789012", "123456789012"} for _, owner in to_archive)


def test_a_storage_class_is_applied(s3_server: S3Server, s3: S3Client, bucket: str) -> None:
    archive_for(s3_server, bucket, storage_class="STANDARD_IA").store_stream("k", iter([b"x"]))
    assert s3.head_object(Bucket=bucket, Key="k")["StorageClass"] == "STANDARD_IA"


def test_a_server_side_copy_never_overwrites_a_different_object(
    any_s3: Endpoint, any_client: S3Client, any_bucket: str, any_custom_bucket: str
) -> None:
    any_client.put_object(Bucket=any_custom_bucket, Key="src", Body=b"the output")
    archive = archive_for(any_s3, any_bucket)
    first = copy_in(archive, any_custom_bucket, "src", "dest")
    assert copy_in(archive, any_custom_bucket, "src", "dest").sha256 == first.sha256
    # a change of size, and one of the same size that only the bytes tell apart
    for changed in (b"changed at the source", b"THE OUTPUT"):
        any_client.put_object(Bucket=any_custom_bucket, Key="src", Body=changed)
        with pytest.raises(ArchiveError, match="never overwritten") as caught:
            copy_in(archive, any_custom_bucket, "src", "dest")
        assert caught.value.permanent


def test_lock_settings_go_together() -> None:
    with pytest.raises(ValueError, match="go together"):
        ArchiveSettings(bucket="abc", object_lock_mode="COMPLIANCE")
