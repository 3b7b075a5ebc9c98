"""Builds the real clients once per process: ledger engine, S3 client, HTTP clients.

Never at import time: Celery's prefork pool forks after importing the app, and a client
(or a database pool) created before the fork would be shared by every child.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from worker.archive import Archive, make_s3_client
from worker.domain import utcnow
from worker.fetch import Fetcher, make_download_client
from worker.ledger import Ledger, actor_name
from worker.locks import Lease, LedgerLease, RedisLease
from worker.logging import get_logger, register_secrets
from worker.providers import build_provider
from worker.providers.base import Provider, RateLimiter
from worker.settings import Settings

if TYPE_CHECKING:
    import redis
    from mypy_boto3_s3 import S3Client

log = get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    ledger: Ledger
    archive: Archive
    fetcher: Fetcher
    providers: dict[str, Provider]
    # Clients for custom buckets served from another endpoint than the archive's.
    source_clients: dict[str, S3Client] = field(default_factory=dict)
    clock: Callable[[], datetime] = utcnow
    dry_run: bool = False
    # Shared coordination: the sweep leases and the rate limits of every process and host.
    redis: redis.Redis | None = None

    @property
    def namespace(self) -> str:
        return f"retention:{self.settings.broker.queue}"

    def sweep_lease(self, provider: str, ttl: timedelta) -> Lease:
        owner = f"{actor_name()}:{uuid.uuid4().hex[:12]}"
        name = f"sweep:{provider}"
        if self.redis is not None:
            return RedisLease(self.redis, namespace=self.namespace, name=name, owner=owner, ttl=ttl)
        return LedgerLease(self.ledger, name=name, owner=owner, ttl=ttl)

    def provider(self, name: str) -> Provider:
        if name not in self.providers:
            self.settings.provider(name)  # raises a ConfigError naming the configured ones
        return self.providers[name]

    def source_client(self, name: str) -> tuple[S3Client, bool]:
        """The client for a provider's custom buckets, and whether it is the archive's own."""
        client = self.source_clients.get(name)
        return (client, False) if client is not None else (self.archive.client, True)

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
    shared = None if dry_run else connect_redis(settings.broker.url)
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
    sources: dict[str, S3Client] = {}
    for policy in policies:
        provider_settings = settings.provider(policy.name)
        limiter = RateLimiter(
            policy.rate_limit,
            f"{settings.broker.queue}:{policy.name}",
            settings.broker.url if shared is not None else "memory://",
        )
        providers[policy.name] = build_provider(policy.name, provider_settings, limiter=limiter)
        endpoint = getattr(provider_settings, "custom_bucket_endpoint_url", None)
        if endpoint and endpoint != settings.archive.endpoint_url:
            sources[policy.name] = make_s3_client(settings.archive, endpoint_url=endpoint)
    return Runtime(
        settings=settings,
        ledger=ledger,
        archive=Archive(s3, settings.archive),
        fetcher=Fetcher(make_download_client(settings.downloads), settings.downloads),
        providers=providers,
        source_clients=sources,
        clock=clock,
        dry_run=dry_run,
        redis=shared,
    )


def connect_redis(url: str) -> redis.Redis | None:
    """A client for the broker's Redis if it answers now; None (and a log line) if not.

    A sweep run by hand needs no broker: without Redis its lease is taken in the ledger and
    its rate limits hold in this process only.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis as redis_lib

    client = redis_lib.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30
    )
    try:
        client.ping()
    except redis_lib.RedisError as exc:
        client.close()
        log.info(
            "broker_unreachable",
            error=type(exc).__name__,
            effect="sweep leases in the ledger, rate limits per process",
        )
        return None
    return client


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
