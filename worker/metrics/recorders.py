"""Metrics recorded where things happen: jobs, sweeps, scrubs, provider requests, S3 errors.

A leaf: the archive, the adapters, the job and the sweep record through it, and it imports
nothing of the worker's but the job's result type. prometheus-client is imported when the
first metric is used, not before: it decides then where to keep values (in memory, or in
``PROMETHEUS_MULTIPROC_DIR`` for the worker's main process to serve, ``serving``).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

    from worker.outcomes import JobResult

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Written into the multiprocess directory by the worker's main process: its pid. Only that
# process and its children record into the directory (see ``_record_in_process``).
OWNER_FILE = "served-by"

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
# A provider API answer: tens of milliseconds up to its timeout (30 s; Loom's 60 s).
_REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_PROVIDER = ("provider",)


# Each metric is made when ``_Metrics()`` is first built (``metrics``), so that
# prometheus-client is imported then and not before.


def _counter(
    name: str, documentation: str, labels: Sequence[str] = _PROVIDER
) -> Callable[[], Counter]:
    def make() -> Counter:
        from prometheus_client import Counter

        return Counter(name, documentation, labels)

    return make


def _histogram(
    name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
) -> Callable[[], Histogram]:
    def make() -> Histogram:
        from prometheus_client import Histogram

        return Histogram(name, documentation, labels, buckets=buckets)

    return make


def _gauge(
    name: str, documentation: str, labels: Sequence[str], mode: Literal["max", "mostrecent"]
) -> Callable[[], Gauge]:
    def make() -> Gauge:
        from prometheus_client import Gauge

        return Gauge(name, documentation, labels, multiprocess_mode=mode)

    return make


@dataclass(frozen=True)
class _Metrics:
    archived: Counter = field(
        default_factory=_counter(
            "retention_jobs_archived",
            "Jobs archived: files stored, verified and listed in a manifest",
        )
    )
    deleted: Counter = field(
        default_factory=_counter(
            "retention_jobs_deleted",
            "Jobs deleted at the provider after their archive was verified",
        )
    )
    deferred: Counter = field(
        default_factory=_counter(
            "retention_jobs_deferred", "Job attempts deferred by a transient failure"
        )
    )
    failed: Counter = field(
        default_factory=_counter(
            "retention_jobs_failed", "Jobs that failed permanently and wait for a person"
        )
    )
    kept: Counter = field(
        default_factory=_counter(
            "retention_jobs_kept",
            "Jobs kept at the provider because the worker cannot prove it holds "
            "everything the delete would destroy, or a policy keeps them",
            ["provider", "reason"],
        )
    )
    stopped: Counter = field(
        default_factory=_counter(
            "retention_jobs_stopped", "Archived jobs whose delete max_deletes_per_sweep held back"
        )
    )
    closed_with_remains: Counter = field(
        default_factory=_counter(
            "retention_jobs_closed_with_remains",
            "Jobs closed after a partial delete, because the provider then answered "
            "that the job was gone: what the partial delete left may remain there",
        )
    )
    archived_bytes: Counter = field(
        default_factory=_counter("retention_archived_bytes", "Bytes stored in the archive")
    )
    due_to_deleted: Histogram = field(
        default_factory=_histogram(
            "retention_due_to_deleted_seconds",
            "Seconds from a job becoming due to its delete (the retention SLI)",
            _PROVIDER,
            _DUE_BUCKETS,
        )
    )
    sweep_duration: Histogram = field(
        default_factory=_histogram(
            "retention_sweep_duration_seconds", "Seconds a sweep took", _PROVIDER, _SWEEP_BUCKETS
        )
    )
    # Across processes the newest value is the one that matters.
    last_success: Gauge = field(
        default_factory=_gauge(
            "retention_last_successful_sweep_timestamp_seconds",
            "Unix time of the provider's last sweep that completed its listing",
            _PROVIDER,
            "max",
        )
    )
    last_scrub: Gauge = field(
        default_factory=_gauge(
            "retention_last_scrub_timestamp_seconds",
            "Unix time the last `retention scrub` of the whole archive finished",
            (),
            "max",
        )
    )
    last_clean_scrub: Gauge = field(
        default_factory=_gauge(
            "retention_last_clean_scrub_timestamp_seconds",
            "Unix time of the last `retention scrub` that found nothing wrong",
            (),
            "max",
        )
    )
    scrub_findings: Gauge = field(
        default_factory=_gauge(
            "retention_scrub_findings",
            "Damaged or missing archive files the last scrub found",
            (),
            "mostrecent",
        )
    )
    provider_requests: Counter = field(
        default_factory=_counter(
            "retention_provider_requests",
            "Requests to a provider's API by method and outcome: the status class "
            "(2xx...5xx), or timeout or network when no answer came",
            ["provider", "method", "outcome"],
        )
    )
    provider_rate_limited: Counter = field(
        default_factory=_counter(
            "retention_provider_rate_limited", "Answers 429 Too Many Requests from a provider's API"
        )
    )
    provider_latency: Histogram = field(
        default_factory=_histogram(
            "retention_provider_request_duration_seconds",
            "Seconds from sending a request to a provider's API to reading its answer",
            ["provider", "method"],
            _REQUEST_BUCKETS,
        )
    )
    s3_errors: Counter = field(
        default_factory=_counter(
            "retention_s3_errors",
            "Failed S3 requests, after botocore's own retries, by S3 operation and error code",
            ["operation", "code"],
        )
    )


_lock = threading.Lock()
_metrics: _Metrics | None = None


def _record_in_process() -> bool:
    """True when this process must keep its metrics in memory, not in the multiprocess
    directory: it is neither the worker's main process that serves the directory nor one of
    its children. A `retention sweep` run by hand inside a worker's container inherits the
    variable; its counts would otherwise be served as the worker's, and on a read-only image
    with nothing mounted there it could not record at all."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return False
    try:
        owner = int((Path(directory) / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return True
    return owner not in (os.getpid(), os.getppid())


def metrics() -> _Metrics:
    """This process's metrics, created on first use."""
    global _metrics  # noqa: PLW0603 - one set of metrics per process, created on first use
    with _lock:
        if _metrics is None:
            if "prometheus_client" not in sys.modules and _record_in_process():
                os.environ.pop(MULTIPROC_ENV, None)
            _metrics = _Metrics()
        return _metrics


def record_job(result: JobResult, *, due_seconds: float | None = None) -> None:
    """Count one job's outcome."""
    m = metrics()
    provider = result.provider
    if result.archived:
        m.archived.labels(provider).inc()
        m.archived_bytes.labels(provider).inc(result.bytes)
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


def record_closed_with_remains(provider: str) -> None:
    """A job closed as gone after a partial delete (its receipt says what may remain)."""
    metrics().closed_with_remains.labels(provider).inc()


def record_sweep(provider: str, *, seconds: float, succeeded: bool) -> None:
    m = metrics()
    m.sweep_duration.labels(provider).observe(seconds)
    if succeeded:
        m.last_success.labels(provider).set(time.time())


# Whether this process ran a scrub: its scrub gauges (0 until then) are exported only if so,
# so a `retention sweep` never replaces the findings an earlier scrub exported.
_scrubbed = False
SCRUB_GAUGES = (
    "retention_last_scrub_timestamp_seconds",
    "retention_last_clean_scrub_timestamp_seconds",
    "retention_scrub_findings",
)


def scrubbed_here() -> bool:
    """Whether this process ran a scrub to the end (``record_scrub``)."""
    return _scrubbed


def record_scrub(*, findings: int) -> None:
    """A scrub ran to the end: how much it found, and when the archive was last all clean."""
    global _scrubbed  # noqa: PLW0603 - a fact about this process
    _scrubbed = True
    m = metrics()
    now = time.time()
    m.scrub_findings.set(findings)
    m.last_scrub.set(now)
    if findings == 0:
        m.last_clean_scrub.set(now)


def outcome_class(status: int | None, error: str | None = None) -> str:
    """A request's outcome as a label: its status class, or why there was no answer."""
    if status is None:
        return error or "network"
    return f"{status // 100}xx"


def record_provider_request(
    provider: str,
    method: str,
    *,
    status: int | None,
    error: str | None = None,
    seconds: float | None = None,
) -> None:
    """One request to a provider's API: ``status`` if an answer came, else ``error``
    ("timeout" or "network"); ``seconds`` from sending it to reading the answer."""
    m = metrics()
    m.provider_requests.labels(provider, method, outcome_class(status, error)).inc()
    if status == 429:
        m.provider_rate_limited.labels(provider).inc()
    if seconds is not None:
        m.provider_latency.labels(provider, method).observe(seconds)


def record_s3_error(operation: str, code: str) -> None:
    metrics().s3_errors.labels(operation or "unknown", code or "unknown").inc()


# -- labels for the S3 error counter --------------------------------------------------------


def operation_of(exc: BaseException, action: str) -> str:
    """The S3 operation a botocore error names (``PutObject``...), or else our own words for
    it ("uploading part of" -> ``uploading_part_of``), numbers left out."""
    name = getattr(exc, "operation_name", None)
    if isinstance(name, str) and name:
        return name
    return re.sub(r"[^a-z]+", "_", re.sub(r"\d+", "", action.lower())).strip("_") or "unknown"
