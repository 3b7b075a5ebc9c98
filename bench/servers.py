"""The servers a benchmark talks to, all on 127.0.0.1: S3 endpoints and the Daily simulator.

* ``moto``: the project's local S3 server (worker/simulators/s3server.py), pure Python.
* ``s3rver``: the npm package ``s3rver`` (Node, files on disk), installed on first use into
  ``$RETENTION_BENCH_CACHE`` (default ``~/.cache/retention-bench``) with ``npm install``.
* The Daily simulator runs in a process of its own (``python -m bench.simproc``), so its
  request handling never competes with the measured process for a GIL.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.util import ROOT, cpu_seconds

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3RVER_VERSION = "3.7.1"
CACHE = Path(os.environ.get("RETENTION_BENCH_CACHE", Path.home() / ".cache" / "retention-bench"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited at start (code {process.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


# -- S3 endpoints --------------------------------------------------------------------------


@dataclass
class S3Endpoint:
    name: str
    url: str
    pid: int
    credentials: dict[str, str]
    # Whether the server's multipart ETag is S3's MD5-of-part-MD5s (the project verifies
    # a multipart upload by it when the server stores no checksum).
    standard_multipart_etag: bool
    # Whether buckets get versioning: moto answers `HEAD ?versionId=null` (which rclone sends
    # after an upload to an unversioned bucket) with 400, so the bench versions its buckets.
    versioning: bool
    _stop: Callable[[], None] = field(repr=False)

    def client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        client: S3Client = session.client(
            "s3",
            endpoint_url=self.url,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        return client

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def ensure_bucket(self, bucket: str, *, versioning: bool | None = None) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            try:
                client.create_bucket(Bucket=bucket)
            except client.exceptions.ClientError as exc:
                if "BucketAlreadyExists" not in str(exc):
                    raise
        if self.versioning if versioning is None else versioning:
            client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )

    def remove(self, bucket: str, key: str) -> None:
        """Delete a key and every version of it, so the server's memory stays flat."""
        client = self.client()
        if not self.versioning:
            client.delete_object(Bucket=bucket, Key=key)
            return
        listing = client.list_object_versions(Bucket=bucket, Prefix=key)
        for item in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]:
            if item["Key"] == key:
                client.delete_object(Bucket=bucket, Key=key, VersionId=item["VersionId"])

    def stop(self) -> None:
        self._stop()


def start_moto() -> S3Endpoint:
    from worker.simulators.s3server import LOCAL_CREDENTIALS, start_s3_server

    server = start_s3_server()
    return S3Endpoint(
        "moto",
        server.endpoint_url,
        server.process.pid,
        dict(LOCAL_CREDENTIALS),
        standard_multipart_etag=True,
        versioning=True,
        _stop=server.stop,
    )


def s3rver_script(install: bool = True) -> Path | None:
    script = CACHE / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    if script.exists() or not install:
        return script if script.exists() else None
    npm, node = shutil.which("npm"), shutil.which("node")
    if not (npm and node):
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"(installing s3rver {S3RVER_VERSION} into {CACHE} with npm)", file=sys.stderr)
    subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(CACHE),
            f"s3rver@{S3RVER_VERSION}",
        ],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return script if script.exists() else None


