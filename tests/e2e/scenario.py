"""The Daily scenario of the pipeline issue, and the checks that it was swept correctly."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.helpers import config_data, daily_provider, objects, write_config
from worker.simulators.blobs import Blob, Content, chunks_of
from worker.simulators.daily import DailySimulator

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PREFIX = "archive/"
DUE = ("finished", "finished_big", "error", "custom")
UNTOUCHED = ("processing", "submitted", "unknown", "held")


@dataclass
class Scenario:
    daily: DailySimulator
    later: DailySimulator  # an account whose jobs are not due yet
    bucket: str
    custom_bucket: str
    ids: dict[str, str] = field(default_factory=dict)
    # job id -> {s3Config key -> content}
    outputs: dict[str, dict[str, Content]] = field(default_factory=dict)

    def add(self, label: str, sim: DailySimulator, status: str, **kw: Any) -> None:
        job_id = sim.add_job(status, **kw)
        self.ids[label] = job_id
        self.outputs[job_id] = {o.key: o.content for o in sim.jobs[job_id].outputs}

    def config(self, ledger_url: str, endpoint_url: str, **extra: Any) -> dict[str, Any]:
        return config_data(
            bucket=self.bucket,
            endpoint_url=endpoint_url,
            ledger_url=ledger_url,
            providers={
                "daily": daily_provider(
                    self.daily, page_size=2, custom_buckets=[self.custom_bucket]
                ),
                "daily_later": daily_provider(self.later, retain_days=3),
            },
            **extra,
        )

    def write(self, path: Path, ledger_url: str, endpoint_url: str, **extra: Any) -> Path:
        return write_config(path, self.config(ledger_url, endpoint_url, **extra))


def build(
    daily: DailySimulator, later: DailySimulator, bucket: str, custom_bucket: str
) -> Scenario:
    s = Scenario(daily, later, bucket, custom_bucket)
    s.add(
        "finished",
        daily,
        "finished",
        transcription=[("json", b'{"transcript": "hello"}'), ("txt", b"hello\n")],
        summary=("txt", b"a summary\n"),
    )
    s.add(
        "finished_big",
        daily,
        "finished",
        transcription=[("json", Blob(9 * 1024 * 1024 + 7, seed=11)), ("vtt", b"WEBVTT\n")],
    )
    s.add("error", daily, "error", error="Error: Failed to transcribe. May be invalid audio")
    s.add(
        "custom",
        daily,
        "finished",
        transcription=[("txt", b"in your bucket\n")],
        summary=("txt", b"summary in your bucket\n"),
        bucket=custom_bucket,
    )
    s.add("processing", daily, "processing")
    s.add("submitted", daily, "submitted")
    s.add("unknown", daily, "paused", transcription=[("txt", b"unknown status\n")])
    s.add("held", daily, "finished", transcription=[("txt", b"legal hold\n")])
    s.add("not_due", later, "finished", transcription=[("txt", b"kept three days\n")])
    return s


def folder(provider: str, job_id: str) -> str:
    return f"{PREFIX}{provider}/{job_id}/"


def assert_swept(s: Scenario, s3: S3Client) -> None:
    """Every due job archived byte-identical, manifest and receipt, deleted exactly once;
    every other job untouched."""
    archived = objects(s3, s.bucket, PREFIX)
    for label in DUE:
        job_id = s.ids[label]
        base = folder("daily", job_id)
        assert s.daily.deletes_of(job_id) == 1, f"{label} was not deleted exactly once"
        assert job_id not in s.daily.jobs
        manifest = json.loads(archived[base + "manifest.json"])
        assert manifest["provider"] == "daily"
        assert manifest["job_id"] == job_id
        assert manifest["provider_type"] == "daily"
        assert manifest["job"]["id"] == job_id
        listed = {f["key"]: f for f in manifest["files"]}
        assert set(listed) == {base + key for key in s.outputs[job_id]}
        for key, content in s.outputs[job_id].items():
            data = b"".join(chunks_of(content))
            assert archived[base + key] == data, f"{label}: {key} differs"
            entry = listed[base + key]
            assert entry["size"] == len(data)
            assert entry["sha256"] == hashlib.sha256(data).hexdigest()
            assert "?" not in entry["source"]
        receipt = json.loads(archived[base + "deletion.json"])
        assert receipt["job_id"] == job_id
        assert receipt["deleted_at"]
        assert receipt["provider_answer"]["result"] == "deleted"
        assert receipt["provider_answer"]["status_code"] == 200
    custom = json.loads(archived[folder("daily", s.ids["custom"]) + "deletion.json"])
    assert {o["key"] for o in custom["custom_bucket_objects_deleted"]} == set(
        s.outputs[s.ids["custom"]]
    )
    assert s3.list_objects_v2(Bucket=s.custom_bucket).get("KeyCount") == 0
    assert_untouched(s, archived)


def assert_untouched(s: Scenario, archived: dict[str, bytes]) -> None:
    for label in UNTOUCHED:
        job_id = s.ids[label]
        assert job_id in s.daily.jobs, f"{label} disappeared"
        assert s.daily.deletes_of(job_id) == 0
        assert s.daily.seen("GET", f"{job_id}/access-link") == []
        assert not any(k.startswith(folder("daily", job_id)) for k in archived)
    not_due = s.ids["not_due"]
    assert not_due in s.later.jobs
    assert s.later.seen("DELETE") == []
    assert not any(k.startswith(folder("daily_later", not_due)) for k in archived)
