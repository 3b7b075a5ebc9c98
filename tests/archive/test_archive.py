"""The archive against a real S3 API server: byte-identical, verified, aborted on failure."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.archive.support import (
    Endpoint,
    archive_for,
    chunked,
    copy_in,
    on_s3rver,
    record_calls,
)
from tests.helpers import multipart_uploads
from worker.archive import MAX_PARTS, Archive, MiB, _Expected, make_s3_client, part_size_for
from worker.errors import ArchiveError, DownloadError, VerifyError
from worker.settings import ArchiveSettings
from worker.simulators.blobs import Blob
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.mark.parametrize(
    "size",
    [0, 1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1, 16 * MiB + 12345],
    ids=["empty", "one-byte", "just-under-a-part", "exactly-a-part", "just-over", "four-parts"],
)
@pytest.mark.parametrize("mode", ["when_supported", "when_required"])
def test_a_stream_is_stored_byte_identical_and_verified_without_a_second_read(
    any_s3: Endpoint, any_client: S3Client, any_bucket: str, size: int, mode: str
) -> None:
    archive = archive_for(any_s3, any_bucket, checksum_mode=mode)
    calls = record_calls(archive)
    data = Blob(size, seed=size).read()

    stored = archive.store_stream("k", chunked(data), size_hint=size)

    assert stored.size == size
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert any_client.get_object(Bucket=any_bucket, Key="k")["Body"].read() == data
    # moto proves the bytes by its stored checksum (or, without checksums, by S3's ETag);
    # s3rver stores none, and its ETags are recomputed from what was streamed.
    expected = "checksum" if mode == "when_supported" and not on_s3rver(any_s3) else "ETag"
    assert stored.proof == expected
    assert calls.reads() == []
    if size > 5 * MiB:
        assert stored.etag is not None
        if on_s3rver(any_s3):
            assert stored.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
        else:
            assert stored.etag.endswith(f"-{-(-size // (5 * MiB))}")


def test_an_unknown_size_is_streamed_without_knowing_it(any_s3: Endpoint, any_bucket: str) -> None:
    data = Blob(11 * MiB, seed=3).read()
    stored = archive_for(any_s3, any_bucket).store_stream("k", chunked(data), size_hint=None)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()


def test_a_stream_that_fails_midway_is_aborted_and_leaves_nothing(
    any_s3: Endpoint, any_client: S3Client, any_bucket: str
) -> None:
    def broken() -> Iterator[bytes]:
        yield from chunked(Blob(12 * MiB, seed=1).read())
        raise DownloadError("the body broke off")

    with pytest.raises(DownloadError):
        archive_for(any_s3, any_bucket).store_stream("k", broken(), size_hint=20 * MiB)
    if not on_s3rver(any_s3):  # s3rver does not list multipart uploads
        assert multipart_uploads(any_client, any_bucket) == []
    assert any_client.list_objects_v2(Bucket=any_bucket).get("KeyCount") == 0


def test_a_small_stream_that_fails_writes_nothing(
    any_s3: Endpoint, any_client: S3Client, any_bucket: str
) -> None:
    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise DownloadError("the body broke off")

    with pytest.raises(DownloadError):
        archive_for(any_s3, any_bucket).store_stream("k", broken())
    assert any_client.list_objects_v2(Bucket=any_bucket).get("KeyCount") == 0


def test_verification_rejects_an_object_that_differs(
    any_s3: Endpoint, any_client: S3Client, any_bucket: str
) -> None:
    archive = archive_for(any_s3, any_bucket)
    archive.store_stream("k", iter([b"what we streamed"]))
    any_client.put_object(Bucket=any_bucket, Key="k", Body=b"what someone else wrote")
    wrong_size = _Expected(size=16, sha256_hex="0" * 64)
    with pytest.raises(VerifyError, match="bytes"):
        archive._verify("k", wrong_size, version_id=None)
    any_client.put_object(Bucket=any_bucket, Key="k", Body=b"what we streamed")
    # An ETag that is none of the recomputed ones proves nothing: the object is read back,
    # and its bytes are not those expected either.
    wrong_etag = _Expected(size=16, sha256_hex="0" * 64, etags=("0" * 32,))
    with pytest.raises(VerifyError, match=r"ETag .*SHA-256|reading it back"):
        archive._verify("k", wrong_etag, version_id=None)


def test_exists_unchanged_notices_a_replaced_or_missing_object(
    any_s3: Endpoint, any_client: S3Client, any_bucket: str
) -> None:
    archive = archive_for(any_s3, any_bucket)
    stored = archive.store_stream("k", iter([b"v1"]))
    assert archive.exists_unchanged("k", size=2, etag=stored.etag)
    any_client.put_object(Bucket=any_bucket, Key="k", Body=b"v2")
    assert not archive.exists_unchanged("k", size=2, etag=stored.etag)
    any_client.delete_object(Bucket=any_bucket, Key="k")
    assert not archive.exists_unchanged("k", size=2, etag=stored.etag)


def test_a_server_side_copy_is_verified_and_hashed(
    any_s3: Endpoint, any_client: S3Client, any_bucket: str, any_custom_bucket: str
) -> None:
    data = Blob(7 * MiB, seed=9).read()
    any_client.put_object(Bucket=any_custom_bucket, Key="acme/j/out.txt", Body=data)
    archive = archive_for(any_s3, any_bucket)
    stored = copy_in(archive, any_custom_bucket, "acme/j/out.txt", "dest")
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert any_client.get_object(Bucket=any_bucket, Key="dest")["Body"].read() == data
    # Both ETags are plain MD5s: they tie the copy to its source.
    assert stored.proof == "ETag"


def test_copying_a_missing_source_is_a_permanent_error(
    any_s3: Endpoint, any_bucket: str, any_custom_bucket: str
) -> None:
    with pytest.raises(ArchiveError, match="does not exist") as caught:
        copy_in(archive_for(any_s3, any_bucket), any_custom_bucket, "nope", "dest")
    assert caught.value.permanent


def test_a_missing_bucket_is_named_with_what_to_do(any_s3: Endpoint) -> None:
    with pytest.raises(ArchiveError, match=r"NoSuchBucket.*Create the bucket no-such-bucket-xyz"):
        archive_for(any_s3, "no-such-bucket-xyz").store_stream("k", iter([b"x"]))


def test_an_unreachable_endpoint_is_a_clear_transient_error(bucket: str) -> None:
    settings = ArchiveSettings(bucket=bucket, endpoint_url="http://127.0.0.1:9", region="us-east-1")
    client = make_s3_client(settings)
    with pytest.raises(ArchiveError, match="could not be reached") as caught:
        Archive(client, settings).store_stream("k", iter([b"x"]))
    assert not caught.value.permanent


def test_json_documents_round_trip(any_s3: Endpoint, any_bucket: str) -> None:
    archive = archive_for(any_s3, any_bucket)
    archive.put_json("m.json", {"files": [1, 2]})
    assert archive.get_json("m.json") == {"files": [1, 2]}


@pytest.mark.parametrize("size", [100 * 1024**3, 5 * 1024**4 - 1])
def test_a_known_size_never_needs_more_than_10000_parts(size: int) -> None:
    base = 8 * MiB
    parts, remaining, number = 0, size, 1
    while remaining > 0:
        remaining -= part_size_for(size, number, base)
        number += 1
        parts += 1
    assert parts <= MAX_PARTS


def test_a_known_size_is_cut_in_equal_parts_as_small_as_the_limit_allows() -> None:
    base, size = 8 * MiB, 100 * 1024**3
    sizes = {part_size_for(size, n, base) for n in range(1, -(-size // (11 * MiB)) + 1)}
    assert sizes == {11 * MiB}
    assert part_size_for(1024**3, 128, base) == base


def test_a_stream_longer_than_its_hint_still_fits_in_10000_parts() -> None:
    base, hint = 8 * MiB, 100 * 1024**3
    total = sum(part_size_for(hint, n, base) for n in range(1, MAX_PARTS + 1))
    assert total > 1.5 * hint


def test_an_unknown_size_grows_its_parts_as_it_goes() -> None:
    base = 8 * MiB
    assert part_size_for(None, 1, base) == base
    assert part_size_for(None, 1001, base) == 2 * base
    total = sum(part_size_for(None, n, base) for n in range(1, MAX_PARTS + 1))
    assert total > 5 * 1024**4  # more than 5 TiB fits in 10,000 growing parts


@pytest.mark.parametrize(
    ("part_mib", "in_flight"),
    [(8, 4), (11, 4), (16, 3), (21, 2), (32, 1), (64, 1), (5120, 1)],
)
def test_fewer_parts_go_in_flight_as_they_grow(part_mib: int, in_flight: int) -> None:
    settings = ArchiveSettings(bucket="archive")  # max_concurrency 4, max_buffer_mib 64
    archive = Archive(make_s3_client(settings), settings)
    part = part_mib * MiB
    assert archive.in_flight_limit(part) == in_flight
    # the parts in flight and the one filling stay within the budget, or two parts
    assert (in_flight + 1) * part <= max(64 * MiB, 2 * part)


@pytest.mark.parametrize(("budget_mib", "most"), [(10, 1), (64, 4)])
def test_the_buffer_budget_bounds_the_parts_uploading_at_once(
    s3_server: S3Server, s3: S3Client, bucket: str, budget_mib: int, most: int
) -> None:
    archive = archive_for(s3_server, bucket, max_buffer_mib=budget_mib, max_concurrency=4)
    upload = archive._upload_part
    lock = threading.Lock()
    now = peak = 0

    def counted(key: str, upload_id: str, number: int, data: bytes | bytearray, *rest: Any) -> Any:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        try:
            time.sleep(0.05)  # long enough for the next parts to be read and submitted
            return upload(key, upload_id, number, data, *rest)
        finally:
            with lock:
                now -= 1

    archive._upload_part = counted  # type: ignore[method-assign,assignment]
    data = Blob(30 * MiB, seed=7).read()  # six whole parts
    stored = archive.store_stream("k", chunked(data), size_hint=None)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == data
    assert peak == most
