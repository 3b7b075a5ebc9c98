"""Sweep leases in Redis: owned, exclusive, renewed and released only by their owner."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from tests.helpers import REDIS_URL
from worker.errors import RedisUnavailable
from worker.leases import Heartbeat, RedisLease

pytestmark = pytest.mark.redis


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(REDIS_URL)
    yield connection
    connection.close()


def lease(client: redis.Redis, owner: str, namespace: str, ttl: float = 5.0) -> RedisLease:
    return RedisLease(
        client, namespace=namespace, name="sweep:daily", owner=owner, ttl=timedelta(seconds=ttl)
    )


def test_only_one_owner_holds_the_lease_until_it_is_released(client: redis.Redis) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    a, b = lease(client, "a", namespace), lease(client, "b", namespace)
    assert a.acquire()
    assert not b.acquire()
    assert getattr(b.holder(), "owner", None) == "a"
    b.release()  # not b's to release
    assert getattr(a.holder(), "owner", None) == "a"
    a.release()
    assert b.acquire()


def test_only_the_owner_can_renew(client: redis.Redis) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    a, b = lease(client, "a", namespace), lease(client, "b", namespace)
    assert a.acquire()
    assert not b.renew()
    assert a.renew()
    a.release()


def test_an_expired_lease_can_be_taken_and_the_stale_owner_cannot_touch_it(
    client: redis.Redis,
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    stale, fresh = lease(client, "stale", namespace, ttl=0.2), lease(client, "fresh", namespace)
    assert stale.acquire()
    time.sleep(0.3)
    assert fresh.acquire()
    assert not stale.renew()
    stale.release()
    assert getattr(fresh.holder(), "owner", None) == "fresh"
    fresh.release()


def test_a_heartbeat_whose_renewals_fail_for_a_whole_lease_declares_it_lost() -> None:
    # The store cannot be reached (Redis down): after a lease's life without a renewal, the
    # lease may be someone else's, and the sweep must stop dispatching.
    def unreachable() -> bool:
        raise RedisUnavailable("Redis at 127.0.0.1:9 cannot be reached")

    with Heartbeat(unreachable, interval=0.05, lapses_after=0.3) as beat:
        assert not beat.lost.wait(0.15)
        assert beat.lost.wait(2)


def test_a_heartbeat_that_fails_once_keeps_the_lease() -> None:
    calls: list[int] = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RedisUnavailable("Redis at 127.0.0.1:9 cannot be reached")
        return True

    with Heartbeat(flaky, interval=0.05, lapses_after=0.3) as beat:
        time.sleep(0.6)
        assert not beat.lost.is_set()
    assert len(calls) > 3
