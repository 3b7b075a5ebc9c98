"""A multipart upload hashes with MD5 only for a server that needs it.

A server that acknowledges the CRC32 asked for when the upload starts checks each part's
CRC32 and shows the object's composite CRC32, which proves it: its parts go without
Content-MD5, and the body is not hashed with MD5 again, as boto3 itself uploads. A server
that does not acknowledge it (s3rver), or a ``verify`` that wants an ETag, gets the MD5s as
before. A server that acknowledged the CRC32 and then shows none is read back: a proof that
is missing is never a pass.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import pytest

from tests.archive.support import (
    Endpoint,
    answers_without,
    archive_for,
    chunked,
    on_s3rver,
    record_calls,
)
from worker.archive import upload

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
DATA = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(11 * MiB // 32))


class _Counted:
    """Counts the bytes every MD5 made by ``worker.archive.upload`` is given."""

    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self) -> Any:
        real, counter = hashlib.md5(usedforsecurity=False), self

        class Hasher:
            def update(self, data: bytes | bytearray | memoryview) -> None:
                counter.bytes += len(data)
                real.update(data)

            def digest(self) -> bytes:
                return real.digest()

            def hexdigest(self) -> str:
                return real.hexdigest()

        return Hasher()


@pytest.fixture
def md5_bytes(monkeypatch: pytest.MonkeyPatch) -> _Counted:
    counted = _Counted()
    monkeypatch.setattr(upload, "_md5", counted)
    return counted


def test_a_server_that_keeps_checksums_gets_parts_without_md5(
    any_s3: Endpoint, any_client: S3Client, any_bucket: str, md5_bytes: _Counted
) -> None:
    archive = archive_for(any_s3, any_bucket)  # 5 MiB parts: three of them
    calls = record_calls(archive)

    stored = archive.store_stream("job/video.mp4", chunked(DATA), size_hint=len(DATA))

    parts = calls.named("UploadPart")
    assert len(parts) == 3
    assert all("ChecksumCRC32" in p for p in parts)
    if on_s3rver(any_s3):
        # s3rver does not echo the algorithm: Content-MD5 on every part, the ETag proves it
        assert all("ContentMD5" in p for p in parts)
        assert md5_bytes.bytes >= 2 * len(DATA)  # each part, and the whole body
        assert stored.proof == "ETag"
    else:
        # moto acknowledges CRC32: no MD5 past the first part, read before the upload began
        assert not any("ContentMD5" in p for p in parts)
        assert md5_bytes.bytes <= 5 * MiB + 64 * 1024
        assert stored.proof == "checksum"
    assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
    assert any_client.get_object(Bucket=any_bucket, Key="job/video.mp4")["Body"].read() == DATA


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"verify": "etag"}, "an ETag is the only proof taken"),
        ({"checksum_mode": "when_required"}, "no checksum is sent"),
    ],
)
def test_md5s_are_kept_where_the_etag_is_the_proof(
    s3_server: Endpoint, bucket: str, md5_bytes: _Counted, options: dict[str, Any], why: str
) -> None:
    archive = archive_for(s3_server, bucket, **options)
    calls = record_calls(archive)

    stored = archive.store_stream("k", chunked(DATA), size_hint=len(DATA))

    assert all("ContentMD5" in p for p in calls.named("UploadPart")), why
    assert md5_bytes.bytes >= 2 * len(DATA)  # each part, and the whole body
    assert stored.proof == "ETag"


def test_a_server_that_does_not_echo_the_algorithm_gets_md5s(
    s3_server: Endpoint, bucket: str, md5_bytes: _Counted, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a server that keeps checksums but does not say so when the upload starts
    archive = archive_for(s3_server, bucket)
    answers_without(
        monkeypatch, archive.client, "create_multipart_upload", lambda k: k == "ChecksumAlgorithm"
    )
    calls = record_calls(archive)

    stored = archive.store_stream("k", chunked(DATA), size_hint=len(DATA))

    assert all("ContentMD5" in p for p in calls.named("UploadPart"))
    assert md5_bytes.bytes >= 2 * len(DATA)  # each part, and the whole body
    assert stored.proof == "checksum"


def test_a_server_that_acknowledged_checksums_and_shows_none_is_read_back(
    s3_server: Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: the upload starts with the CRC32 acknowledged, and the HEAD shows no checksum
    archive = archive_for(s3_server, bucket)
    answers_without(monkeypatch, archive.client, "head_object", lambda k: k.startswith("Checksum"))
    calls = record_calls(archive)

    stored = archive.store_stream("k", chunked(DATA), size_hint=len(DATA))

    # then: with no MD5 to hold the ETag to, the bytes are read back and hashed
    assert stored.proof == "read-back"
    assert len(calls.reads()) == 1
    assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
