"""Fewer S3 requests per job, the same proof: a PUT's own answer, and one listing at the gate.

A single PUT whose answer echoes the SHA-256 sent (or whose ETag is the bytes' MD5) is proved
without the HEAD that used to follow it; an answer that proves nothing still gets one. The
delete gate confirms every object by one listing of the job's folder (``gate_check =
"list"``) or a HEAD each (``"head"``), with the same verdicts: an object deleted or replaced
is missing; a verified version under a newer one or a delete marker is still held.
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
from worker.archive import Archive, Verified

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _store(archive: Archive, key: str, data: bytes) -> Verified:
    stored = archive.store_stream(key, chunked(data), size_hint=len(data))
    return Verified(stored.key, stored.size, stored.etag, stored.version_id)


@pytest.mark.parametrize("mode", ["when_supported", "when_required"])
def test_a_single_put_is_proved_by_its_own_answer_without_a_head(
    any_s3: Endpoint, any_client: S3Client, any_bucket: str, mode: str
) -> None:
    archive = archive_for(any_s3, any_bucket, checksum_mode=mode)
    calls = record_calls(archive)
    data = b"a transcript\n" * 100

    stored = archive.store_stream("job/out.txt", chunked(data), size_hint=len(data))

    assert [name for name, _ in calls.seen] == ["PutObject"]
    assert stored.proof == (
        "checksum" if mode == "when_supported" and not on_s3rver(any_s3) else "ETag"
    )
    assert stored.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert any_client.get_object(Bucket=any_bucket, Key="job/out.txt")["Body"].read() == data


def test_an_answer_that_proves_nothing_is_followed_by_a_head(
    any_s3: Endpoint, any_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a server whose PUT answers carry neither an ETag nor a checksum
    archive = archive_for(any_s3, any_bucket)
    answers_without(
        monkeypatch, archive.client, "put_object", lambda k: k == "ETag" or k.startswith("Checksum")
    )
    calls = record_calls(archive)

    stored = archive.store_stream("k", chunked(b"x" * 1000), size_hint=1000)

    # then: the HEAD decides, as before
    assert "HeadObject" in [name for name, _ in calls.seen]
    assert stored.proof in ("checksum", "ETag")


def test_an_answer_with_another_md5_is_not_taken_as_proof(
    any_s3: Endpoint, any_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = archive_for(any_s3, any_bucket, checksum_mode="when_required")
    put = archive.client.put_object
    monkeypatch.setattr(
        archive.client, "put_object", lambda **kw: {**put(**kw), "ETag": '"' + "0" * 32 + '"'}
    )
    calls = record_calls(archive)

    archive.store_stream("k", chunked(b"y" * 1000), size_hint=1000)

    assert "HeadObject" in [name for name, _ in calls.seen]


def test_read_back_and_object_lock_still_head_every_write(
    any_s3: Endpoint, any_bucket: str
) -> None:
    archive = archive_for(any_s3, any_bucket, verify="read_back")
    calls = record_calls(archive)

    stored = archive.store_stream("k", chunked(b"z" * 1000), size_hint=1000)

    assert stored.proof == "read-back"
    assert [name for name, _ in calls.seen] == ["PutObject", "HeadObject", "GetObject"]


@pytest.mark.parametrize("gate_check", ["list", "head"])
def test_the_gate_finds_an_object_deleted_or_replaced(
    any_s3: Endpoint, any_client: S3Client, any_bucket: str, gate_check: str
) -> None:
    # given: three archived objects in a job's folder, and a neighbour with a longer name
    archive = archive_for(any_s3, any_bucket, gate_check=gate_check, if_none_match=False)
    kept = _store(archive, "a/daily/job-1/out-0.json", b"kept" * 10)
    lost = _store(archive, "a/daily/job-1/out-1.json", b"lost" * 10)
    swapped = _store(archive, "a/daily/job-1/manifest.json", b"{}" * 10)
    _store(archive, "a/daily/job-10/out-1.json", b"lost" * 10)
    assert archive.missing([kept, lost, swapped]) == []

    # when: one is deleted and one is overwritten with other bytes of the same size
    any_client.delete_object(Bucket=any_bucket, Key=lost.key)
    any_client.put_object(Bucket=any_bucket, Key=swapped.key, Body=b"[]" * 10)
    calls = record_calls(archive)

    # then: both are missing, and the listing was one request
    assert archive.missing([kept, lost, swapped]) == [lost.key, swapped.key]
    if gate_check == "list":
        assert [name for name, _ in calls.seen] == ["ListObjectsV2"]
    else:
        assert [name for name, _ in calls.seen] == ["HeadObject"] * 3


def test_the_gate_reads_every_page_of_a_listing(
    s3_server: Endpoint, s3: S3Client, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: pages of two keys (S3's are 1,000), and five objects in the folder
    archive = archive_for(s3_server, bucket, if_none_match=False)
    objects = [_store(archive, f"big/out-{n}.txt", b"%d" % n) for n in range(5)]
    paginator = archive.client.get_paginator

    def small_pages(name: str) -> Any:
        real = paginator(name)  # type: ignore[call-overload]

        class Pages:
            def paginate(self, **kwargs: Any) -> Any:
                return real.paginate(**kwargs, PaginationConfig={"PageSize": 2})

        return Pages()

    monkeypatch.setattr(archive.client, "get_paginator", small_pages)
    calls = record_calls(archive)

    # then: every page is read, and an object on the last page is found missing
    assert archive.missing(objects) == []
    assert len(calls.named("ListObjectsV2")) == 3
    s3.delete_object(Bucket=bucket, Key=objects[-1].key)
    assert archive.missing(objects) == [objects[-1].key]


@pytest.mark.parametrize("gate_check", ["list", "head"])
def test_the_gate_holds_a_verified_version_under_a_newer_one_or_a_delete_marker(
    s3_server: Endpoint, s3: S3Client, bucket: str, gate_check: str
) -> None:
    # given: a versioned bucket and two verified objects
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    archive = archive_for(s3_server, bucket, gate_check=gate_check, if_none_match=False)
    covered = _store(archive, "v/job/out-0.txt", b"first")
    marked = _store(archive, "v/job/out-1.txt", b"second")
    assert covered.version_id
    assert marked.version_id

    # when: a newer version covers one, and a delete marker the other
    s3.put_object(Bucket=bucket, Key=covered.key, Body=b"newer")
    s3.delete_object(Bucket=bucket, Key=marked.key)

    # then: both verified versions are still held (a HEAD of each version says the same)
    assert archive.missing([covered, marked]) == []

    # and a verified version removed for good is missing
    s3.delete_object(Bucket=bucket, Key=marked.key, VersionId=marked.version_id)
    assert archive.missing([covered, marked]) == [marked.key]
