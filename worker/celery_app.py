"""The Celery app: ``celery -A worker.celery_app worker --beat``.

Beat enqueues ``retention.sweep`` for each provider on that provider's cron schedule, and
``retention.scrub`` weekly. A sweep folds the provider's listing into the ledger and fans out
one ``retention.process_job`` per due job, so the work spreads over every worker process on
every host. There is no chord or group on the delete path: each job's state lives in the
ledger, and the next sweep reconciles whatever a lost task left behind.

Two queues: jobs in ``[broker] queue``, sweeps and scrubs in ``{queue}.sweeps``, so a sweep
never waits behind a backlog of jobs. A worker started without ``-Q`` consumes both.

When a worker imports this module it reads the configuration named by ``RETENTION_CONFIG``
(only the file; no client is built until a task runs in its own process, after the fork).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from worker import liveness, tracing
from worker.errors import ConfigError
from worker.liveness import HEARTBEAT_DIR, HEARTBEAT_SECONDS
from worker.logging import bind, clear
from worker.logsetup import configure_logging
from worker.redact import register_secrets
from worker.schedules import schedule_of, schedule_problems, shortest_period
from worker.settings import CONFIG_ENV, Settings, load_settings

app = Celery("retention", include=["worker.tasks"])
# The consumer renews the worker's heartbeat from its own event loop ([worker] heartbeat_dir).
app.steps["consumer"].add(liveness.ConsumerHeartbeat)

# Settings that hold whatever the configuration says. Each has a reason.
app.conf.update(
    # Tasks are idempotent (every step is), so a task whose worker died mid-way is better
    # run again than lost: acknowledge after the task returns, not when it starts.
    task_acks_late=True,
    # With late acks, prefetching more than one message per process would let a slow job
    # hold others hostage and lose them all to one crash.
    worker_prefetch_multiplier=1,
    # A task killed by a signal or OOM is acknowledged, not requeued in a loop; the next
    # sweep finds the job in the ledger and carries on (Celery #1628's crash-loop warning).
    task_reject_on_worker_lost=False,
    # On broker connection loss, stop long tasks rather than let the redelivered copy run in
    # parallel with them; the job's claim makes the duplicate a no-op anyway.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    # Results are not used: outcomes live in the ledger (retention.track's answer aside).
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    timezone="UTC",
    enable_utc=True,
    # Our own logging setup; Celery must not replace the root logger's handlers.
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    # Recycle children: a slow leak in a library must not grow a worker forever.
    worker_max_tasks_per_child=1000,
    worker_max_memory_per_child=512 * 1024,  # KiB
    # Task events (sent, started, succeeded...) go to the broker for Flower and
    # celery-exporter; without them those tools see the workers but none of their tasks.
    # Nothing stores them if no monitor listens (a Redis PUBLISH to no one).
    worker_send_task_events=True,
    task_send_sent_event=True,
)

# The weekly re-verification of the whole archive (`retention scrub` without --read-data):
# Sunday 04:00 UTC, away from the usual business-hours sweeps. HEAD requests only.
SCRUB_SCHEDULE = "0 4 * * 0"
# Brokers whose Redis can hold a task's result too.
REDIS = ("redis://", "rediss://")


def sweep_lease_ttl(period: timedelta, longest: timedelta = timedelta(seconds=30)) -> timedelta:
    """Never longer than ``longest`` (a heartbeat renews it), and shorter than the schedule
    period (GitLab: a 6 min lease under a 7 min cron), so a stuck sweep never overlaps the
    next one."""
    return min(longest, max(timedelta(seconds=5), period - timedelta(seconds=30)))


def job_time_limits(settings: Settings) -> tuple[float, float]:
    """(soft, hard) seconds for one job: room for the longest download plus the rest."""
    soft = settings.downloads.max_seconds + 600
    return soft, soft + 120


def sweep_queue(settings: Settings) -> str:
    """Sweeps' (and scrubs') own queue: a sweep must never wait behind a backlog of jobs,
    which can be hours long after an outage, or the dead-man's switch pages for nothing."""
    return f"{settings.broker.queue}.sweeps"


