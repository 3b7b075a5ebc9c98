"""Real parts for the tests: an S3 API server, the ledgers, Redis and the simulators.

* S3: moto's standalone server, one process per test session, a fresh bucket per test.
* Ledger: SQLite in the test's folder, and PostgreSQL on 127.0.0.1 in a schema of its own.
* Simulators: started per test on a free loopback port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
import redis
import sqlalchemy as sa

from tests.helpers import PG_URL, REDIS_URL, ROOT, write_to_bucket
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import LOCAL_CREDENTIALS, S3Server, start_s3_server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="session", autouse=True)
def local_aws_environment() -> Iterator[None]:
    """Local credentials for the S3 server, and no chance of reaching a real AWS account."""
    saved = dict(os.environ)
    os.environ.update(LOCAL_CREDENTIALS)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("RETENTION_CONFIG", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server) -> S3Client:
    client: S3Client = boto3.client(
        "s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1"
    )
    return client


@pytest.fixture
def bucket(s3: S3Client) -> str:
    name = f"archive-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def custom_bucket(s3: S3Client) -> str:
    name = f"outputs-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/ledger.db"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def daily_sim(s3: S3Client) -> Iterator[DailySimulator]:
    sim = DailySimulator("daily-test-key-5f1c9a2e", bucket_writer=write_to_bucket(s3))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def later_sim(s3: S3Client) -> Iterator[DailySimulator]:
    """A second Daily account, for jobs that are not due yet."""
    sim = DailySimulator(
        "daily-later-key-77aa31", domain="later", bucket_writer=write_to_bucket(s3)
    )
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def celery_queue() -> Iterator[str]:
    """A Celery queue of the test's own on the shared Redis, removed afterwards."""
    name = f"retention-test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"*{name}*"):
        client.delete(key)
    client.close()


StartWorker = Callable[..., Path]


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """Start real `celery worker` processes; each is stopped with SIGTERM at the end.

    ``start_worker(config, queue, concurrency=2, loglevel="INFO")`` returns its log file.
    """
    processes: list[subprocess.Popen[bytes]] = []

    def start(
        config: Path,
        queue: str,
        *,
        concurrency: int = 2,
        loglevel: str = "INFO",
        env: dict[str, str] | None = None,
    ) -> Path:
        log = tmp_path / f"worker-{len(processes)}.log"
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker.celery_app",
                    "worker",
                    "--queues",
                    f"{queue},{queue}.sweeps",
                    "--concurrency",
                    str(concurrency),
                    "--pool",
                    "prefork",
                    "--hostname",
                    f"{queue}-{len(processes)}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--loglevel",
                    loglevel,
                ],
                cwd=ROOT,
                env={**os.environ, "RETENTION_CONFIG": str(config), **(env or {})},
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        return log

    yield start
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
