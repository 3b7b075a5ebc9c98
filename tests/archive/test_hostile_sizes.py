"""Part sizes follow the memory budget, never a server's claimed size.

A download's Content-Length (or the size a provider declares) is a claim by someone else's
server. It decides how large each multipart part is, and a part is held in memory while it
uploads: a claimed 40 TiB used to make 4.3 GiB parts. Now a part never exceeds half of
``[archive] max_buffer_mib`` (one part fills while at least one uploads), a size that would
need larger parts is refused before the body is read, and so is a size S3 itself cannot hold.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.archive.support import archive_for
from tests.helpers import ROOT, multipart_uploads
from worker.archive import MAX_PART_SIZE, MAX_PARTS, MiB, part_size_for
from worker.errors import ArchiveError
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

GiB = 1024 * MiB
TiB = 1024 * GiB
BASE = 8 * MiB  # part_size_mib's default
BUDGET = 64 * MiB  # max_buffer_mib's default
HALF = BUDGET // 2  # the largest part the default budget allows


# -- known sizes -----------------------------------------------------------------------------


def test_an_honest_large_size_keeps_its_small_equal_parts() -> None:
    size = 100 * GiB
    planned = -(-size // (11 * MiB))
    sizes = {part_size_for(size, n, BASE, BUDGET) for n in range(1, planned + 1)}
    assert sizes == {11 * MiB}


def test_a_size_that_fits_the_plans_margin_in_half_budget_parts_uses_them() -> None:
    assert part_size_for((MAX_PARTS - 500) * HALF, 1, BASE, BUDGET) == HALF
    # one byte more: the margin is given up rather than the budget
    assert part_size_for((MAX_PARTS - 500) * HALF + 1, 1, BASE, BUDGET) == HALF


def test_the_largest_size_the_budget_holds_is_cut_in_half_budget_parts() -> None:
    assert part_size_for(MAX_PARTS * HALF, 1, BASE, BUDGET) == HALF
    assert part_size_for(MAX_PARTS * HALF, MAX_PARTS, BASE, BUDGET) == HALF


def test_a_size_needing_parts_larger_than_the_budget_allows_is_refused() -> None:
    with pytest.raises(ArchiveError, match=r"max_buffer_mib") as caught:
        part_size_for(MAX_PARTS * HALF + 1, 1, BASE, BUDGET)
    message = str(caught.value)
    assert str(MAX_PARTS * HALF + 1) in message
    assert "max_buffer_mib to at least 65" in message  # parts of 32.5 MiB hold it
    assert not caught.value.permanent


def test_a_claimed_40_tib_is_refused_under_the_default_budget() -> None:
    with pytest.raises(ArchiveError, match=r"\[archive\] max_buffer_mib"):
        part_size_for(40 * TiB, 1, BASE, BUDGET)


@pytest.mark.parametrize("budget", [None, 64 * 1024 * MiB], ids=["no-budget", "largest-budget"])
def test_a_size_s3_cannot_hold_in_10000_parts_is_refused_whatever_the_budget(
    budget: int | None,
) -> None:
    assert part_size_for(MAX_PARTS * MAX_PART_SIZE, 1, BASE, budget) == MAX_PART_SIZE
    with pytest.raises(ArchiveError, match="S3") as caught:
        part_size_for(MAX_PARTS * MAX_PART_SIZE + 1, 1, BASE, budget)
    assert str(MAX_PARTS * MAX_PART_SIZE + 1) in str(caught.value)


def test_a_stream_past_its_hint_doubles_its_parts_up_to_half_the_budget() -> None:
    hint = 1 * GiB  # 128 planned parts of 8 MiB
    assert part_size_for(hint, 128, BASE, BUDGET) == BASE
    assert part_size_for(hint, 129, BASE, BUDGET) == 2 * BASE
    assert part_size_for(hint, 229, BASE, BUDGET) == HALF
    assert part_size_for(hint, 329, BASE, BUDGET) == HALF  # not 64 MiB
    assert part_size_for(hint, 329, BASE) == 8 * BASE  # S3's limits only, as before


# -- unknown sizes ---------------------------------------------------------------------------


def test_an_unknown_size_doubles_its_parts_up_to_half_the_budget_and_no_further() -> None:
    assert part_size_for(None, 1000, BASE, BUDGET) == BASE
    assert part_size_for(None, 1001, BASE, BUDGET) == 2 * BASE
    assert part_size_for(None, 2001, BASE, BUDGET) == HALF
    assert part_size_for(None, 3001, BASE, BUDGET) == HALF  # the next doubling would be 64
    assert part_size_for(None, MAX_PARTS, BASE, BUDGET) == HALF
    assert part_size_for(None, 3001, BASE) == 2 * HALF  # S3's limits only, as before


@pytest.mark.parametrize("budget_mib", [10, 11, 16, 64, 100, 1000, 65536])
def test_no_part_is_ever_larger_than_half_the_budget(budget_mib: int) -> None:
    budget = budget_mib * MiB
    base = 5 * MiB
    hints: list[int | None] = [None, 1, 10 * GiB, 100 * GiB, 1 * TiB, 5 * TiB, 48 * TiB]
    for hint in hints:
        for number in (1, 100, 1000, 1001, 2001, 3001, 5001, 9500, 9501, MAX_PARTS):
            try:
                part = part_size_for(hint, number, base, budget)
            except ArchiveError:
                continue  # refused, which is the other allowed outcome
            assert part <= budget // 2, (hint, number)


def test_a_configured_part_size_above_half_the_budget_is_the_operators_own_choice() -> None:
    # part_size_mib = 8 with max_buffer_mib = 10: the part is not a server's claim.
    assert part_size_for(None, 1, BASE, 10 * MiB) == BASE
    assert part_size_for(None, 5001, BASE, 10 * MiB) == BASE
    assert part_size_for(MAX_PARTS * BASE, 1, BASE, 10 * MiB) == BASE
    with pytest.raises(ArchiveError):
        part_size_for(MAX_PARTS * BASE + 1, 1, BASE, 10 * MiB)


# -- against the S3 server -------------------------------------------------------------------


def untouched() -> tuple[list[int], Iterator[bytes]]:
    pulled: list[int] = []

    def body() -> Iterator[bytes]:
        pulled.append(1)
        yield b"x" * 1024

    return pulled, body()


def test_a_claimed_size_beyond_the_budget_is_refused_before_reading_or_uploading(
    s3_server: S3Server, s3: S3Client, bucket: str
) -> None:
    # Given a download whose Content-Length claims 40 TiB (its body is 1 KiB)
    pulled, body = untouched()
    # When it is archived under the default budget
    with pytest.raises(ArchiveError, match=r"max_buffer_mib") as caught:
        archive_for(s3_server, bucket).store_stream("out/file.bin", body, size_hint=40 * TiB)
    # Then nothing was read, no upload was started and nothing was stored
    assert pulled == []
    assert "out/file.bin" in str(caught.value)
    assert multipart_uploads(s3, bucket) == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_claimed_size_s3_cannot_hold_is_refused_before_reading_or_uploading(
    s3_server: S3Server, s3: S3Client, bucket: str
) -> None:
    pulled, body = untouched()
    archive = archive_for(s3_server, bucket, max_buffer_mib=65536)
    with pytest.raises(ArchiveError, match="S3"):
        archive.store_stream("k", body, size_hint=MAX_PARTS * MAX_PART_SIZE + 1)
    assert pulled == []
    assert multipart_uploads(s3, bucket) == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


# -- memory under four hostile downloads at once ---------------------------------------------

MAX_BUFFER_MIB = 16
MARGIN_MIB = 24


@pytest.mark.slow
def test_four_hostile_downloads_at_once_stay_within_the_memory_budget(
    s3_server: S3Server, s3: S3Client, bucket: str
) -> None:
    """Four downloads with hostile sizes, archived at once, within start-up + one budget.

    A process of its own (``tests/archive/hostile_downloads.py``) serves the four bodies and
    archives them concurrently with ``max_buffer_mib = 16`` (parts of at most 8 MiB), so that
    its peak resident memory (VmHWM) is theirs alone; the S3 server is another process.

    The budget: the process's peak after start-up (imports, the S3 client warmed up by one
    small upload, the loopback server), plus 16 MiB (the part buffers of all four uploads
    together), plus a 24 MiB margin. The margin covers what sits beside the part buffers and
    is not scaled by them: for each download a 1 MiB read chunk and the HTTP client's
    buffers; the first 256 KiB read before a part buffer is taken; the copy of a short last
    part; botocore's request objects; and the allocator's slack. The process returns freed
    buffers to the system as a worker does (``worker/memory.py``); without that, glibc's heap
    kept freed part buffers and the peak varied between 100 and 131 MiB from run to run.
    Measured on the reference machine (2 CPUs, Python 3.11, glibc): start-up 73 MiB, peak
    94-96 MiB over seven runs (four of them at once), against a budget of 113 MiB. While each
    upload had a budget of its own, the peak was 114 MiB; before the hostile-size fix the
    40 TiB claim alone made the uploader read its whole 256 MiB body as one part: peak
    392 MiB.
    """
    # When the four downloads run together
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.archive.hostile_downloads",
            s3_server.endpoint_url,
            bucket,
            str(MAX_BUFFER_MIB),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    results = report["results"]
    print(  # the figures docs/safety.md quotes; shown with pytest -s
        f"start-up RSS {report['start_rss_kib'] / 1024:.0f} MiB, "
        f"start-up peak {report['start_hwm_kib'] / 1024:.0f} MiB, "
        f"peak {report['peak_kib'] / 1024:.0f} MiB"
    )

    # Then each was refused, or stored whole
    assert results["claims-75-gib-sends-128-mib"]["refused"] == "DownloadError"
    assert "broke off" in results["claims-75-gib-sends-128-mib"]["message"]
    assert results["claims-40-tib"]["refused"] == "ArchiveError"
    assert "max_buffer_mib" in results["claims-40-tib"]["message"]
    assert results["chunked-without-end"]["refused"] == "DownloadError"
    assert results["length-zero-then-bytes"] == {
        "stored": 0,
        "sha256": hashlib.sha256(b"").hexdigest(),
    }
    # and nothing partial is left in the bucket
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [(o["Key"], o["Size"]) for o in listed] == [("length-zero-then-bytes", 0)]
    assert multipart_uploads(s3, bucket) == []

    # And the peak stays within start-up + the one budget they share + the margin
    budget_kib = report["start_hwm_kib"] + (MAX_BUFFER_MIB + MARGIN_MIB) * 1024
    assert report["peak_kib"] <= budget_kib, report