def celery_config(settings: Settings) -> dict[str, Any]:
    soft, hard = job_time_limits(settings)
    jobs, sweeps = settings.broker.queue, sweep_queue(settings)
    # A message not acknowledged within the visibility timeout is delivered again. It must
    # outlast the longest task (its hard limit) plus the longest retry delay, or a running
    # job is handed to a second worker (kombu #337, celery #5935).
    visibility = hard + 600 + 3600
    problems = schedule_problems(settings)
    if problems:
        # Every schedule beat cannot run, by its key, rather than the first one's expression.
        lines = ["the configuration has schedules Celery beat cannot run:"]
        raise ConfigError("\n".join([*lines, *(f"  {p}" for p in problems)]))
    beat: dict[str, Any] = {}
    for name in settings.providers:
        policy = settings.policy(name)
        schedule = schedule_of(policy.schedule)
        period = shortest_period(schedule)
        beat[f"retention-sweep-{name}"] = {
            "task": "retention.sweep",
            "schedule": schedule,
            "args": (name,),
            # A sweep still queued when the next one is due is stale: drop it, don't bunch.
            "options": {"expires": period.total_seconds(), "queue": sweeps},
        }
    beat["retention-scrub"] = {
        "task": "retention.scrub",
        "schedule": schedule_of(SCRUB_SCHEDULE),
        # A scrub that could not start within a day waits for next week's.
        "options": {"expires": 86400, "queue": sweeps},
    }
    return {
        "broker_url": settings.broker.url,
        "task_default_queue": jobs,
        # Declared, so that `celery worker` without -Q consumes both; each queue's exchange
        # and routing key are its name, as Celery would create them on first use.
        "task_queues": tuple(
            Queue(name, Exchange(name), routing_key=name) for name in (jobs, sweeps)
        ),
        # Whoever sends a sweep or a scrub without naming a queue (`celery call`, Flower).
        "task_routes": {
            "retention.sweep": {"queue": sweeps},
            "retention.scrub": {"queue": sweeps},
            "retention.process_job": {"queue": jobs},
            # Applications send it to [broker] queue by name (worker.tracking).
            "retention.track": {"queue": jobs},
        },
        # Only retention.track keeps its result (an application may wait for the answer);
        # in the broker's Redis, for a day (Celery's result_expires).
        "result_backend": settings.broker.url if settings.broker.url.startswith(REDIS) else None,
        # kombu reads the timeout from each of these; with several apps on one Redis the
        # shortest wins, so all three are set (celery #7651).
        "broker_transport_options": {"visibility_timeout": visibility},
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "visibility_timeout": visibility,
        # Every task has limits: the soft one lets a job record why it stopped, the hard one
        # replaces a child that hangs in C code.
        "task_soft_time_limit": soft,
        "task_time_limit": hard,
        # A time-boxed warm shutdown a few seconds inside the orchestrator's grace period:
        # running jobs finish a step, and unacknowledged messages go back to the queue before
        # SIGKILL. With REMAP_SIGTERM=SIGQUIT (set in deploy/), SIGTERM starts it.
        "worker_soft_shutdown_timeout": max(1.0, settings.worker.grace_period_seconds - 5),
        # ...but only for a worker that has jobs running: an idle one stops at once, rather
        # than sleep the whole timeout on every rollout. The messages it holds unstarted
        # (retries waiting for their countdown) go back to the queue as the connection
        # closes (kombu's Redis transport restores unacknowledged messages at shutdown;
        # tests/e2e/test_liveness.py).
        "worker_enable_soft_shutdown_on_idle": False,
        "beat_schedule": beat,
        # Liveness (worker.liveness): the consumer and beat's scheduler renew their heartbeat
        # files; beat ticks at least once a heartbeat period, however far its next sweep.
        HEARTBEAT_DIR: settings.worker.heartbeat_dir,
        HEARTBEAT_SECONDS: settings.worker.heartbeat_seconds,
        "beat_scheduler": "worker.liveness:HeartbeatScheduler",
        "beat_max_loop_interval": settings.worker.heartbeat_seconds,
    }


def configure_app(settings: Settings) -> Celery:
    register_secrets(settings.secret_values())
    app.conf.update(celery_config(settings))
    return app


def _configure_from_environment() -> None:
    if not os.environ.get(CONFIG_ENV):
        return
    try:
        configure_app(load_settings())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_configure_from_environment()


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging()


@signals.task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    clear()
    bind(task_id=task_id, task_name=getattr(task, "name", None))


@signals.task_postrun.connect
def _unbind_task(**_: Any) -> None:
    clear()


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    # In the worker's main process, before it forks: the children inherit the metrics
    # directory, and this process serves what they all record.
    if not os.environ.get(CONFIG_ENV):
        return
    settings = load_settings()
    if not settings.metrics.enabled:
        return
    from worker.metrics import serving

    # Celery sets logging up after this signal: ours now, so an error here is not lost.
    configure_logging()
    serving.prepare_multiprocess_dir()
    serving.serve(settings)


@signals.worker_init.connect
def _heartbeat_starting(**_: Any) -> None:
    liveness.worker_starting(app)


@signals.worker_shutting_down.connect
def _heartbeat_stopping(**_: Any) -> None:
    # In the main process, from the signal handler that starts the shutdown: the probe then
    # leaves the worker its grace period (a soft shutdown keeps the loop busy with its jobs).
    liveness.worker_stopping(app)


@signals.worker_process_shutdown.connect
def _forget_process(pid: int | None = None, **_: Any) -> None:
    from worker.metrics import serving

    # Spans the child has not exported yet go before it is recycled (max_tasks_per_child).
    tracing.flush()
    serving.process_exited(pid or os.getpid())


@signals.worker_process_init.connect
def _fresh_process(**_: Any) -> None:
    # Clients from the parent (if any were built) must not be shared across the fork.
    from worker.bootstrap import reset_process_runtime

    reset_process_runtime()
    # Traces, when the OTEL_* variables ask for them: set up in each child, after the fork
    # (the SDK's export thread does not survive one), before its clients are built.
    tracing.configure("retention-worker")


@signals.beat_init.connect
def _trace_beat(**_: Any) -> None:
    # Beat's send of each sweep starts the sweep's trace; the task's headers carry it on.
    tracing.configure("retention-beat")
