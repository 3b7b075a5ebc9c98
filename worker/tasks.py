"""Thin Celery tasks over the pipeline: parse arguments, call the same functions the CLI does."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.bootstrap import Runtime, process_runtime
from worker.celery_app import app, schedule_of, shortest_period, sweep_lease_ttl
from worker.job import process_job
from worker.settings import load_settings
from worker.sweep import Dispatch, sweep_provider

# The ledger or the broker being briefly unreachable is worth a retry of the task itself;
# a provider's or the archive's errors are handled per job in the ledger instead.
TRANSIENT_INFRA = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    RedisConnectionError,
    RedisTimeoutError,
)


def runtime() -> Runtime:
    return process_runtime(load_settings)


@app.task(
    name="retention.sweep",
    autoretry_for=TRANSIENT_INFRA,
    retry_backoff=True,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=3,
    soft_time_limit=1800,
    time_limit=1900,
)
def sweep(provider: str) -> dict[str, Any]:
    rt = runtime()
    period = shortest_period(schedule_of(rt.settings.policy(provider).schedule))
    longest = timedelta(seconds=rt.settings.worker.sweep_lease_seconds)
    report = sweep_provider(
        rt,
        provider,
        dispatch=job_dispatcher(rt, provider, period),
        lease_ttl=sweep_lease_ttl(period, longest),
    )
    return report.summary().to_dict()


def job_dispatcher(rt: Runtime, provider: str, period: timedelta) -> Dispatch:
    """Fan a sweep's jobs out as ``retention.process_job`` tasks, each with the sweep's
    delete budget. A task left in the queue longer than one schedule period expires: the
    next sweep dispatches the job again if it still needs it."""

    def dispatch(job_id: str, budget: str | None) -> None:
        process_job_task.apply_async(
            (provider, job_id),
            {"budget": budget},
            queue=rt.settings.broker.queue,
            expires=period.total_seconds(),
        )

    return dispatch


@app.task(
    name="retention.process_job",
    autoretry_for=TRANSIENT_INFRA,
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=5,
)
def process_job_task(provider: str, job_id: str, budget: str | None = None) -> dict[str, Any]:
    """One job; ``budget`` is the dispatching sweep's delete budget (max_deletes_per_sweep)."""
    result = process_job(runtime(), provider, job_id, budget=budget)
    return {"provider": provider, "job_id": job_id, "outcome": result.outcome.value}
