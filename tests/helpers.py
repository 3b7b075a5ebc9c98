"""Builders shared by the tests: settings, config files, CLI runs, bucket listings."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tenacity
import tomli_w

from worker.errors import RateLimited
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


def unused_port() -> int:
    """A loopback port nothing listens on, for a server that must be told its port.

    Taken below the range the OS hands out for port 0 and for outgoing connections
    (32768-60999 on Linux), at random: a port found free there is not taken by a client
    socket or another test process's server between this check and the server's bind.
    """
    for _ in range(100):
        port = random.randrange(20000, 32768)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port between 20000 and 32767")


def quick_wait(
    wait: Callable[[tenacity.RetryCallState], float],
) -> Callable[[tenacity.RetryCallState], float]:
    """A provider adapter's wait between retries cut to 10 ms; a wait the provider asked for
    (a 429's header) stays real."""

    def quick(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return wait(state)
        return 0.01

    return quick


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
    """Run `retention [--config PATH] ARGS...` in this process, with click's CliRunner.

    As a new process would: stdout and stderr apart, the environment with ``env`` on top,
    the repository as the working directory, logging as the command sets it up, and no
    secret, runtime or logging left behind by an earlier run or test. Where a real process
    matters (signals, an interrupt's exit code, start-up, a closed pipe), ``run_process``;
    another ``module`` (or arguments ``before`` the command's) is always run as one.
    ``timeout`` is for a process; in this one pytest-timeout bounds a run that hangs.
    """
    if module != "worker" or before:
        return run_process(
            *args, config=config, env=env, timeout=timeout, module=module, before=before, cwd=cwd
        )
    from click.testing import CliRunner

    from worker.cli import cli

    argv = ([] if config is None else ["--config", str(config)]) + list(args)
    with _as_a_new_process(), contextlib.chdir(cwd or ROOT):
        result = CliRunner().invoke(cli, argv, env=dict(env or {}), prog_name="retention")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # What the interpreter prints for an exception nobody caught.
        stderr += "".join(traceback.format_exception(result.exception))
    return CliRun(result.exit_code, result.stdout, stderr, result.stdout.splitlines())


@contextlib.contextmanager
def _as_a_new_process() -> Iterator[None]:
    """The process-wide state a command sets up, set aside for it and put back afterwards:
    the root logger's handlers and levels, structlog's configuration and context, the
    secrets the redactor knows, and the runtime a task would reuse. Every database
    connection the command opened is closed, as the end of its process would: a SQLite
    ledger's write-ahead log is folded back into its file then, not whenever the garbage
    collector gets to it.
    """
    import sqlalchemy as sa
    import structlog

    from worker import bootstrap, logsetup
    from worker.redact import REDACTOR

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in logsetup.THIRD_PARTY}
    config = structlog.get_config()
    secrets = REDACTOR._secrets
    REDACTOR._secrets = ()
    connections: list[Any] = []

    def opened(dbapi_connection: Any, _record: Any) -> None:
        connections.append(dbapi_connection)

    sa.event.listen(sa.pool.Pool, "connect", opened)
    try:
        yield
    finally:
        sa.event.remove(sa.pool.Pool, "connect", opened)
        for connection in connections:
            with contextlib.suppress(Exception):  # one closed already, or broken
                connection.close()
        bootstrap.reset_process_runtime()
        structlog.contextvars.clear_contextvars()
        structlog.configure(**config)
        REDACTOR._secrets = secrets
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)


def run_process(
    *args: str,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    module: str = "worker",
    before: tuple[str, ...] = (),
    cwd: Path | None = None,
) -> CliRun:
    """Run `python -m MODULE [BEFORE...] [--config PATH] ARGS...` (the CLI by default) as a
    process of its own: for what only a real process shows (signals, exit codes set by the
    interpreter, start-up, a process killed at a chosen point)."""
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
