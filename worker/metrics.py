"""Prometheus metrics, correct under Celery's prefork pool.

Every worker process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``; the worker's
main process serves them merged on ``[metrics] port`` (prometheus-client's multiprocess mode).
prometheus-client decides how to store values when it is first imported, so this module
imports it only when a metric is first used: ``serve`` (in the worker's main process, before
it forks its children) sets the directory up first. A `retention sweep` run by hand records
into its own process and serves nothing.

    retention_jobs_{archived,deleted,deferred,failed}_total{provider}
    retention_jobs_kept_total{provider,reason}          kept at the provider on purpose
    retention_jobs_stopped_total{provider}              deletes held back by the brake
    retention_bytes_archived_total{provider}
    retention_due_to_deleted_seconds{provider}          histogram: the retention SLI
    retention_sweep_duration_seconds{provider}          histogram
    retention_last_successful_sweep_timestamp_seconds{provider}
    retention_sweep_period_seconds{provider}            for the dead-man's switch
    retention_last_clean_scrub_timestamp_seconds        the archive last re-verified whole
    retention_scrub_findings                            what the last scrub found wrong
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

    from worker.outcomes import JobResult

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# From one minute to a month: the delay between a job becoming due and its delete.
_DUE_BUCKETS = (
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    4 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
)
_SWEEP_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


@dataclass(frozen=True)
class _Metrics:
    archived: Counter
    deleted: Counter
    deferred: Counter
    failed: Counter
    kept: Counter
    stopped: Counter
    bytes_archived: Counter
    due_to_deleted: Histogram
    sweep_duration: Histogram
    last_success: Gauge
    sweep_period: Gauge
    last_clean_scrub: Gauge
    scrub_findings: Gauge


_lock = threading.Lock()
_metrics: _Metrics | None = None


def metrics() -> _Metrics:
    global _metrics  # noqa: PLW0603 - one set of metrics per process, created on first use
    with _lock:
        if _metrics is None:
            from prometheus_client import Counter, Gauge, Histogram

            labels = ["provider"]
            _metrics = _Metrics(
                archived=Counter(
                    "retention_jobs_archived",
                    "Jobs archived: files stored, verified and listed in a manifest",
                    labels,
                ),
                deleted=Counter(
                    "retention_jobs_deleted",
                    "Jobs deleted at the provider after their archive was verified",
                    labels,
                ),
                deferred=Counter(
                    "retention_jobs_deferred",
                    "Job attempts deferred by a transient failure",
                    labels,
                ),
                failed=Counter(
                    "retention_jobs_failed",
                    "Jobs that failed permanently and wait for a person",
                    labels,
                ),
                kept=Counter(
                    "retention_jobs_kept",
                    "Jobs kept at the provider because the worker cannot prove it holds "
                    "everything the delete would destroy, or a policy keeps them",
                    ["provider", "reason"],
                ),
                stopped=Counter(
                    "retention_jobs_stopped",
                    "Archived jobs whose delete max_deletes_per_sweep held back",
                    labels,
                ),
                bytes_archived=Counter(
                    "retention_bytes_archived", "Bytes stored in the archive", labels
                ),
                due_to_deleted=Histogram(
                    "retention_due_to_deleted_seconds",
                    "Seconds from a job becoming due to its delete (the retention SLI)",
                    labels,
                    buckets=_DUE_BUCKETS,
                ),
                sweep_duration=Histogram(
                    "retention_sweep_duration_seconds",
                    "Seconds a sweep took",
                    labels,
                    buckets=_SWEEP_BUCKETS,
                ),
                # Across processes the newest value is the one that matters.
                last_success=Gauge(
                    "retention_last_successful_sweep_timestamp_seconds",
                    "Unix time of the provider's last sweep that completed its listing",
                    labels,
                    multiprocess_mode="max",
                ),
                sweep_period=Gauge(
                    "retention_sweep_period_seconds",
                    "The shortest gap between two scheduled sweeps of the provider",
                    labels,
                    multiprocess_mode="max",
                ),
                last_clean_scrub=Gauge(
                    "retention_last_clean_scrub_timestamp_seconds",
                    "Unix time of the last `retention scrub` that found nothing wrong",
                    multiprocess_mode="max",
                ),
                scrub_findings=Gauge(
                    "retention_scrub_findings",
                    "Damaged or missing archive files the last scrub found",
                    multiprocess_mode="mostrecent",
                ),
            )
        return _metrics


def record_job(result: JobResult, *, due_seconds: float | None = None) -> None:
    """Count one job's outcome."""
    m = metrics()
    provider = result.provider
    if result.archived:
        m.archived.labels(provider).inc()
        m.bytes_archived.labels(provider).inc(result.bytes)
    if result.deleted:
        m.deleted.labels(provider).inc()
        if due_seconds is not None:
            m.due_to_deleted.labels(provider).observe(max(0.0, due_seconds))
    outcome = result.outcome.value
    if outcome == "deferred":
        m.deferred.labels(provider).inc()
    elif outcome == "failed":
        m.failed.labels(provider).inc()
    elif outcome == "kept":
        m.kept.labels(provider, result.kept_reason or "unknown").inc()
    elif outcome == "stopped":
        m.stopped.labels(provider).inc()


def record_sweep(provider: str, *, seconds: float, succeeded: bool) -> None:
    m = metrics()
    m.sweep_duration.labels(provider).observe(seconds)
    if succeeded:
        m.last_success.labels(provider).set(time.time())


def record_scrub(*, findings: int) -> None:
    """A scrub ran to the end: how much it found, and when the archive was last all clean."""
    m = metrics()
    m.scrub_findings.set(findings)
    if findings == 0:
        m.last_clean_scrub.set(time.time())


def record_period(provider: str, seconds: float) -> None:
    metrics().sweep_period.labels(provider).set(seconds)


def prepare_multiprocess_dir() -> Path:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory, before any metric exists.

    Files left by an earlier run of the worker would be counted again, so the directory is
    emptied (prometheus-client's documented practice at start).
    """
    configured = os.environ.get(MULTIPROC_ENV)
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="retention-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_file() and entry.suffix == ".db":
            entry.unlink()
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a metrics endpoint
    """Serve every process's metrics, merged, from this (the worker's main) process."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
    start_http_server(port, addr=address, registry=registry)


def process_exited(pid: int) -> None:
    """Drop a dead child's live-gauge files (the max-mode gauges are kept)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # unannotated
