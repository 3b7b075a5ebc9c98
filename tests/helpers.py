"""Builders shared by the tests: settings, config files, CLI runs, bucket listings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from worker.job import process_job
from worker.ledger.schema import jobs
from worker.outcomes import JobResult
from worker.settings import Settings
from worker.simulators.blobs import Content, chunks_of
from worker.simulators.daily import DailySimulator

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.bootstrap import Runtime

PG_URL = os.environ.get("RETENTION_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("RETENTION_TEST_REDIS", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent


def write_to_bucket(s3: S3Client) -> Callable[[str, str, Content], None]:
    def write(bucket: str, key: str, content: Content) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=b"".join(chunks_of(content)))

    return write


def config_data(
    *,
    bucket: str,
    endpoint_url: str,
    ledger_url: str,
    providers: Mapping[str, Mapping[str, Any]],
    defaults: Mapping[str, Any] | None = None,
    archive: Mapping[str, Any] | None = None,
    broker: Mapping[str, Any] | None = None,
    downloads: Mapping[str, Any] | None = None,
    worker: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "archive": {
            "bucket": bucket,
            "prefix": "archive/",
            "endpoint_url": endpoint_url,
            "region": "us-east-1",
            **(archive or {}),
        },
        "ledger": {"url": ledger_url},
        # A queue of its own per test keeps sweep leases and rate limits apart in Redis.
        "broker": {"url": REDIS_URL, "queue": f"test-{uuid.uuid4().hex[:12]}", **(broker or {})},
        "defaults": {"retain_days": 0, **(defaults or {})},
        "downloads": {"allow_private_networks": True, **(downloads or {})},
        "worker": dict(worker or {}),
        "providers": {name: dict(p) for name, p in providers.items()},
    }


def daily_provider(sim: DailySimulator, **extra: Any) -> dict[str, Any]:
    return sim.provider_table(**extra)


def settings_of(data: Mapping[str, Any]) -> Settings:
    return Settings.model_validate(data)


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(data))
    return path


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str
    lines: list[str] = field(default_factory=list)

    def last_json(self) -> Any:
        return json.loads(self.stdout.strip().splitlines()[-1])

    def only_json(self) -> Any:
        """stdout as the one JSON document it must be (--json): nothing before or after."""
        return json.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        """stdout as JSON lines (--jsonl), every line one object."""
        return [json.loads(line) for line in self.stdout.splitlines()]

    def log_events(self) -> list[dict[str, Any]]:
        """The command's JSON log events, which it writes to stderr."""
        events = []
        for line in self.stderr.splitlines():
            if line.startswith("{") and '"event"' in line:
                events.append(json.loads(line))
        return events


def run_cli(
    *args: str,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    module: str = "worker",
    before: tuple[str, ...] = (),
    cwd: Path | None = None,
) -> CliRun:
    """Run `python -m MODULE [BEFORE...] [--config PATH] ARGS...` (the CLI by default)."""
    argv = [sys.executable, "-m", module, *before]
    if config is not None:
        argv += ["--config", str(config)]
    argv += list(args)
    proc = subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr, proc.stdout.splitlines())


def objects(s3: S3Client, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix``, read whole (tests only use small files this way)."""
    found: dict[str, bytes] = {}
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return found


def multipart_uploads(s3: S3Client, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def backoff_passed(rt: Runtime, provider: str, job_id: str) -> None:
    """The job's backoff is over (as it is by a later sweep): its next attempt time cleared."""
    with rt.ledger.engine.begin() as conn:
        conn.execute(
            jobs.update()
            .where(jobs.c.provider == provider, jobs.c.job_id == job_id)
            .values(next_attempt_at=None)
        )


def process_again(rt: Runtime, provider: str, job_id: str) -> JobResult:
    """A later attempt at a job, once its backoff has passed."""
    backoff_passed(rt, provider, job_id)
    return process_job(rt, provider, job_id)
