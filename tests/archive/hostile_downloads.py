"""Four hostile downloads archived at once, in a process of its own so its peak RSS is theirs.

Run by ``test_hostile_sizes.test_four_hostile_downloads_at_once_stay_within_the_memory_budget``:

    python -m tests.archive.hostile_downloads <s3 endpoint> <bucket> <max_buffer_mib>

It serves four bodies from a loopback server whose answers are written byte for byte, archives
each through ``Fetcher`` and ``Archive.store_stream`` in its own thread (as four jobs on one
worker would), and prints one JSON line: what became of each download, and the process's
resident memory after start-up and at its peak (``VmHWM``). Every body is finite and made as
it is sent, so even an uploader that followed the hostile sizes could not take the machine
down with it: it would only show a peak far above the budget.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from tests.rawhttp import Answer, RawServer, chunked, generated, streamed
from worker.archive import Archive, MiB, make_s3_client
from worker.fetch import Fetcher, make_download_client
from worker.memory import return_large_buffers
from worker.settings import ArchiveSettings, DownloadSettings

GiB = 1024 * MiB
TiB = 1024 * GiB


def downloads() -> dict[str, Answer]:
    """The four answers, by name (the path they are served at and the key they go to)."""
    return {
        # A claim the budget can just hold (75 GiB in 10,000 parts of 8 MiB, the largest a
        # 16 MiB budget allows) and a body cut after 128 MiB: the upload runs with the
        # largest parts there are, then is aborted.
        "claims-75-gib-sends-128-mib": streamed(
            {"Content-Length": str(75 * GiB)}, generated(128 * MiB)
        ),
        # A claim that would need parts of 4.2 GiB: refused before the body is read.
        "claims-40-tib": streamed({"Content-Length": str(40 * TiB)}, generated(256 * MiB)),
        # No size at all, and no last chunk after 384 MiB: the connection is cut.
        "chunked-without-end": chunked(generated(384 * MiB), last_chunk=False),
        # An empty body followed by bytes that belong to no answer: stored empty.
        "length-zero-then-bytes": streamed({"Content-Length": "0"}, generated(64 * MiB)),
    }


def memory() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB (Linux)."""
    fields: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def archive_one(
    fetcher: Fetcher, archive: Archive, url: str, key: str, results: dict[str, Any]
) -> None:
    try:
        with fetcher.open(url) as download:
            stored = archive.store_stream(key, download.chunks(), size_hint=download.size_hint)
        results[key] = {"stored": stored.size, "sha256": stored.sha256}
    except Exception as exc:  # the test asserts on the type and message
        results[key] = {"refused": type(exc).__name__, "message": str(exc)}


def main(endpoint: str, bucket: str, max_buffer_mib: int) -> None:
    # As every worker process does when it builds its runtime: freed part buffers and
    # download chunks go back to the system, so the peak is the buffers', not the heap's.
    return_large_buffers()
    archive_settings = ArchiveSettings(
        bucket=bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        part_size_mib=5,
        max_concurrency=4,
        max_buffer_mib=max_buffer_mib,
    )
    archive = Archive(make_s3_client(archive_settings), archive_settings)
    download_settings = DownloadSettings(allow_private_networks=True, read_timeout=10)
    fetcher = Fetcher(make_download_client(download_settings), download_settings)
    bodies = downloads()
    with RawServer({f"/{name}": answer for name, answer in bodies.items()}) as server:
        # Warm up what every upload loads once (botocore's S3 model, the connection pools)
        # so the start-up figure is the worker's resting size, not a cold process.
        archive.store_stream("warm-up", iter([b"x"]))
        archive.client.delete_object(Bucket=bucket, Key="warm-up")
        start = memory()
        results: dict[str, Any] = {}
        threads = [
            threading.Thread(
                target=archive_one,
                args=(fetcher, archive, f"{server.origin}/{name}", name, results),
            )
            for name in bodies
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        fetcher.client.close()
    end = memory()
    print(
        json.dumps(
            {
                "results": results,
                "start_rss_kib": start["VmRSS"],
                "start_hwm_kib": start["VmHWM"],
                "peak_kib": end["VmHWM"],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
