"""The archive tests' S3 servers: moto (tests/conftest.py) and s3rver, an npm package that
differs from moto where real servers differ from AWS (worker/simulators/s3rver.py).

Tests whose behaviour should not depend on the server take ``any_s3`` (and ``any_client``,
``any_bucket``) and run once on each. s3rver is installed by scripts/test; here it is
installed on first use if npm is at hand, and the s3rver runs are skipped, saying so, only
where node or npm cannot be had.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.archive.support import client_of
from tests.helpers import ROOT
from worker.simulators.s3rver import S3rverServer, find_s3rver, install_s3rver, start_s3rver

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.archive.support import Endpoint

SERVERS = ("moto", "s3rver")


@pytest.fixture(scope="session")
def s3rver() -> Iterator[S3rverServer]:
    package = find_s3rver(ROOT) or install_s3rver(ROOT)
    if package is None:
        pytest.skip("s3rver needs node and npm, which this machine lacks: these ran on moto only")
    server = start_s3rver(package)
    yield server
    server.stop()


@pytest.fixture(params=SERVERS)
def any_s3(request: pytest.FixtureRequest) -> Endpoint:
    """Each server in turn: the test runs once on moto and once on s3rver."""
    server: Endpoint = request.getfixturevalue("s3_server" if request.param == "moto" else "s3rver")
    return server


@pytest.fixture
def any_client(any_s3: Endpoint) -> S3Client:
    return client_of(any_s3)


@pytest.fixture
def any_bucket(any_client: S3Client) -> str:
    name = f"archive-{uuid.uuid4().hex[:16]}"
    any_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def any_custom_bucket(any_client: S3Client) -> str:
    name = f"outputs-{uuid.uuid4().hex[:16]}"
    any_client.create_bucket(Bucket=name)
    return name
