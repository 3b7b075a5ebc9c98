"""Jobs for the AWS-semantics tests, a runtime on the test S3 server, and AWS's documented
behaviour where moto differs from it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import config_data, daily_provider, settings_of, write_config
from worker.archive import MiB
from worker.bootstrap import Runtime, build_runtime
from worker.simulators.blobs import Blob, chunks_of
from worker.simulators.daily import DailySimulator

PREFIX = "archive/"


@dataclass
class Jobs:
    """Two finished Daily jobs: one whose outputs are behind links (one of them multipart at
    5 MiB parts), one whose outputs are in the user's own bucket (copied server-side)."""

    daily: DailySimulator
    bucket: str
    custom_bucket: str
    endpoint_url: str
    ids: dict[str, str] = field(default_factory=dict)
    # job id -> {s3Config key -> bytes}
    outputs: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def add(self, label: str, **kw: Any) -> str:
        job_id = self.daily.add_job("finished", **kw)
        self.ids[label] = job_id
        self.outputs[job_id] = {
            o.key: b"".join(chunks_of(o.content)) for o in self.daily.jobs[job_id].outputs
        }
        return job_id

    def config(self, ledger_url: str, **archive: Any) -> dict[str, Any]:
        return config_data(
            bucket=self.bucket,
            endpoint_url=self.endpoint_url,
            ledger_url=ledger_url,
            providers={"daily": daily_provider(self.daily, custom_buckets=[self.custom_bucket])},
            archive={"part_size_mib": 5, **archive},
        )

    def write(self, path: Path, ledger_url: str, **archive: Any) -> Path:
        return write_config(path, self.config(ledger_url, **archive))

    def runtime(self, ledger_url: str, **archive: Any) -> Runtime:
        return build_runtime(settings_of(self.config(ledger_url, **archive)))

    def folder(self, label: str) -> str:
        return f"{PREFIX}daily/{self.ids[label]}/"

    def data_keys(self, label: str) -> set[str]:
        return {self.folder(label) + key for key in self.outputs[self.ids[label]]}


def two_jobs(daily: DailySimulator, bucket: str, custom_bucket: str, endpoint_url: str) -> Jobs:
    jobs = Jobs(daily, bucket, custom_bucket, endpoint_url)
    jobs.add(
        "links",
        transcription=[("json", Blob(6 * MiB + 5, seed=6)), ("txt", b"hello\n")],
        summary=("txt", b"a summary\n"),
    )
    jobs.add(
        "custom",
        transcription=[("txt", b"in your bucket\n")],
        summary=("txt", b"summary in your bucket\n"),
        bucket=custom_bucket,
    )
    return jobs


def aws_like_kms_etags(client: Any) -> None:
    """Make ``client`` see what AWS documents for SSE-KMS: an object's ETag (from a PUT, a
    copy, a HEAD or a GET) is not the MD5 of its bytes. moto gives the MD5; this rewrites it
    into another value that is stable for the object, as AWS's is."""

    def opaque(etag: str) -> str:
        return '"' + hashlib.sha256(b"sse-kms " + etag.encode()).hexdigest()[:32] + '"'

    def rewrite(parsed: dict[str, Any], **_: Any) -> None:
        if parsed.get("ServerSideEncryption") not in ("aws:kms", "aws:kms:dsse"):
            return
        for holder in (parsed, parsed.get("CopyObjectResult") or {}):
            if holder.get("ETag"):
                holder["ETag"] = opaque(holder["ETag"])

    def rewrite_listing(parsed: dict[str, Any], **_: Any) -> None:
        # A listing names no encryption; every object these tests write to the archive is
        # under SSE-KMS, and AWS lists the same ETag a HEAD of the object shows.
        for entry in [*parsed.get("Contents", []), *parsed.get("Versions", [])]:
            if entry.get("ETag"):
                entry["ETag"] = opaque(entry["ETag"])

    for operation in ("ListObjectsV2", "ListObjectVersions"):
        client.meta.events.register(f"after-call.s3.{operation}", rewrite_listing)
    # Not UploadPart's answer: the server checks part ETags when the upload completes.
    for operation in (
        "PutObject",
        "CopyObject",
        "HeadObject",
        "GetObject",
        "CompleteMultipartUpload",
    ):
        client.meta.events.register(f"after-call.s3.{operation}", rewrite)
