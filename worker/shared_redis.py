"""Redis as the store the workers share: the sweep leases and the providers' rate limits.

Whether there is one is decided by the configuration alone, never by what answers at the
moment: ``[broker] url``, given and naming Redis. Were it decided by a ping, a worker whose
Redis is down for a moment would take its sweep lease in the ledger while another holds the
Redis one, and two sweeps of one provider would run at once, each with a delete budget of
its own. So a worker whose Redis is configured and unreachable does not sweep: it says so,
and exits 3. A configuration with no ``[broker] url``, or a broker that is not Redis, keeps
the sweep leases in the ledger and the rate limits in each process.

redis-py's connection errors are translated here, at each edge where Redis is used, into
``RedisUnavailable``: it names Redis and where it is (host and port, or the socket's path),
never a password, and a job that meets it is deferred like any transient failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from worker.errors import RedisUnavailable
from worker.redact import REDACTOR

if TYPE_CHECKING:
    import redis

    from worker.settings import Settings

SCHEMES = ("redis://", "rediss://", "unix://")
# Short enough that a job or a sweep meeting a dead Redis gives up within seconds; a live
# Redis answers these commands in well under a millisecond.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 10.0


def configured_url(settings: Settings) -> str | None:
    """The Redis URL of ``[broker] url`` if the configuration gives one, else None.

    The key's default (a Redis on 127.0.0.1) is Celery's broker when nothing is said; it is
    not a decision to coordinate sweeps there, and a sweep run by hand needs no broker.
    """
    broker = settings.broker
    if "url" not in broker.model_fields_set or not broker.url.startswith(SCHEMES):
        return None
    return broker.url


def connect(url: str) -> redis.Redis:
    """A client for the Redis at ``url``. It connects on first use, and again after an
    outage, so nothing is asked of Redis here."""
    import redis as redis_lib

    return redis_lib.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        health_check_interval=30,
    )


def address_of_url(url: str) -> str:
    """Where the Redis at ``url`` is, as the messages name it: never its password."""
    parts = urlsplit(url)
    if parts.scheme.endswith("unix"):
        return _address({"path": parts.path})
    try:
        port = parts.port
    except ValueError:  # redis-py refuses it too, and says so
        port = None
    return _address({"host": parts.hostname, "port": port})


def address_of(client: redis.Redis) -> str:
    return _address(client.connection_pool.connection_kwargs)


def _address(kwargs: dict[str, Any]) -> str:
    if kwargs.get("path"):
        return str(kwargs["path"])
    host = str(kwargs.get("host") or "localhost")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{host}:{kwargs.get('port') or 6379}"


@contextlib.contextmanager
def redis_errors(address: str, action: str) -> Iterator[None]:
    """Translate redis-py's ConnectionError and TimeoutError into RedisUnavailable.

    A wrong password is a ConnectionError too (AuthenticationError): the message says which
    it was. Other errors (a script Redis refuses) are bugs and pass unchanged.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        detail = REDACTOR.scrub(str(exc).strip()) or "no detail"
        raise RedisUnavailable(
            f"Redis at {address} cannot be reached while {action} ({type(exc).__name__}: {detail})",
            hint="Check that Redis is up and that [broker] url names it; the work is tried again "
            "on the next sweep",
        ) from exc
