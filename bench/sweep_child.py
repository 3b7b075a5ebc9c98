"""One sweep of the Daily simulator, in a process of its own.

``python -m bench.sweep_child --config PATH --mode project|loop|naive --result PATH``

* ``project``: ``sweep.sweep_provider`` as ``retention sweep`` runs it (thread pool of
  the provider's ``concurrency``, ledger claims, manifests, the delete gate, receipts).
* ``loop`` (printed as "same-clients loop"): the same runtime's clients (one HTTP client per
  provider, one download client, one boto3 client) and the same requests, one job after
  another, with no ledger: list, read status, ask for links, stream and verify each output,
  write the manifest, confirm the manifest (by its ETag) and every file in one listing (the
  delete gate's check), delete, write the receipt.
* ``naive`` (printed as "naive loop"): the loop a user would write with nothing of the
  project on the path (it imports nothing from ``worker``): one plain ``httpx.Client`` and
  one ``boto3`` S3 client built from the same configuration JSON (credentials from the
  environment, as boto3 finds them). List every job (pages of 100, ``starting_after``),
  then for each: ``GET`` the job, ``GET`` its access-link, download each output into
  memory, ``put_object`` each output and a small JSON manifest, ``DELETE`` the job. No
  ledger, no logging, no verification beyond what ``put_object`` does.

Every mode builds its clients before the clock starts. The result JSON carries the sweep's
seconds and CPU seconds (``time.process_time`` around the sweep, every thread), the S3
requests the process sent by operation (a ``before-send.s3`` hook put on every S3 client any
botocore session creates, retries included), whether ``worker`` was imported, and VmHWM.

Logging goes where the CLI sends it (JSON lines on stdout), here to a file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.util import child_stats

if TYPE_CHECKING:
    import httpx
    from mypy_boto3_s3 import S3Client

    from worker.bootstrap import Runtime


def count_s3_requests() -> Counter[str]:
    """Count every S3 request this process sends, by operation, from now on: each S3 client
    any botocore session creates (boto3's default session, the project's own sessions) gets a
    ``before-send.s3`` hook. Counted per attempt, so retries count."""
    import botocore.session

    sent: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        sent[event_name.rsplit(".", 1)[-1]] += 1

    create_client = botocore.session.Session.create_client

    def counted(self: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
        client = create_client(self, *args, **kwargs)
        if client.meta.service_model.service_name == "s3":
            client.meta.events.register("before-send.s3", count)
        return client

    botocore.session.Session.create_client = counted  # type: ignore[method-assign]
    return sent


# -- the naive loop: nothing of the project ------------------------------------------------

LINK_ANSWER_FIELDS = ("id", "preset", "status")


def naive_clients(config: dict[str, Any]) -> tuple[httpx.Client, S3Client]:
    import boto3
    import httpx
    from botocore.config import Config

    archive = config["archive"]
    s3 = boto3.client(
        "s3",
        endpoint_url=archive.get("endpoint_url"),
        region_name=archive.get("region"),
        config=Config(s3={"addressing_style": archive.get("addressing_style", "auto")}),
    )
    return httpx.Client(timeout=30.0), s3


def naive(config: dict[str, Any], http: httpx.Client, s3: S3Client) -> dict[str, Any]:
    daily = config["providers"]["daily"]
    base = daily["base_url"].rstrip("/")
    auth = {"Authorization": f"Bearer {daily['api_key']}"}
    bucket = config["archive"]["bucket"]
    prefix = config["archive"].get("prefix", "")
    page_size = 100

    def api(method: str, path: str, **params: Any) -> Any:
        answer = http.request(method, f"{base}{path}", params=params, headers=auth)
        answer.raise_for_status()
        return answer.json()

    # The whole listing first: a delete drops the job the next page's cursor names.
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": page_size}
        if cursor:
            params["starting_after"] = cursor
        page = api("GET", "/batch-processor", **params)["data"]
        ids.extend(item["id"] for item in page)
        if len(page) < page_size:
            break
        cursor = page[-1]["id"]
    done = Counter[str]()
    for job_id in ids:
        job = api("GET", f"/batch-processor/{job_id}")
        if job["status"] != "finished":
            done["skipped"] += 1
            continue
        links = api("GET", f"/batch-processor/{job_id}/access-link")
        folder = f"{prefix}daily/{job_id}/"
        files = []
        for section, value in links.items():
            if section in LINK_ANSWER_FIELDS:
                continue
            for n, item in enumerate(value if isinstance(value, list) else [value]):
                download = http.get(item["link"])  # no credentials to the file host
                download.raise_for_status()
                body = download.content
                key = f"{folder}{section}-{n}.{item.get('format') or 'bin'}"
                s3.put_object(Bucket=bucket, Key=key, Body=body)
                sha256 = hashlib.sha256(body).hexdigest()
                files.append({"key": key, "size": len(body), "sha256": sha256})
        manifest = {"provider": "daily", "job_id": job_id, "job": job, "files": files}
        s3.put_object(
            Bucket=bucket,
            Key=f"{folder}manifest.json",
            Body=json.dumps(manifest).encode(),
            ContentType="application/json",
        )
        api("DELETE", f"/batch-processor/{job_id}")
        done["deleted"] += 1
    return {"listed": len(ids), **done}


# -- the same-clients loop -----------------------------------------------------------------


def loop(rt: Runtime, provider_name: str) -> dict[str, Any]:
    from worker.archive import Verified
    from worker.domain import JobGone, LinkOrigin
    from worker.keys import MANIFEST_NAME, RECEIPT_NAME, archive_keys, job_folder
    from worker.manifest import ManifestFile, build_manifest, build_receipt
    from worker.redact import scrubbed

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
        written = archive.put_json(manifest_key, manifest)
        # The delete gate's check: the manifest by its ETag, every file still there.
        expected = [Verified(s.key, s.size, s.etag, s.version_id) for s, _ in files]
        expected.append(Verified(manifest_key, None, written.etag, written.version_id))
        vanished = archive.missing(expected)
        if vanished:
            raise RuntimeError(f"{vanished} vanished")
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
    parser.add_argument("--mode", choices=("project", "loop", "naive"), required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--log", default="/dev/null")
    args = parser.parse_args()
    s3_requests = count_s3_requests()
    config = json.loads(Path(args.config).read_text())

    if args.mode == "naive":
        http, s3 = naive_clients(config)
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            outcome = naive(config, http, s3)
        finally:
            seconds = time.perf_counter() - started
            sweep_cpu = time.process_time() - cpu_started
            http.close()
    else:
        from worker.bootstrap import build_runtime
        from worker.logsetup import configure_logging
        from worker.settings import Settings

        log_stream = Path(args.log).open("w")  # noqa: SIM115 - open for the whole run
        configure_logging(stream=log_stream, json=True)
        settings = Settings.model_validate(config)
        rt = build_runtime(settings)
        started, cpu_started = time.perf_counter(), time.process_time()
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
            sweep_cpu = time.process_time() - cpu_started
            rt.close()
        log_stream.close()
    result = {
        "seconds": seconds,
        "sweep_cpu": sweep_cpu,
        "s3_requests": dict(s3_requests),
        "imported_worker": "worker" in sys.modules,
        **outcome,
        **child_stats(),
    }
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
