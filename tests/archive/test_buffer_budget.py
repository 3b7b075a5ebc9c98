"""Every upload of one Archive shares one part-buffer budget (``max_buffer_mib``).

A sweep archives several jobs at once; their part buffers together stay within the budget,
however many there are, and none waits forever for another's. The memory is measured with
tracemalloc, which sees every bytearray a part is read into.
"""

from __future__ import annotations

import hashlib
import threading
import tracemalloc
from typing import TYPE_CHECKING, Any

import pytest

from tests.archive.support import archive_for, chunked
from worker.archive import Archive, MiB
from worker.simulators.blobs import Blob

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.simulators.s3server import S3Server

BODIES = {f"job-{n}/video.mp4": Blob(16 * MiB + n * 1000, seed=n).read() for n in range(4)}


def _archive_all(archive: Archive, *, hinted: bool) -> dict[str, Any]:
    """Archive every body at once, a thread each, as a sweep's jobs do; the results."""
    results: dict[str, Any] = {}

    def one(key: str, data: bytes) -> None:
        try:
            hint = len(data) if hinted else None
            results[key] = archive.store_stream(key, chunked(data, 1024 * 1024), size_hint=hint)
        except Exception as exc:  # the test asserts on it
            results[key] = exc

    threads = [threading.Thread(target=one, args=item) for item in BODIES.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "an upload waited forever"
    return results


@pytest.mark.parametrize("hinted", [True, False], ids=["size-known", "size-unknown"])
def test_four_uploads_at_once_share_one_budget(
    s3_server: S3Server, s3: S3Client, bucket: str, hinted: bool
) -> None:
    # given: 5 MiB parts, two in flight per upload, and a budget of 16 MiB for them all
    archive = archive_for(s3_server, bucket, max_buffer_mib=16, max_concurrency=4)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()

        # when: four jobs archive a 16 MiB output each, at once
        results = _archive_all(archive, hinted=hinted)

        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # then: each is stored whole
    for key, data in BODIES.items():
        stored = results[key]
        assert not isinstance(stored, Exception), stored
        assert stored.sha256 == hashlib.sha256(data).hexdigest()
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    # and their buffers together stayed within the budget (three 5 MiB parts), where each
    # upload alone may hold three: 4 x 15 MiB before the budget was shared (64.5 MiB
    # traced); with it, 20.3-22.2 MiB over eight runs, four at a time. The margin is
    # the download chunks, a short last part's copy and the clients' own buffers.
    assert peak - before <= 16 * MiB + 16 * MiB, f"{(peak - before) / MiB:.1f} MiB"
    assert archive.budget.held == 0


def test_a_part_larger_than_the_whole_budget_still_goes(
    s3_server: S3Server, s3: S3Client, bucket: str
) -> None:
    # given: parts of 12 MiB configured above a budget of 10 MiB
    archive = archive_for(s3_server, bucket, part_size_mib=12, max_buffer_mib=10)

    results = _archive_all(archive, hinted=False)

    # then: each upload goes in turn, with one part at a time
    for key, data in BODIES.items():
        stored = results[key]
        assert not isinstance(stored, Exception), stored
        assert stored.size == len(data)
    assert archive.budget.held == 0
    assert archive.budget.peak <= 12 * MiB


def test_a_failed_upload_gives_its_buffers_back(s3_server: S3Server, bucket: str) -> None:
    archive = archive_for(s3_server, bucket, max_buffer_mib=16)

    def broken() -> Any:
        yield from chunked(Blob(12 * MiB, seed=1).read()[: 11 * MiB])
        raise OSError("the link broke off")

    with pytest.raises(OSError, match="broke off"):
        archive.store_stream("k", broken(), size_hint=None)
    assert archive.budget.held == 0
