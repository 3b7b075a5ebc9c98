"""`retention check`: is everything this configuration needs reachable and right?

One line per check: the configuration, the archive bucket (and its Object Lock), the ledger
(and whether migrations are pending), the broker, and each provider's credentials with the
cheapest authenticated request it has. Every failure says what is wrong and what to do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.errors import WorkerError
from worker.settings import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _shown_url(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"


def _attempt(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, True, probe())
    except WorkerError as exc:
        return Check(name, False, str(exc))
    except Exception as exc:  # a library's own error: say which, without a traceback
        from worker.redact import REDACTOR

        return Check(name, False, REDACTOR.scrub(f"{type(exc).__name__}: {exc}"))


def run_checks(
    settings: Settings, source: Path | str, *, providers: bool = True
) -> Iterator[Check]:
    names = ", ".join(settings.providers) or "none"
    yield Check("config", True, f"{source}: providers {names}")
    yield _attempt("archive", lambda: _archive(settings))
    yield _attempt("ledger", lambda: _ledger(settings))
    yield _attempt("broker", lambda: _broker(settings))
    if providers:
        for name in settings.providers:
            yield _attempt(f"provider {name}", functools.partial(_provider, settings, name))


def _archive(settings: Settings) -> str:
    from worker.archive import Archive, make_s3_client

    archive = Archive(make_s3_client(settings.archive), settings.archive)
    return f"s3://{settings.archive.bucket} reachable; {archive.check_bucket()}"


def _ledger(settings: Settings) -> str:
    from worker.errors import LedgerError
    from worker.ledger import SCHEMA_REVISION, Ledger, make_engine

    url = settings.ledger.url
    engine = make_engine(url)
    try:
        revision = Ledger(engine).schema_revision()
    except Exception as exc:
        raise LedgerError(
            f"cannot open the ledger at {_shown_url(url)} ({type(exc).__name__})",
            hint="Check [ledger] url, the database server and its credentials",
        ) from None
    finally:
        engine.dispose()
    if revision == SCHEMA_REVISION:
        return f"{_shown_url(url)}: schema {revision}, no migrations pending"
    pending = (
        f"{_shown_url(url)}: schema {revision or 'empty'}, migrations pending to {SCHEMA_REVISION}"
    )
    if settings.ledger.auto_migrate:
        return f"{pending} (applied automatically at first use)"
    raise LedgerError(pending, hint="Run `retention migrate`")


def _broker(settings: Settings) -> str:
    import redis

    url = settings.broker.url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return f"{_shown_url(url)}: not Redis; not checked"
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise WorkerError(
            f"cannot reach the broker at {_shown_url(url)} ({type(exc).__name__})",
            hint="Only the Celery worker and `sweep --enqueue` need it; check [broker] url",
        ) from None
    finally:
        client.close()
    return f"{_shown_url(url)} answers (queue {settings.broker.queue})"


def _provider(settings: Settings, name: str) -> str:
    from worker.providers import build_provider
    from worker.redact import register_secrets

    register_secrets(settings.secret_values())
    config = settings.provider(name)
    provider = build_provider(name, config)
    try:
        provider.check_credentials()
    finally:
        provider.close()
    return f"{config.type} at {config.base_url}: credentials accepted"
