"""Sweep leases: one sweep of a provider at a time, across processes and hosts.

A lease is owned: ``acquire`` is ``SET key owner NX PX ttl``; ``renew`` and ``release`` are
compare-and-act scripts that touch the key only while it still holds our owner token, so a
sweep that stalled past its TTL cannot extend or delete the lease a newer sweep now holds
(GitLab's ExclusiveLease). The TTL is kept shorter than the schedule period, so a stuck
sweep never overlaps the next one, and a heartbeat renews it while the sweep runs.

Redis holds the lease wherever a Redis broker is configured and reachable, which is always
so under Celery. A `retention sweep` on a host that cannot reach Redis takes the same lease
in the ledger instead (and logs that it did). Either way each job is claimed in the ledger
before anything happens to it, so two overlapping sweeps still act on each job once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from worker.domain import utcnow

if TYPE_CHECKING:
    import redis

    from worker.ledger import Ledger

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease(Protocol):
    name: str
    owner: str
    where: str  # "redis" or "ledger", for the logs

    def acquire(self) -> bool: ...

    def renew(self) -> bool: ...

    def release(self) -> None: ...

    def holder(self) -> str | None: ...


class RedisLease:
    where = "redis"

    def __init__(
        self, client: redis.Redis, *, namespace: str, name: str, owner: str, ttl: timedelta
    ) -> None:
        self.client = client
        self.name = name
        self.key = f"{namespace}:lease:{name}"
        self.owner = owner
        self.ttl_ms = int(ttl.total_seconds() * 1000)

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.owner, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        return bool(self.client.eval(_RENEW, 1, self.key, self.owner, str(self.ttl_ms)))

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.owner)

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)


class LedgerLease:
    where = "ledger"

    def __init__(self, ledger: Ledger, *, name: str, owner: str, ttl: timedelta) -> None:
        self.ledger = ledger
        self.name = name
        self.owner = owner
        self.ttl = ttl

    def _now(self) -> datetime:
        return utcnow()

    def acquire(self) -> bool:
        return self.ledger.acquire_lease(self.name, owner=self.owner, ttl=self.ttl, now=self._now())

    def renew(self) -> bool:
        return self.ledger.renew_lease(self.name, owner=self.owner, ttl=self.ttl, now=self._now())

    def release(self) -> None:
        self.ledger.release_lease(self.name, owner=self.owner)

    def holder(self) -> str | None:
        held = self.ledger.lease_holder(self.name, now=self._now())
        return held[0] if held else None
