"""Builds the real clients once per process: ledger engine, S3 client, HTTP clients.

Never at import time: Celery's prefork pool forks after importing the app, and a client
(or a database pool) created before the fork would be shared by every child.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from worker.archive import Archive, make_s3_client
from worker.domain import utcnow
from worker.fetch import Fetcher, make_download_client
from worker.leases import LedgerLease, RedisLease, SweepLease, new_owner
from worker.ledger import Ledger
from worker.memory import return_large_buffers
from worker.providers import build_provider
from worker.providers.base import Provider, RateLimiter
from worker.redact import register_secrets
from worker.settings import Settings
from worker.shared_redis import configured_url, connect
from worker.source_bucket import SourceBucket

if TYPE_CHECKING:
    import redis


@dataclass
class Runtime:
    settings: Settings
    ledger: Ledger
    archive: Archive
    fetcher: Fetcher
    providers: dict[str, Provider]
    # Custom buckets served from another endpoint than the archive's, per provider.
    source_buckets: dict[str, SourceBucket] = field(default_factory=dict)
    clock: Callable[[], datetime] = utcnow
    dry_run: bool = False
    # Shared coordination: the sweep leases and the rate limits of every process and host,
    # when [broker] url names a Redis (shared_redis.configured_url); else the ledger's leases.
    redis: redis.Redis | None = None

    @property
    def namespace(self) -> str:
        return f"retention:{self.settings.broker.queue}"

    def sweep_lease(self, provider: str, ttl: timedelta) -> SweepLease:
        owner = new_owner()
        name = f"sweep:{provider}"
        if self.redis is not None:
            return RedisLease(self.redis, namespace=self.namespace, name=name, owner=owner, ttl=ttl)
        return LedgerLease(self.ledger, name=name, owner=owner, ttl=ttl)

    def provider(self, name: str) -> Provider:
        if name not in self.providers:
            self.settings.provider(name)  # raises a ConfigError naming the configured ones
        return self.providers[name]

    def source_bucket(self, name: str) -> SourceBucket:
        """A provider's custom buckets: on their own endpoint, or else the archive's."""
        found = self.source_buckets.get(name)
        return found if found is not None else SourceBucket(self.archive.client, same_endpoint=True)

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()
        self.fetcher.client.close()
        self.ledger.close()
        if self.redis is not None:
            self.redis.close()


def build_runtime(
    settings: Settings,
    *,
    dry_run: bool = False,
    only: Iterable[str] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Runtime:
    register_secrets(settings.secret_values())
    return_large_buffers()
    # A dry run takes no lease and sends nothing: it needs no Redis.
    shared_url = None if dry_run else configured_url(settings)
    shared = None if shared_url is None else connect(shared_url)
    names = list(only) if only is not None else list(settings.providers)
    for name in names:
        settings.provider(name)
    policies = [settings.policy(name) for name in names]
    jobs_at_once = max((p.concurrency for p in policies), default=1)
    s3 = make_s3_client(
        settings.archive,
        max_pool_connections=jobs_at_once * (settings.archive.max_concurrency + 1) + 8,
    )
    ledger = Ledger.open(
        settings.ledger.url, auto_migrate=settings.ledger.auto_migrate, read_only=dry_run
    )
    providers: dict[str, Provider] = {}
    sources: dict[str, SourceBucket] = {}
    for policy in policies:
        provider_settings = settings.provider(policy.name)
        limiter = RateLimiter(
            policy.rate_limit, f"{settings.broker.queue}:{policy.name}", shared_url or "memory://"
        )
        providers[policy.name] = build_provider(policy.name, provider_settings, limiter=limiter)
        endpoint = getattr(provider_settings, "custom_bucket_endpoint_url", None)
        if endpoint and endpoint != settings.archive.endpoint_url:
            client = make_s3_client(settings.archive, endpoint_url=endpoint)
            sources[policy.name] = SourceBucket(client, same_endpoint=False)
    return Runtime(
        settings=settings,
        ledger=ledger,
        archive=Archive(s3, settings.archive),
        fetcher=Fetcher(make_download_client(settings.downloads), settings.downloads),
        providers=providers,
        source_buckets=sources,
        clock=clock,
        dry_run=dry_run,
        redis=shared,
    )


_lock = threading.Lock()
# The runtime of this process, keyed by pid so a forked child never uses its parent's.
_runtimes: dict[int, Runtime] = {}


def process_runtime(load: Callable[[], Settings]) -> Runtime:
    """The runtime of this process, built on first use (after any fork)."""
    pid = os.getpid()
    with _lock:
        if pid not in _runtimes:
            _runtimes.clear()
            _runtimes[pid] = build_runtime(load())
        return _runtimes[pid]


def reset_process_runtime() -> None:
    with _lock:
        runtime = _runtimes.pop(os.getpid(), None)
        _runtimes.clear()
    if runtime is not None:
        runtime.close()
