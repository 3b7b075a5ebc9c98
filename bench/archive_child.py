"""One streaming archive, in a process of its own so its peak RSS is its own.

``python -m bench.archive_child --url URL --endpoint URL --bucket B --key K --result PATH``

Does exactly what ``archiving.store_artifact`` does for a link: ``Fetcher.open`` (the URL
policy, the guarded transport) and ``Archive.store_stream`` with the download's size hint,
through the product's own client factories. Writes one JSON document to ``--result``: the
seconds, bytes read from the link, the stored object, the S3 operations sent (to show the
data is read once and verified by HEAD, never read back), the process's resident memory
when the transfer starts (``rss_at_start``: interpreter, imports and clients) and its peak
over the whole run (VmHWM, start-up included), so the transfer's own share is the
difference.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.util import child_stats, vmhwm, vmrss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the content")
    parser.add_argument("--checksum-mode", default="when_supported")
    parser.add_argument("--part-size-mib", type=int, default=None)
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--no-size-hint", action="store_true")
    parser.add_argument("--download-only", action="store_true")
    args = parser.parse_args()

    from worker.archive import Archive, make_s3_client
    from worker.errors import WorkerError
    from worker.fetch import Fetcher, make_download_client
    from worker.settings import ArchiveSettings, DownloadSettings

    archive_args: dict[str, Any] = {
        "bucket": args.bucket,
        "endpoint_url": args.endpoint,
        "region": "us-east-1",
        "addressing_style": "path",
        "checksum_mode": args.checksum_mode,
    }
    if args.part_size_mib:
        archive_args["part_size_mib"] = args.part_size_mib
    if args.max_concurrency:
        archive_args["max_concurrency"] = args.max_concurrency
    settings = ArchiveSettings(**archive_args)
    downloads = DownloadSettings(allow_private_networks=True)
    client = make_s3_client(settings)
    operations: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        operations[model.name] += 1

    client.meta.events.register("before-call.s3", count)
    archive = Archive(client, settings)
    fetcher = Fetcher(make_download_client(downloads), downloads)
    result: dict[str, Any] = {"rss_at_start": vmrss("self"), "hwm_at_start": vmhwm("self")}
    started = time.perf_counter()
    try:
        with fetcher.open(args.url) as download:
            if args.download_only:
                import hashlib

                digest = hashlib.sha256()
                for chunk in download.chunks():
                    digest.update(chunk)
                result["sha256"] = digest.hexdigest()
                result["size"] = download.bytes_read
            else:
                stored = archive.store_stream(
                    args.key,
                    download.chunks(),
                    size_hint=None if args.no_size_hint else download.size_hint,
                    content_type=download.content_type,
                    content_encoding=download.content_encoding,
                )
                result["sha256"] = stored.sha256
                result["size"] = stored.size
                result["etag"] = stored.etag
            result["bytes_read"] = download.bytes_read
        result["ok"] = True
    except WorkerError as exc:
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["seconds"] = time.perf_counter() - started
    result["operations"] = dict(operations)
    if args.sha256 and result.get("sha256"):
        result["sha256_ok"] = result["sha256"] == args.sha256
    result.update(child_stats())
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
