"""SSE-KMS against moto's KMS: uploads and server-side copies are verified by checksum, never by
ETag equality. AWS documents that an object written or copied under SSE-KMS has an ETag that
is not its MD5; moto gives the MD5, so ``aws_like_kms_etags`` makes the client see what AWS
sends."""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING

import boto3
import pytest

from tests.archive.support import archive_for, chunked, copy_in, record_calls
from tests.aws.support import Jobs, aws_like_kms_etags, two_jobs
from worker.archive import MiB
from worker.simulators.blobs import Blob
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server
from worker.sweep import sweep_provider

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def kms_key(s3_server: S3Server) -> str:
    """A key made through moto's KMS API, on the same server as the buckets."""
    kms = boto3.client("kms", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    arn: str = kms.create_key(Description="retention archive")["KeyMetadata"]["Arn"]
    return arn


@pytest.mark.parametrize("size", [100, 11 * MiB], ids=["single", "multipart"])
def test_an_upload_under_sse_kms_is_verified_by_checksum_and_not_read_back(
    s3_server: S3Server, s3: S3Client, bucket: str, kms_key: str, size: int
) -> None:
    archive = archive_for(s3_server, bucket, sse_kms_key_id=kms_key)
    aws_like_kms_etags(archive.client)
    calls = record_calls(archive)

    stored = archive.store_stream("k", chunked(Blob(size).read()), size_hint=size)

    assert stored.proof == "checksum"
    assert calls.reads() == []
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == kms_key


def test_a_copy_under_sse_kms_is_verified_by_checksum_and_kept_on_a_later_attempt(
    s3_server: S3Server, s3: S3Client, bucket: str, custom_bucket: str, kms_key: str
) -> None:
    # given an output in the user's bucket, and an archive under SSE-KMS whose copies get
    # ETags that are not MD5s (as on AWS)
    data = Blob(3 * MiB, seed=31).read()
    s3.put_object(Bucket=custom_bucket, Key="out.txt", Body=data)
    archive = archive_for(s3_server, bucket, sse_kms_key_id=kms_key)
    aws_like_kms_etags(archive.client)
    calls = record_calls(archive)

    # when it is copied in, and copied again by a later attempt
    first = copy_in(archive, custom_bucket, "out.txt", "dest")
    again = copy_in(archive, custom_bucket, "out.txt", "dest")

    # then the copy's stored SHA-256 was checked against the source's bytes (the source has
    # no SHA-256 of its own, so it was read once each time), and the later attempt kept it
    assert first.proof == again.proof == "checksum"
    assert first.sha256 == again.sha256 == hashlib.sha256(data).hexdigest()
    assert {(read["Bucket"], read["Key"]) for read in calls.reads()} == {(custom_bucket, "out.txt")}
    assert len(calls.named("CopyObject")) == 1
    (copy,) = calls.named("CopyObject")
    assert copy["ChecksumAlgorithm"] == "SHA256"
    assert copy["CopySourceIfMatch"].strip('"') == s3.head_object(
        Bucket=custom_bucket, Key="out.txt"
    )["ETag"].strip('"')


def test_a_copy_whose_source_stores_its_sha256_needs_no_read_at_all(
    s3_server: S3Server, s3: S3Client, bucket: str, custom_bucket: str, kms_key: str
) -> None:
    data = b"an output with a stored SHA-256\n"
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    s3.put_object(
        Bucket=custom_bucket,
        Key="out.txt",
        Body=data,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=digest,
    )
    archive = archive_for(s3_server, bucket, sse_kms_key_id=kms_key)
    aws_like_kms_etags(archive.client)
    calls = record_calls(archive)

    stored = copy_in(archive, custom_bucket, "out.txt", "dest")

    assert stored.proof == "checksum"
    assert calls.reads() == []


def test_a_custom_bucket_job_under_sse_kms_is_archived_and_deleted_in_one_sweep(
    daily_sim: DailySimulator,
    bucket: str,
    custom_bucket: str,
    s3_server: S3Server,
    s3: S3Client,
    sqlite_url: str,
    kms_key: str,
) -> None:
    jobs: Jobs = two_jobs(daily_sim, bucket, custom_bucket, s3_server.endpoint_url)
    rt = jobs.runtime(sqlite_url, sse_kms_key_id=kms_key)
    aws_like_kms_etags(rt.archive.client)

    summary = sweep_provider(rt, "daily").summary()
    rt.close()

    assert (summary.archived, summary.deleted, summary.failed, summary.deferred) == (2, 2, 0, 0)
    for key in jobs.data_keys("custom"):
        assert s3.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "aws:kms"
    assert s3.list_objects_v2(Bucket=custom_bucket).get("KeyCount") == 0
