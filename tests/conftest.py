"""Real parts for the tests: an S3 API server, the ledgers, Redis and the simulators.

Safe under pytest-xdist: each worker process has its own servers, and everything a test
names on a shared server (a bucket, a PostgreSQL schema, a Redis queue) is unique to it.

* S3: moto's standalone server, one process per test session (per xdist worker), a fresh
  bucket per test.
* Ledger: SQLite in the test's folder, copied from a template migrated once per session; and
  PostgreSQL on 127.0.0.1 in a schema of its own, built by replaying the template's
  migration (Alembic runs once per session, not once per test).
* Simulators: one per session on a port the OS picks, reset (``SimServer.reset``) before
  each test, so each test starts with a simulator as new as one built for it alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import redis
import sqlalchemy as sa

from tests.helpers import PG_URL, REDIS_URL, ROOT, quick_wait, unused_port, write_to_bucket
from worker.ledger import Ledger, migrate
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import LOCAL_CREDENTIALS, S3Server, start_s3_server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


# The fixtures that bring in a server process: a test that takes one (directly or through
# another fixture) is an integration test, and so is one marked redis or postgres.
SERVER_FIXTURES = frozenset(
    {"s3_server", "s3rver", "any_s3", "postgres_url", "celery_queue", "start_worker"}
)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the integration tests (``scripts/test --fast`` leaves them out, with the slow
    ones); put the tests that start Celery workers in one xdist group, so that with
    ``--dist loadgroup`` they run one after another on one worker, never two fleets of
    processes at once on two cores; and run the slow tests first: under pytest-xdist a long
    test that starts last keeps the whole run waiting for it."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        needs = SERVER_FIXTURES.intersection(fixtures)
        if needs or item.get_closest_marker("redis") or item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.integration)
        if "start_worker" in fixtures:
            item.add_marker(pytest.mark.xdist_group("celery-workers"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


@pytest.fixture(scope="session", autouse=True)
def shared_service_models() -> Iterator[None]:
    """Every boto3 session of the test process reads AWS's service models from one loader.

    The worker builds a session per S3 client (``make_s3_client``: one per process in
    production), and each new session parses the S3 model's JSON again: some 150 ms of CPU
    per runtime, when a test builds a runtime or two. The models are read-only data, and
    credentials, configuration and event handlers stay each session's own.
    """
    import botocore.loaders
    import botocore.session

    shared = botocore.loaders.create_loader()
    create = botocore.loaders.create_loader

    def create_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
        return shared if search_path_string is None else create(search_path_string)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", create_loader)
        yield


@pytest.fixture(scope="session", autouse=True)
def shared_tls_context() -> Iterator[None]:
    """One default TLS context for every httpx client of the test process, per environment.

    Each client loads the whole CA bundle into a context of its own (about 30 ms of CPU);
    the tests build one or more adapters and a download client per runtime. The context is
    what httpx would build, and every client here speaks HTTP/1.1.
    """
    import ssl

    import httpx
    import httpx._transports.default as transport

    create = httpx.create_ssl_context
    made: dict[tuple[object, ...], ssl.SSLContext] = {}

    def create_ssl_context(
        verify: Any = True, cert: Any = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is not True or cert is not None:
            return create(verify=verify, cert=cert, trust_env=trust_env)
        key = (trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in made:
            made[key] = create(verify=verify, cert=cert, trust_env=trust_env)
        return made[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transport, "create_ssl_context", create_ssl_context)
        yield


@pytest.fixture(autouse=True)
def quick_backoff(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without the wait between them, unless the test is marked ``real_backoff``.

    A provider adapter's backoff between retries (up to 8 s) and botocore's (up to 20 s) are
    cut to 10 ms; a wait the provider asked for (a 429's Retry-After) stays the real one, up
    to ``MAX_INLINE_WAIT``. What is retried, how often, and what happens after are unchanged.
    """
    if request.node.get_closest_marker("real_backoff"):
        return
    import botocore.retries.standard

    from worker.providers import base

    monkeypatch.setattr(base, "_wait", quick_wait(base._wait))
    monkeypatch.setattr(
        botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda *_: 0.01
    )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3_server(unused_port())
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


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite ledger migrated to head once per session, which tests copy."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    Ledger.open(f"sqlite:///{path}").close()  # the last connection folds the WAL back in
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated ledger of the test's own: ``ledger.db`` in its folder."""
    shutil.copyfile(sqlite_template, tmp_path / "ledger.db")
    return f"sqlite:///{tmp_path}/ledger.db"


@pytest.fixture(scope="session")
def postgres_migration() -> Iterator[list[tuple[str, Any, bool]]]:
    """The statements Alembic runs to migrate an empty PostgreSQL schema to head, recorded
    once per session in a schema of the session's own, for ``postgres_url`` to replay."""
    schema = f"tmpl_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    statements: list[tuple[str, Any, bool]] = []
    ledger = Ledger(sa.create_engine(f"{PG_URL}?options=-csearch_path%3D{schema}"))

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        if "pg_advisory" not in sql:  # migrate's lock against other processes
            statements.append((sql, params, many))

    sa.event.listen(ledger.engine, "before_cursor_execute", record)
    try:
        migrate(ledger.engine)
    finally:
        ledger.close()
    yield statements
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_migration: list[tuple[str, Any, bool]]) -> Iterator[str]:
    """A migrated ledger of the test's own: a schema on the PostgreSQL server, built with the
    very statements Alembic ran for the session's template."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(sa.text(f'SET LOCAL search_path TO "{schema}"'))
        cursor = conn.connection.cursor()
        for sql, params, many in postgres_migration:
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest) -> str:
    """A migrated ledger; each test that takes this runs once on SQLite and once on
    PostgreSQL. For the ledger's own SQL: claims, transitions, queries, concurrency."""
    url: str = request.getfixturevalue(
        "sqlite_url" if request.param == "sqlite" else "postgres_url"
    )
    return url


@pytest.fixture(params=BACKENDS)
def empty_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, on SQLite and on PostgreSQL, for the migrations' own tests."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/empty.db"
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="session")
def sim_s3(s3_server: S3Server) -> S3Client:
    """The simulators' own client, for writing their outputs into a bucket (tests may hook
    events onto ``s3``; none reach this one)."""
    client: S3Client = boto3.client(
        "s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1"
    )
    return client


@pytest.fixture(scope="session")
def daily_server(sim_s3: S3Client) -> Iterator[DailySimulator]:
    sim = DailySimulator("daily-test-key-5f1c9a2e", bucket_writer=write_to_bucket(sim_s3))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def later_server(sim_s3: S3Client) -> Iterator[DailySimulator]:
    sim = DailySimulator(
        "daily-later-key-77aa31", domain="later", bucket_writer=write_to_bucket(sim_s3)
    )
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def daily_sim(daily_server: DailySimulator) -> DailySimulator:
    """A Daily account with no jobs, faults or requests yet (the session's, reset)."""
    daily_server.reset()
    return daily_server


@pytest.fixture
def later_sim(later_server: DailySimulator) -> DailySimulator:
    """A second Daily account, for jobs that are not due yet."""
    later_server.reset()
    return later_server


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
