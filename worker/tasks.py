"""Thin Celery tasks over the pipeline: parse arguments, call the same functions the CLI does."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.bootstrap import Runtime, process_runtime
from worker.celery_app import app, job_time_limits, schedule_of, shortest_period, sweep_lease_ttl
from worker.pipeline import process_job, sweep_provider
from worker.settings import load_settings

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
    policy = rt.settings.policy(provider)
    period = shortest_period(schedule_of(policy.schedule))
    soft, _hard = job_time_limits(rt.settings)

    def dispatch(job_id: str) -> None:
        # A job task left in the queue longer than a period is superseded by the next sweep.
        process_job_task.apply_async(
            (provider, job_id),
            queue=rt.settings.broker.queue,
            expires=max(period.total_seconds(), soft),
        )

    longest = timedelta(seconds=rt.settings.worker.sweep_lease_seconds)
    report = sweep_provider(
        rt, provider, dispatch=dispatch, lease_ttl=sweep_lease_ttl(period, longest)
    )
    return report.summary()


@app.task(
    name="retention.process_job",
    autoretry_for=TRANSIENT_INFRA,
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=5,
)
def process_job_task(provider: str, job_id: str) -> dict[str, Any]:
    result = process_job(runtime(), provider, job_id)
    return {"provider": provider, "job_id": job_id, "outcome": result.outcome.value}
