"""Redis and the ledger out of reach, at each edge where the worker uses them: one error of
ours (transient, exit code 3) that names the store and where it is, never its password."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from worker import exits
from worker.domain import utcnow
from worker.errors import LedgerUnavailable, RedisUnavailable, StoreUnavailable
from worker.leases import RedisLease
from worker.ledger import Ledger
from worker.providers.base import RateLimiter

PASSWORD = "redis-pass-4f9a2c71"


@pytest.fixture
def port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        found: int = probe.getsockname()[1]
    return found


@pytest.fixture
def client(port: int) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(
        f"redis://:{PASSWORD}@127.0.0.1:{port}/0", socket_connect_timeout=1
    )
    yield connection
    connection.close()


def lease_of(client: redis.Redis) -> RedisLease:
    return RedisLease(
        client, namespace="test", name="sweep:daily", owner="me", ttl=timedelta(seconds=5)
    )


@pytest.mark.parametrize(
    "operation",
    [
        lambda lease: lease.acquire(),
        lambda lease: lease.renew(),
        lambda lease: lease.release(),
        lambda lease: lease.holder(),
    ],
    ids=["acquire", "renew", "release", "holder"],
)
def test_every_operation_on_a_sweep_lease_in_an_unreachable_redis_says_where_it_is(
    operation: Callable[[RedisLease], object], client: redis.Redis, port: int
) -> None:
    with pytest.raises(RedisUnavailable) as caught:
        operation(lease_of(client))
    assert f"Redis at 127.0.0.1:{port}" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert not caught.value.permanent
    assert exits.is_unreachable(caught.value)


def test_a_shared_rate_limit_in_an_unreachable_redis_says_where_it_is(port: int) -> None:
    limiter = RateLimiter("10/second", "daily", f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    with pytest.raises(RedisUnavailable) as caught:
        limiter.acquire()
    assert f"Redis at 127.0.0.1:{port}" in str(caught.value)
    assert "rate limit" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_a_rate_limit_on_a_unix_socket_is_kept_in_that_redis(tmp_path: Path) -> None:
    # The broker's unix:// URL is redis+unix:// to the limits library.
    limiter = RateLimiter("10/second", "daily", f"unix://{tmp_path}/redis.sock")
    with pytest.raises(RedisUnavailable) as caught:
        limiter.acquire()
    assert f"Redis at {tmp_path}/redis.sock" in str(caught.value)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite-folder", "sqlite-under-a-file"])
def test_a_ledger_that_cannot_be_opened_is_unavailable_and_named(
    kind: str, port: int, tmp_path: Path
) -> None:
    if kind == "postgresql":
        url = f"postgresql+psycopg://retention:ledger-pass-81c2@127.0.0.1:{port}/retention"
        shown = f"127.0.0.1:{port}/retention"
    elif kind == "sqlite-folder":
        (tmp_path / "ledger.db").mkdir()
        url = shown = f"sqlite:///{tmp_path}/ledger.db"
    else:
        (tmp_path / "file").write_text("not a folder")
        url = shown = f"sqlite:///{tmp_path}/file/ledger.db"
    with pytest.raises(LedgerUnavailable) as caught:
        Ledger.open(url)
    message = str(caught.value)
    assert message.startswith("the ledger at ")
    assert shown in message
    assert "ledger-pass-81c2" not in message
    assert isinstance(caught.value, StoreUnavailable)
    assert exits.is_unreachable(caught.value)


def test_a_ledger_that_goes_away_after_it_was_opened_is_unavailable(tmp_path: Path) -> None:
    # given: a ledger opened and used, whose file then becomes a folder (a lost volume)
    database = tmp_path / "ledger.db"
    ledger = Ledger.open(f"sqlite:///{database}")
    ledger.close()
    for path in tmp_path.glob("ledger.db*"):
        path.unlink()
    database.mkdir()

    # when / then: reads and writes alike raise the ledger's own error
    with pytest.raises(LedgerUnavailable):
        ledger.query.get("daily", "j1")
    with pytest.raises(LedgerUnavailable):
        ledger.operator.set_hold("daily", "j1", held=True, now=utcnow())
