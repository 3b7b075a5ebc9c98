"""Thin Celery tasks over the pipeline: parse arguments, call the same functions the CLI does."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.bootstrap import Runtime, process_runtime
from worker.celery_app import app, sweep_lease_ttl
from worker.errors import StoreUnavailable, TrackRefused
from worker.job import process_job
from worker.logging import get_logger
from worker.metrics import recorders
from worker.schedules import schedule_of, shortest_period
from worker.scrub import scrub
from worker.settings import load_settings
from worker.sweep import Dispatch, sweep_provider
from worker.tracking import TASK_NAME as TRACK_TASK
from worker.tracking import parse_request, track_jobs

if TYPE_CHECKING:
    from celery import Task

log = get_logger(__name__)
# A scrub of a damaged archive can find every file: the log names this many, the count all.
SCRUB_FINDINGS_LOGGED = 100

# The ledger or the broker being briefly unreachable is worth a retry of the task itself;
# a provider's or the archive's errors are handled per job in the ledger instead. The worker
# translates the ledger's and Redis's errors into StoreUnavailable where it uses them; the
# libraries' own are kept for what it does not (Celery's result backend, say).
TRANSIENT_INFRA = (
    StoreUnavailable,
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
    if report.outage is not None:
        # Redis or the ledger went away: the sweep stopped, as a CLI sweep does; it is tried
        # again within minutes (autoretry_for) rather than at its next scheduled time.
        raise StoreUnavailable(report.outage, provider=provider)
    return report.summary().to_dict()


def job_dispatcher(rt: Runtime, provider: str, period: timedelta) -> Dispatch:
    """Fan a sweep's jobs out as ``retention.process_job`` tasks, each with the sweep's
    delete budget. A task left in the queue longer than one schedule period expires: the
    next sweep dispatches the job again if it still needs it."""

    def dispatch(job_id: str, budget: str | None) -> None:
        # Jobs go to the jobs queue, [broker] queue; the sweep itself came from the sweeps
        # queue, which a backlog of these never holds up.
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


@app.task(
    name="retention.scrub",
    autoretry_for=TRANSIENT_INFRA,
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=3,
)
def scrub_task(read_fraction: float = 0.0) -> dict[str, Any]:
    """`retention scrub` of the whole archive, from beat (weekly): every archived job's
    manifest against the ledger and each file by HEAD; ``read_fraction`` of them read back.

    Its time limits are the app's, a job's: the visibility timeout is derived from them, so
    a long scrub is never handed to a second worker while it runs. A scrub that does not
    finish records nothing, and the dashboard's "last scrub" shows it.
    """
    rt = runtime()
    report = scrub(rt.archive, rt.ledger, read_fraction=read_fraction)
    recorders.record_scrub(findings=len(report.findings))
    for finding in report.findings[:SCRUB_FINDINGS_LOGGED]:
        log.warning(
            "scrub_finding",
            provider=finding.provider,
            job_id=finding.job_id,
            key=finding.key,
            problem=finding.problem,
        )
    summary = {
        "jobs": report.jobs,
        "files": report.files,
        "read": report.read,
        "bytes_read": report.bytes_read,
        "cold_skipped": report.cold_skipped,
        "findings": len(report.findings),
    }
    log.info("scrub_finished", **summary)
    return summary


@app.task(
    name=TRACK_TASK,
    bind=True,
    autoretry_for=TRANSIENT_INFRA,
    retry_backoff=True,
    retry_backoff_max=600,
    retry_jitter=True,
    # Retried for as long as the ledger is out of reach: an id lost here is a job the worker
    # never hears of again (its provider has no listing), left at the provider for good.
    max_retries=None,
    # A refusal is the caller's to fix, not the worker's failure: Celery logs it in one line,
    # without a traceback, and a client waiting on the result gets TrackRefused and its text.
    throws=(TrackRefused,),
    # Kept, unlike every other task's, so an application may wait for the answer.
    ignore_result=False,
    # At least once: a message whose process died under it (OOM, kill -9) goes back to the
    # queue, where the app's setting would acknowledge it (that suits the other tasks, whose
    # jobs the next sweep finds in the ledger; a lost track has nothing to find it again).
    # Idempotent, and at most 1000 ids, so running it again is harmless and cheap.
    reject_on_worker_lost=True,
)
def track_task(
    self: Task[Any, Any],
    /,
    provider: object = None,
    job_ids: object = None,
    *extra: object,
    **options: object,
) -> dict[str, Any]:
    """``send_task("retention.track", args=[provider, [job_id, ...]], kwargs={...})`` from
    any Celery client: record the ids in the ledger, as `retention track` does
    (``worker.tracking`` says what is accepted). Returns what changed; refuses a request it
    cannot take whole with TrackRefused, recording nothing."""
    try:
        request = parse_request(provider, job_ids, extra, options)
        rt = runtime()
        changed = track_jobs(
            rt.settings,
            rt.ledger,
            request,
            now=rt.clock(),
            detail={"via": TRACK_TASK, "task_id": self.request.id},
        )
    except TrackRefused as exc:
        log.warning("track_refused", provider=exc.provider, error=str(exc))
        raise
    new = [job_id for batch in changed for job_id in batch.added]
    held = [job_id for batch in changed for job_id in batch.held]
    log.info(
        "jobs_tracked",
        provider=request.provider,
        ids=len(request.job_ids),
        new=len(new),
        held=len(held),
    )
    return {
        "message_type": "track",
        "provider": request.provider,
        "tracking": len(request.job_ids),
        "new": new,
        "held": held,
    }
