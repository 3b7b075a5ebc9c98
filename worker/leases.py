"""Leases: one sweep of a provider at a time, and one worker on a job at a time.

Both are short (``[worker] sweep_lease_seconds`` and ``job_lease_seconds``, 30 s by default
and never more than 60) and renewed by a heartbeat every third of their life while their
holder lives, as a Kubernetes lease is. A holder that dies (SIGKILL, an OOM kill, a lost
node) blocks nobody for longer than its lease.

* A **sweep lease** lives in Redis when ``[broker] url`` names one, else in the ledger: the
  configuration decides, never whether Redis answers now (``shared_redis``), so every worker
  of one deployment takes it in the same place. ``acquire`` takes it only if it is free;
  ``renew`` and ``release`` are compare-and-act on the owner token, so a sweep that stalled
  past its lease can neither extend nor drop the lease a newer sweep now holds (GitLab's
  ExclusiveLease). A sweep that loses its lease, or cannot renew it for as long as it
  lasts, stops dispatching. A Redis that cannot be reached raises ``RedisUnavailable``.
* A **job claim** is a lease on the job's ledger row (``JobWrites.claim``), and every
  transition under it is fenced on the owner. A live worker that paused longer than its
  claim (a GC pause, a slow disk) must not act: ``Claim.check`` fails once the claim may have
  lapsed, measured on this process's monotonic clock since the last renewal that succeeded,
  and the provider's delete is sent only while it passes.

The holder of a lease is named in the "busy" message: host, pid, when it last renewed and
when its lease ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from worker.errors import LedgerError, StoreUnavailable
from worker.ledger import actor_name
from worker.logging import get_logger
from worker.shared_redis import address_of, redis_errors

if TYPE_CHECKING:
    import redis

    from worker.domain import JobRow
    from worker.ledger import Ledger

log = get_logger(__name__)

# A claim counts as lapsed this long before its expiry, for the clocks of the worker and the
# database to disagree a little.
CLOCK_MARGIN = timedelta(seconds=3)


def new_owner() -> str:
    """An owner token: this host and process, and a random part unique to the holder."""
    return f"{actor_name()}:{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, slots=True)
class Holder:
    owner: str
    renewed_at: datetime | None
    expires_at: datetime | None

    def describe(self, now: datetime) -> str:
        host, _, rest = self.owner.partition(":")
        pid = rest.split(":", 1)[0]
        text = f"held by {host} (pid {pid})"
        if self.renewed_at is not None:
            text += f", renewed {max(0, round((now - self.renewed_at).total_seconds()))} s ago"
        if self.expires_at is not None:
            text += f", lease ends in {max(0, round((self.expires_at - now).total_seconds()))} s"
        return text


class Heartbeat:
    """Renews a lease every ``interval`` seconds until stopped. ``lost`` is set when a renewal
    is refused (another holds the lease now), or when none has succeeded for ``lapses_after``
    seconds (the store cannot be reached: by then the lease may have expired and been taken).
    Without ``lapses_after``, failed renewals are only logged: a job's claim measures its own
    validity (``Claim.check``)."""

    def __init__(
        self, renew: Callable[[], bool], interval: float, *, lapses_after: float | None = None
    ) -> None:
        self._renew = renew
        self._interval = interval
        self._lapses_after = lapses_after
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-heartbeat")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        renewed_at = time.monotonic()
        while not self._stop.wait(self._interval):
            started = time.monotonic()
            try:
                renewed = self._renew()
            except Exception as exc:  # a database or Redis hiccup: try again at the next beat
                if isinstance(exc, StoreUnavailable):  # it says all there is to say
                    log.warning("lease_renew_failed", error=str(exc))
                else:
                    log.warning("lease_renew_failed", exc_info=True)
                lapsed = self._lapses_after is not None and (
                    time.monotonic() - renewed_at >= self._lapses_after
                )
                if lapsed:
                    self.lost.set()
                    return
                continue
            if not renewed:
                self.lost.set()
                return
            renewed_at = started


# -- sweep leases --------------------------------------------------------------------------


class SweepLease(Protocol):
    name: str
    owner: str
    ttl: timedelta
    where: str  # "redis" or "ledger", for the logs

    def acquire(self) -> bool: ...

    def renew(self) -> bool: ...

    def release(self) -> None: ...

    def holder(self) -> Holder | None: ...


# The lease is a hash (owner, renewed_at) with a TTL. Its key differs from the string key
# of earlier versions, so a rolling upgrade never reads one as the other; for those few
# minutes two versions' sweeps may overlap, and the job claims keep their work apart.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'renewed_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_RENEW = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'renewed_at', ARGV[3])
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLease:
    """A sweep lease in Redis. Each operation raises RedisUnavailable, naming Redis and where
    it is, when Redis cannot be reached."""

    where = "redis"

    def __init__(
        self, client: redis.Redis, *, namespace: str, name: str, owner: str, ttl: timedelta
    ) -> None:
        self.client = client
        self.name = name
        self.key = f"{namespace}:sweep-lease:{name}"
        self.owner = owner
        self.ttl = ttl
        self.ttl_ms = int(ttl.total_seconds() * 1000)
        self.address = address_of(client)

    def acquire(self) -> bool:
        with redis_errors(self.address, f"taking the lease {self.name}"):
            taken = self.client.eval(_ACQUIRE, 1, self.key, self.owner, self.ttl_ms, time.time())
        return bool(taken)

    def renew(self) -> bool:
        with redis_errors(self.address, f"renewing the lease {self.name}"):
            renewed = self.client.eval(_RENEW, 1, self.key, self.owner, self.ttl_ms, time.time())
        return bool(renewed)

    def release(self) -> None:
        with redis_errors(self.address, f"releasing the lease {self.name}"):
            self.client.eval(_RELEASE, 1, self.key, self.owner)

    def holder(self) -> Holder | None:
        with redis_errors(self.address, f"reading who holds the lease {self.name}"):
            pipe = self.client.pipeline()
            pipe.hgetall(self.key)
            pipe.pttl(self.key)
            fields, ttl_ms = pipe.execute()
        values = {_text(k): _text(v) for k, v in (fields or {}).items()}
        if "owner" not in values:
            return None
        now = datetime.now(UTC)
        renewed = values.get("renewed_at")
        return Holder(
            owner=values["owner"],
            renewed_at=datetime.fromtimestamp(float(renewed), UTC) if renewed else None,
            expires_at=now + timedelta(milliseconds=ttl_ms) if ttl_ms and ttl_ms > 0 else None,
        )


class LedgerLease:
    where = "ledger"

    def __init__(self, ledger: Ledger, *, name: str, owner: str, ttl: timedelta) -> None:
        self.ledger = ledger
        self.name = name
        self.owner = owner
        self.ttl = ttl

    def acquire(self) -> bool:
        return self.ledger.coord.acquire(
            self.name, owner=self.owner, ttl=self.ttl, now=datetime.now(UTC)
        )

    def renew(self) -> bool:
        return self.ledger.coord.renew(
            self.name, owner=self.owner, ttl=self.ttl, now=datetime.now(UTC)
        )

    def release(self) -> None:
        self.ledger.coord.release(self.name, owner=self.owner)

    def holder(self) -> Holder | None:
        state = self.ledger.coord.holder(self.name, now=datetime.now(UTC))
        return None if state is None else Holder(state.owner, state.renewed_at, state.expires_at)


# -- job claims ----------------------------------------------------------------------------


class Claim:
    """A job's row, claimed by this worker for the duration of a ``with`` block."""

    def __init__(
        self,
        ledger: Ledger,
        provider: str,
        job_id: str,
        *,
        ttl: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.ledger = ledger
        self.provider = provider
        self.job_id = job_id
        self.ttl = ttl
        self.clock = clock
        self.owner = new_owner()
        self.row: JobRow | None = None
        self._valid_until = 0.0
        self._heartbeat: Heartbeat | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Claim:
        started = time.monotonic()
        self.row = self.ledger.jobs.claim(
            self.provider, self.job_id, owner=self.owner, ttl=self.ttl, now=self.clock()
        )
        if self.row is not None:
            self._mark_valid(started)
            beat = Heartbeat(self._renew, interval=self.ttl.total_seconds() / 3)
            self._heartbeat = self._stack.enter_context(beat)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        # A transition into a state no worker acts on (deleted, gone, failed) ended the claim
        # in its own UPDATE; the row it returned says so, and there is nothing to release.
        if self.row is not None and self.row.lease_owner == self.owner:
            try:
                self.ledger.jobs.release(self.row.pk, owner=self.owner)
            except Exception as failure:  # the lease expires by itself; never mask the outcome
                log.warning(
                    "claim_release_failed",
                    provider=self.provider,
                    job_id=self.job_id,
                    error=str(failure),
                    # The ledger out of reach says all there is to say; anything else is a bug.
                    exc_info=not isinstance(failure, StoreUnavailable),
                )

    def _mark_valid(self, renewed_at_monotonic: float) -> None:
        margin = min(CLOCK_MARGIN, self.ttl / 5)
        self._valid_until = renewed_at_monotonic + (self.ttl - margin).total_seconds()

    def _renew(self) -> bool:
        assert self.row is not None
        started = time.monotonic()
        renewed = self.ledger.jobs.renew(
            self.row.pk, owner=self.owner, ttl=self.ttl, now=self.clock()
        )
        if renewed:
            self._mark_valid(started)
        return renewed

    def check(self) -> None:
        """Raise LedgerError unless this worker surely still holds the claim."""
        lost = self._heartbeat is not None and self._heartbeat.lost.is_set()
        if lost or time.monotonic() >= self._valid_until:
            raise LedgerError(
                "this worker lost its claim on the job while working on it"
                if lost
                else "this worker's claim on the job may have lapsed (the process was paused "
                "longer than job_lease_seconds)",
                provider=self.provider,
                job_id=self.job_id,
                hint="Nothing was sent; another worker will finish the job",
            )

    @property
    def current(self) -> JobRow:
        assert self.row is not None
        return self.row