def start_s3rver() -> S3Endpoint | None:
    """s3rver, or None when node/npm or the package cannot be had."""
    script = s3rver_script()
    node = shutil.which("node")
    if script is None or node is None:
        return None
    data = Path(tempfile.mkdtemp(prefix="bench-s3rver-"))
    port = free_port()
    process = subprocess.Popen(
        [node, str(script), "-d", str(data), "-a", "127.0.0.1", "-p", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process=process)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(data, ignore_errors=True)

    return S3Endpoint(
        "s3rver",
        f"http://127.0.0.1:{port}",
        process.pid,
        {
            "AWS_ACCESS_KEY_ID": "S3RVER",
            "AWS_SECRET_ACCESS_KEY": "S3RVER",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        # s3rver answers a multipart upload's ETag with the whole object's MD5.
        standard_multipart_etag=False,
        versioning=False,
        _stop=stop,
    )


def start_endpoints(names: list[str]) -> list[S3Endpoint]:
    found: list[S3Endpoint] = []
    for name in names:
        if name == "moto":
            found.append(start_moto())
        elif name == "s3rver":
            endpoint = start_s3rver()
            if endpoint is None:
                print("s3rver is not available (needs node and npm); skipped", file=sys.stderr)
            else:
                found.append(endpoint)
        else:
            raise SystemExit(f"unknown S3 server {name!r} (moto, s3rver)")
    return found


@contextlib.contextmanager
def endpoints(names: list[str]) -> Iterator[list[S3Endpoint]]:
    started = start_endpoints(names)
    try:
        yield started
    finally:
        for endpoint in started:
            endpoint.stop()


# -- the Daily simulator, in its own process -----------------------------------------------

API_KEY = "bench-daily-key"


class SimProcess:
    """``python -m bench.simproc``: the Daily simulator plus a few bench-only routes."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.simproc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the simulator process did not start")
        ready = json.loads(line)
        self.port = int(ready["port"])
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.origin}/v1"
        # The account's [providers.NAME] table, as the simulator itself gives it.
        self.table: dict[str, Any] = ready["table"]
        self.pid = self.process.pid

    def call(self, method: str, path: str, **params: Any) -> Any:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"{self.origin}{path}" + (f"?{query}" if query else "")
        request = urllib.request.Request(url, method=method)  # noqa: S310 - loopback only
        with urllib.request.urlopen(request, timeout=600) as answer:  # noqa: S310
            return json.loads(answer.read() or b"null")

    def add_jobs(
        self, count: int, *, status: str = "finished", outputs: bool = True, size: int = 0
    ) -> int:
        """Add ``count`` jobs: two small outputs each, or one output of ``size`` bytes."""
        answer = self.call(
            "POST", "/bench/jobs", count=count, status=status, outputs=int(outputs), size=size
        )
        return int(answer["added"])

    def blob_link(self, size: int, seed: int = 1) -> str:
        return str(self.call("POST", "/bench/blob", size=size, seed=seed)["url"])

    def reset(self) -> None:
        self.call("POST", "/bench/reset")

    def set_latency(self, ms: float) -> None:
        """Answer every provider and download request ``ms`` milliseconds late."""
        self.call("POST", "/bench/latency", ms=ms)

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", "/bench/stats")
        return answer

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def base_settings(
    *,
    endpoint: S3Endpoint,
    bucket: str,
    prefix: str,
    ledger_url: str,
    sim: SimProcess | None,
    retain_days: int = 0,
    concurrency: int | None = None,
    rate_limit: str = "1000/second",
    archive: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A configuration as a dict (``Settings.model_validate`` reads it)."""
    providers: dict[str, Any] = {}
    if sim is not None:
        daily: dict[str, Any] = {**sim.table, "rate_limit": rate_limit}
        if concurrency is not None:
            daily["concurrency"] = concurrency
        providers["daily"] = daily
    return {
        "archive": {
            "bucket": bucket,
            "prefix": prefix,
            "endpoint_url": endpoint.url,
            "region": "us-east-1",
            "addressing_style": "path",
            **(archive or {}),
        },
        "ledger": {"url": ledger_url},
        # No Redis: leases in the ledger, rate limits in process (what `retention sweep`
        # does when [broker] url names none). Pass --redis to the bench to use one.
        "broker": {"url": os.environ.get("RETENTION_BENCH_REDIS", "memory://")},
        "defaults": {"retain_days": retain_days, "max_deletes_per_sweep": 1_000_000},
        "downloads": {"allow_private_networks": True},
        "providers": providers,
    }
