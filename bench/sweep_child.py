"""One sweep of the Daily simulator, in a process of its own.

``python -m bench.sweep_child --config PATH --mode project|loop --result PATH``

* ``project``: ``pipeline.sweep_provider`` as ``retention sweep`` runs it (thread pool of
  the provider's ``concurrency``, ledger claims, manifests, the delete gate, receipts).
* ``loop``: the peer. The same runtime's clients (one HTTP client per provider, one
  download client, one boto3 client) and the same requests, one job after another, with no
  ledger: list, read status, ask for links, stream and verify each output, write the
  manifest, read it back and HEAD every file (the delete gate's check), delete, write the
  receipt.

Logging goes where the CLI sends it (JSON lines on stdout), here to a file.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.util import child_stats

if TYPE_CHECKING:
    from worker.bootstrap import Runtime


def loop(rt: Runtime, provider_name: str) -> dict[str, Any]:
    from worker.domain import JobGone, LinkOrigin
    from worker.keys import MANIFEST_NAME, RECEIPT_NAME, archive_keys, job_folder
    from worker.logging import scrubbed
    from worker.manifest import ManifestFile, build_manifest, build_receipt, parse_manifest

    provider = rt.provider(provider_name)
    archive = rt.archive
    ids = [item.job_id for page in provider.list_jobs() for item in page]
    done = Counter[str]()
    for job_id in ids:
        snapshot = provider.get_job(job_id)
        if isinstance(snapshot, JobGone) or snapshot.status != "finished":
            done["skipped"] += 1
            continue
        folder = job_folder(rt.settings.archive.prefix, provider_name, job_id)
        artifacts = provider.artifacts(snapshot)
        keys = archive_keys(folder, [a.name for a in artifacts])
        files = []
        for artifact, key in zip(artifacts, keys, strict=True):
            assert isinstance(artifact.origin, LinkOrigin)
            with rt.fetcher.open(artifact.origin.url, expected_size=artifact.size) as download:
                stored = archive.store_stream(
                    key,
                    download.chunks(),
                    size_hint=download.size_hint,
                    content_type=download.content_type,
                    content_encoding=download.content_encoding,
                )
            files.append((stored, artifact.source))
        now = rt.clock()
        manifest_key = folder + MANIFEST_NAME
        manifest = build_manifest(
            provider=provider_name,
            provider_type=provider.type,
            job_id=job_id,
            archived_at=now,
            job=scrubbed(dict(snapshot.record)),
            files=[ManifestFile(s.key, s.size, s.sha256, source) for s, source in files],
        )
        archive.put_json(manifest_key, manifest)
        # The delete gate's check: the manifest read fresh, every file still there.
        listed = parse_manifest(
            archive.get_json(manifest_key), provider=provider_name, job_id=job_id, key=manifest_key
        )
        by_key = {s.key: s for s, _ in files}
        for entry in listed:
            stored = by_key[entry.key]
            if not archive.exists_unchanged(
                entry.key, size=stored.size, etag=stored.etag, version_id=stored.version_id
            ):
                raise RuntimeError(f"{entry.key} vanished")
        answer = provider.delete(job_id)
        receipt = build_receipt(
            provider=provider_name,
            provider_type=provider.type,
            job_id=job_id,
            manifest_key=manifest_key,
            delete_requested_at=now,
            deleted_at=rt.clock(),
            answer={"status_code": answer.status_code},
            custom_objects_deleted=[],
        )
        archive.put_json(manifest_key[: -len(MANIFEST_NAME)] + RECEIPT_NAME, receipt)
        done["deleted"] += 1
    return {"listed": len(ids), **done}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--mode", choices=("project", "loop"), required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--log", default="/dev/null")
    args = parser.parse_args()

    from worker.bootstrap import build_runtime
    from worker.logging import configure_logging
    from worker.settings import Settings

    log_stream = Path(args.log).open("w")  # noqa: SIM115 - open for the whole run
    configure_logging(stream=log_stream, json=True)
    settings = Settings.model_validate(json.loads(Path(args.config).read_text()))
    rt = build_runtime(settings)
    started = time.perf_counter()
    try:
        if args.mode == "project":
            from worker.sweep import sweep_provider

            report = sweep_provider(rt, "daily")
            summary = report.summary()
            outcome = {
                "listed": summary.listed,
                "deleted": summary.deleted,
                "deferred": summary.deferred,
                "failed": summary.failed,
            }
        else:
            outcome = loop(rt, "daily")
    finally:
        seconds = time.perf_counter() - started
        rt.close()
    log_stream.close()
    result = {"seconds": seconds, **outcome, **child_stats()}
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
