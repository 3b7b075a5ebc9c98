"""How a stored object is proven to hold the bytes streamed: `[archive] verify`, on moto (which
stores checksums) and s3rver (which stores none and gives multipart objects the whole
object's MD5 as their ETag)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from tests.archive.support import Endpoint, archive_for, chunked, on_s3rver, record_calls
from worker import archive as archive_module
from worker.archive import MiB
from worker.errors import VerifyError
from worker.simulators.blobs import Blob
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SIZES = pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["single", "multipart"])


@pytest.fixture(autouse=True)
def fresh_process_notes() -> Iterator[None]:
    """Each test starts as a fresh process would: nothing said yet."""
    archive_module._SAID.clear()
    yield
    archive_module._SAID.clear()


def mangle(client: Any, operation: str, change: Any) -> None:
    """Rewrite what ``operation`` answers, as a server that behaves otherwise would. A HEAD
    and the PUT before it describe the same object, so mangling a HEAD mangles the PUT's
    answer too (a single PUT's answer can prove the bytes without a HEAD)."""

    def handler(parsed: dict[str, Any], **_: Any) -> None:
        change(parsed)

    operations = ("PutObject", "HeadObject") if operation == "HeadObject" else (operation,)
    for name in operations:
        client.meta.events.register(f"after-call.s3.{name}", handler)


def test_a_multipart_upload_to_s3rver_is_verified_by_its_whole_object_md5(
    s3rver: Endpoint,
) -> None:
    # given s3rver, whose multipart ETag is the whole object's MD5, and default settings
    client_bucket = f"archive-{uuid.uuid4().hex[:12]}"
    archive = archive_for(s3rver, client_bucket)
    archive.client.create_bucket(Bucket=client_bucket)
    data = Blob(24 * MiB, seed=24).read()

    stored = archive.store_stream("big", chunked(data), size_hint=len(data))

    assert stored.proof == "ETag"
    assert stored.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert stored.sha256 == hashlib.sha256(data).hexdigest()


@SIZES
def test_servers_that_return_checksums_cost_no_second_read(
    s3_server: S3Server, bucket: str, size: int
) -> None:
    archive = archive_for(s3_server, bucket)
    calls = record_calls(archive)

    stored = archive.store_stream("k", chunked(Blob(size).read()), size_hint=size)
    archive.put_json("manifest.json", {"files": [stored.key]})

    assert stored.proof == "checksum"
    assert calls.reads() == []
    assert all(head.get("ChecksumMode") == "ENABLED" for head in calls.named("HeadObject"))


@SIZES
def test_read_back_always_reads_the_object_once(
    any_s3: Endpoint, any_bucket: str, size: int
) -> None:
    archive = archive_for(any_s3, any_bucket, verify="read_back")
    calls = record_calls(archive)

    stored = archive.store_stream("k", chunked(Blob(size).read()), size_hint=size)

    assert stored.proof == "read-back"
    assert [read["Key"] for read in calls.reads()] == ["k"]


def test_checksum_verification_fails_on_a_server_that_returns_none_and_names_the_setting(
    s3rver: Endpoint,
) -> None:
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    archive = archive_for(s3rver, bucket, verify="checksum")
    archive.client.create_bucket(Bucket=bucket)

    with pytest.raises(VerifyError, match="cannot be verified by checksum") as caught:
        archive.store_stream("k", iter([b"data"]))

    assert not caught.value.permanent
    assert "[archive] verify" in str(caught.value)


def test_etag_verification_passes_on_s3rver_for_single_and_multipart_uploads(
    s3rver: Endpoint,
) -> None:
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    archive = archive_for(s3rver, bucket, verify="etag")
    archive.client.create_bucket(Bucket=bucket)
    for key, size in (("small", 10), ("large", 11 * MiB)):
        assert archive.store_stream(key, chunked(Blob(size).read())).proof == "ETag"


def test_auto_reads_back_what_nothing_else_proves_and_says_so_once(
    any_s3: Endpoint, any_bucket: str
) -> None:
    # given a server whose ETags match none of the forms recomputed from the bytes (as GCS's
    # multipart ETags do) and no checksums
    archive = archive_for(any_s3, any_bucket, checksum_mode="when_required")
    mangle(archive.client, "HeadObject", lambda answer: answer.update(ETag='"opaque-etag"'))
    calls = record_calls(archive)

    # when two objects are stored
    with capture_logs() as logs:
        first = archive.store_stream("a", iter([b"one"]))
        second = archive.store_stream("b", chunked(Blob(11 * MiB).read()))

    # then each is read back once, and the log says so once for the process
    assert first.proof == second.proof == "read-back"
    assert [read["Key"] for read in calls.reads()] == ["a", "b"]
    notes = [entry for entry in logs if entry["event"] == "verify_reads_back"]
    assert len(notes) == 1
    assert "opaque-etag" in notes[0]["reason"]


def test_a_stored_checksum_that_differs_is_a_mismatch_even_in_auto(
    s3_server: S3Server, bucket: str
) -> None:
    # given a server that answers with another SHA-256 than the one it was sent
    archive = archive_for(s3_server, bucket)
    other = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    mangle(archive.client, "HeadObject", lambda answer: answer.update(ChecksumSHA256=other))
    calls = record_calls(archive)

    # then verification fails without reading the object back to find another proof
    with pytest.raises(VerifyError, match="ChecksumSHA256"):
        archive.store_stream("k", iter([b"the bytes"]))
    assert calls.reads() == []


def test_a_read_back_that_differs_is_a_mismatch(any_s3: Endpoint, any_bucket: str) -> None:
    # given an object replaced between its write and its verification, on a server that
    # proves nothing by checksum or ETag
    archive = archive_for(any_s3, any_bucket, checksum_mode="when_required")
    mangle(archive.client, "HeadObject", lambda answer: answer.update(ETag='"opaque-etag"'))

    def replace(**_: Any) -> None:
        archive.client.meta.events.unregister("after-call.s3.PutObject", replace)
        archive.client.put_object(Bucket=any_bucket, Key="k", Body=b"other bytes")

    archive.client.meta.events.register("after-call.s3.PutObject", replace)

    with pytest.raises(VerifyError, match="does not hold the bytes streamed"):
        archive.store_stream("k", iter([b"the bytes!!"]))


def test_verification_reads_the_version_that_was_written(s3: S3Client) -> None:
    # given a versioned bucket
    bucket = f"versioned-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    endpoint = s3.meta.endpoint_url
    archive = archive_for(_Url(endpoint), bucket, verify="read_back")
    calls = record_calls(archive)

    stored = archive.store_stream("k", chunked(Blob(11 * MiB).read()))

    assert stored.version_id
    reads = calls.named("HeadObject") + calls.reads()
    assert reads
    assert all(read.get("VersionId") == stored.version_id for read in reads)


def test_an_object_in_glacier_with_nothing_to_prove_it_is_not_read_back_but_explained(
    s3_server: S3Server, bucket: str
) -> None:
    archive = archive_for(
        s3_server, bucket, storage_class="GLACIER", checksum_mode="when_required", verify="auto"
    )
    mangle(archive.client, "HeadObject", lambda answer: answer.update(ETag='"opaque-etag"'))

    with pytest.raises(VerifyError, match="cannot be read back to verify it: it is in GLACIER"):
        archive.store_stream("k", iter([b"data"]))


class _Url:
    def __init__(self, url: str) -> None:
        self.endpoint_url = url


@pytest.mark.parametrize("server", ["moto", "s3rver"])
def test_the_default_settings_verify_every_upload_without_a_read_on_both_servers(
    request: pytest.FixtureRequest, server: str
) -> None:
    endpoint = request.getfixturevalue("s3_server" if server == "moto" else "s3rver")
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    archive = archive_for(endpoint, bucket)
    archive.client.create_bucket(Bucket=bucket)
    calls = record_calls(archive)
    for key, size in (("small", 100), ("large", 24 * MiB)):
        stored = archive.store_stream(key, chunked(Blob(size).read()), size_hint=size)
        assert stored.proof == ("ETag" if on_s3rver(endpoint) else "checksum")
    assert calls.reads() == []
