"""Prometheus metrics, correct under Celery's prefork pool and for `retention sweep` from cron.

Three sources serve one set of names (README, Deployment, "Metrics", lists them all):

* **Recorded** where things happen: jobs, sweeps, provider requests, S3 errors, scrubs. Under
  the worker every process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``, and
  the worker's main process serves them merged on ``[metrics] port`` (prometheus-client's
  multiprocess mode). prometheus-client decides how to store values when it is first
  imported, so this module imports it only when a metric is first used: ``serve`` (in the
  worker's main process, before it forks its children) sets the directory up first.
* **Read from the ledger** by ``GaugeCollector`` in the serving process: jobs by state, held,
  overdue and failed jobs, the oldest overdue job's lateness. Cached for ``[metrics]
  ledger_cache_seconds`` (15) and read again as soon as a sweep ends, so a failed job's alert
  lasts exactly as long as the job is failed, however long ago it failed.
* **Computed from each provider's cron schedule**: the next sweep it calls for after the last
  success, as kube-state-metrics' ``kube_cronjob_next_schedule_time``, so the dead-man's
  switch waits for the schedule's own next run (weekdays only, weekly...), never a fixed gap.

A `retention sweep` run by hand (cron, a Kubernetes CronJob) records into its own process and
serves nothing; ``export_after_command`` then writes the same metrics to node_exporter's
textfile collector and/or a Pushgateway, added to what the previous runs left there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from worker import __version__
from worker.logging import get_logger

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric

    from worker.ledger.queries import ProviderGauges
    from worker.outcomes import JobResult
    from worker.settings import MetricsSettings, Settings

log = get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Written into the multiprocess directory by the worker's main process: its pid. Only that
# process and its children record into the directory (see ``_record_in_process``).
_OWNER_FILE = "served-by"
# Touched when a sweep ends: the ledger changed, the cached gauges are stale.
_CHANGED_FILE = "ledger-changed"
# The ledger gauges are read at most this often per worker (a count over the whole jobs
# table), unless a sweep ended since: [metrics] ledger_cache_seconds.
LEDGER_CACHE_SECONDS = 15.0
# How long a scrape waits for a ledger read before it is served the previous values: the
# probes hit /metrics too, and a slow ledger must not fail them and restart the worker.
LEDGER_WAIT_SECONDS = 2.0
# Bounds on one ledger read for the gauges (PostgreSQL), so a stuck read never piles up.
LEDGER_TIMEOUT_SECONDS = 5
# The Pushgateway group `retention sweep` runs push to.
PUSH_JOB = "retention-worker"

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


# -- recorded where things happen -------------------------------------------------------------


@dataclass(frozen=True)
class _Metrics:
    archived: Counter
    deleted: Counter
    deferred: Counter
    failed: Counter
    kept: Counter
    stopped: Counter
    closed_with_remains: Counter
    archived_bytes: Counter
    due_to_deleted: Histogram
    sweep_duration: Histogram
    last_success: Gauge
    last_scrub: Gauge
    last_clean_scrub: Gauge
    scrub_findings: Gauge
    provider_requests: Counter
    provider_rate_limited: Counter
    provider_latency: Histogram
    s3_errors: Counter


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
        owner = int((Path(directory) / _OWNER_FILE).read_text())
    except (OSError, ValueError):
        return True
    return owner not in (os.getpid(), os.getppid())


def metrics() -> _Metrics:
    global _metrics  # noqa: PLW0603 - one set of metrics per process, created on first use
    with _lock:
        if _metrics is None:
            if "prometheus_client" not in sys.modules and _record_in_process():
                os.environ.pop(MULTIPROC_ENV, None)
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
                closed_with_remains=Counter(
                    "retention_jobs_closed_with_remains",
                    "Jobs closed after a partial delete, because the provider then answered "
                    "that the job was gone: what the partial delete left may remain there",
                    labels,
                ),
                archived_bytes=Counter(
                    "retention_archived_bytes", "Bytes stored in the archive", labels
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
                last_scrub=Gauge(
                    "retention_last_scrub_timestamp_seconds",
                    "Unix time the last `retention scrub` of the whole archive finished",
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
                provider_requests=Counter(
                    "retention_provider_requests",
                    "Requests to a provider's API by method and outcome: the status class "
                    "(2xx...5xx), or timeout or network when no answer came",
                    ["provider", "method", "outcome"],
                ),
                provider_rate_limited=Counter(
                    "retention_provider_rate_limited",
                    "Answers 429 Too Many Requests from a provider's API",
                    labels,
                ),
                provider_latency=Histogram(
                    "retention_provider_request_duration_seconds",
                    "Seconds from sending a request to a provider's API to reading its answer",
                    ["provider", "method"],
                    buckets=_REQUEST_BUCKETS,
                ),
                s3_errors=Counter(
                    "retention_s3_errors",
                    "Failed S3 requests, after botocore's own retries, by S3 operation and "
                    "error code",
                    ["operation", "code"],
                ),
            )
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
    _mark_ledger_changed()


# Whether this process ran a scrub: its scrub gauges (0 until then) are exported only if so,
# so a `retention sweep` never replaces the findings an earlier scrub exported.
_scrubbed = False
_SCRUB_GAUGES = (
    "retention_last_scrub_timestamp_seconds",
    "retention_last_clean_scrub_timestamp_seconds",
    "retention_scrub_findings",
)


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


def _mark_ledger_changed() -> None:
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        with contextlib.suppress(OSError):
            (Path(directory) / _CHANGED_FILE).touch()


# -- read from the ledger and computed from the schedule -------------------------------------


@dataclass(frozen=True)
class Declared:
    """A gauge that ``GaugeCollector`` computes rather than a process records."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()


LEDGER_JOBS = Declared(
    "retention_ledger_jobs",
    "Jobs in the ledger by provider and state (the same from every worker: aggregate with max)",
    ("provider", "state"),
)
LEDGER_HELD = Declared(
    "retention_ledger_held_jobs", "Open jobs under a legal hold, never deleted", ("provider",)
)
LEDGER_OVERDUE = Declared(
    "retention_ledger_overdue_jobs",
    "Jobs due and not yet deleted (not held; a read_only provider's archived jobs excepted)",
    ("provider",),
)
LEDGER_FAILED = Declared(
    "retention_ledger_failed_jobs",
    "Jobs that failed permanently and wait for a person (`retention retry`)",
    ("provider",),
)
LEDGER_OLDEST_OVERDUE = Declared(
    "retention_ledger_oldest_overdue_seconds",
    "Seconds since the oldest overdue job became due (0 when none is overdue)",
    ("provider",),
)
LEDGER_UP = Declared(
    "retention_ledger_up", "1 if the last read of the ledger for these gauges succeeded"
)
NEXT_SWEEP = Declared(
    "retention_next_sweep_timestamp_seconds",
    "Unix time of the first run the provider's schedule calls for after its last successful "
    "sweep that this worker knows of",
    ("provider", "schedule"),
)
FIRST_SCHEDULED = Declared(
    "retention_first_scheduled_sweep_timestamp_seconds",
    "Unix time of the first run the provider's schedule called for after this worker "
    "started (after the first export, for `retention sweep` from cron)",
    ("provider", "schedule"),
)
SWEEP_PERIOD = Declared(
    "retention_sweep_period_seconds",
    "The shortest gap between two scheduled sweeps of the provider",
    ("provider",),
)
BUILD_INFO = Declared("retention_build_info", "The running version", ("version",))

LEDGER_GAUGES = (LEDGER_JOBS, LEDGER_HELD, LEDGER_OVERDUE, LEDGER_FAILED, LEDGER_OLDEST_OVERDUE)
COMPUTED = (*LEDGER_GAUGES, LEDGER_UP, NEXT_SWEEP, FIRST_SCHEDULED, SWEEP_PERIOD, BUILD_INFO)


def declared_metrics() -> dict[str, str]:
    """Every metric family this module can serve, by name, with its type."""
    m = metrics()
    found = {family.name: family.type for value in vars(m).values() for family in value.describe()}
    found.update({d.name: "gauge" for d in COMPUTED})
    return found


def _gauge(declared: Declared) -> GaugeMetricFamily:
    from prometheus_client.metrics_core import GaugeMetricFamily

    return GaugeMetricFamily(declared.name, declared.documentation, labels=declared.labels)


def ledger_families(rows: list[ProviderGauges] | None) -> list[Metric]:
    """The ledger's gauges (nothing but ``retention_ledger_up`` 0 when it could not be read:
    a stale count would tell a story the ledger no longer does)."""
    up = _gauge(LEDGER_UP)
    up.add_metric([], 0.0 if rows is None else 1.0)
    if rows is None:
        return [up]
    jobs, held, overdue, failed, oldest = (_gauge(d) for d in LEDGER_GAUGES)
    for row in rows:
        for state, n in sorted(row.states.items()):
            jobs.add_metric([row.provider, state], n)
        held.add_metric([row.provider], row.held)
        overdue.add_metric([row.provider], row.overdue)
        failed.add_metric([row.provider], row.states.get("failed", 0))
        oldest.add_metric([row.provider], row.oldest_overdue_seconds)
    return [jobs, held, overdue, failed, oldest, up]


def schedules_of(settings: Settings) -> dict[str, str]:
    """Each configured provider's cron expression."""
    return {name: settings.policy(name).schedule for name in settings.providers}


def schedule_families(
    schedules: Mapping[str, str],
    *,
    last_success: Mapping[str, float],
    started: float,
    earliest_first: Mapping[tuple[str, str], float] | None = None,
) -> list[Metric]:
    """The next run each schedule calls for after the provider's last success, the first one
    after ``started`` (the earlier of it and ``earliest_first[(provider, schedule)]``), and
    the schedule's shortest gap."""
    from worker.schedules import next_run_after, schedule_of, shortest_period

    nxt, first, period = _gauge(NEXT_SWEEP), _gauge(FIRST_SCHEDULED), _gauge(SWEEP_PERIOD)
    for provider, expression in sorted(schedules.items()):
        schedule = schedule_of(expression)
        begun = next_run_after(schedule, datetime.fromtimestamp(started, UTC)).timestamp()
        known = (earliest_first or {}).get((provider, expression))
        first.add_metric([provider, expression], begun if known is None else min(known, begun))
        period.add_metric([provider], shortest_period(schedule).total_seconds())
        success = last_success.get(provider)
        if success is not None:
            due = next_run_after(schedule, datetime.fromtimestamp(success, UTC))
            nxt.add_metric([provider, expression], due.timestamp())
    return [nxt, first, period]


def build_info_family() -> Metric:
    info = _gauge(BUILD_INFO)
    info.add_metric([__version__], 1.0)
    return info


def read_ledger_gauges(settings: Settings, *, now: datetime | None = None) -> list[ProviderGauges]:
    """The gauges' counts, read from the ledger read-only with bounded waits (PostgreSQL:
    a connect and a statement timeout), on a connection that is closed afterwards."""
    import sqlalchemy as sa

    from worker.ledger import Ledger

    url = sa.make_url(settings.ledger.url)
    if url.get_backend_name() == "postgresql":
        # The URL's own options (a search_path, say) are kept; the timeouts are added.
        own = url.query.get("options")
        options = " ".join(
            part
            for part in (
                own if isinstance(own, str) else None,
                f"-c statement_timeout={LEDGER_TIMEOUT_SECONDS * 1000}",
                "-c default_transaction_read_only=on",
            )
            if part
        )
        engine = sa.create_engine(
            url.difference_update_query(["options"]),
            poolclass=sa.pool.NullPool,
            connect_args={"connect_timeout": LEDGER_TIMEOUT_SECONDS, "options": options},
        )
        ledger = Ledger(engine, read_only=True)
    else:
        ledger = Ledger.open(settings.ledger.url, read_only=True)
    try:
        days, on_purpose = settings.overdue_terms()
        return ledger.query.gauges(
            days, now=now or datetime.now(UTC), archived_on_purpose=on_purpose
        )
    finally:
        ledger.close()


# The prefork pool forks children from the serving process, at start and whenever one is
# replaced. A fork while the gauges' thread is inside an import, SQLAlchemy or a database
# driver copies a lock that thread holds into the child, where nothing will ever release it:
# the child hangs on its first task (seen in tests/e2e/test_metrics.py). So a fork waits for
# the gauges' work to finish (one ledger read, bounded by LEDGER_TIMEOUT_SECONDS), and that
# work waits for a fork to finish.
_fork_guard = threading.Lock()
_fork_guard_installed = False


def _install_fork_guard() -> None:
    global _fork_guard_installed  # noqa: PLW0603 - once per process
    with _lock:
        if not _fork_guard_installed:
            os.register_at_fork(
                before=_fork_guard.acquire,
                after_in_parent=_fork_guard.release,
                after_in_child=_fork_guard.release,
            )
            _fork_guard_installed = True


class GaugeCollector:
    """The ledger's and the schedules' gauges and the build info, for the worker's /metrics.

    The ledger is read on a short-lived thread, at most every ``ttl`` seconds unless a sweep
    ended since (``changed`` is touched), and a scrape waits ``wait`` seconds at most for
    it: a slow ledger serves the previous counts instead of failing the probes that share
    /metrics. ``last_success`` reads the providers' last successful sweeps (in the worker,
    from every process's files), refreshed with the ledger.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        started: float,
        last_success: Callable[[], dict[str, float]],
        read_ledger: Callable[[], list[ProviderGauges]] | None = None,
        changed: Path | None = None,
        ttl: float = LEDGER_CACHE_SECONDS,
        wait: float = LEDGER_WAIT_SECONDS,
    ) -> None:
        self.schedules = schedules_of(settings)
        self.started = started
        self._last_success = last_success
        self._read_ledger = read_ledger or (lambda: read_ledger_gauges(settings))
        self._changed = changed
        self._ttl = ttl
        self._wait = wait
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._read_at = -float("inf")  # monotonic
        self._read_stamp: int | None = None
        self._ledger: list[Metric] = []
        # Computed with the ledger's counts, under the fork guard, never in a scrape.
        self._schedules = self._schedule_families({})
        _install_fork_guard()

    def describe(self) -> list[Metric]:
        return [_gauge(d) for d in COMPUTED]

    def collect(self) -> list[Metric]:
        self._refresh_if_stale()
        with self._lock:
            return [*self._ledger, *self._schedules, build_info_family()]

    def _schedule_families(self, successes: dict[str, float]) -> list[Metric]:
        return schedule_families(self.schedules, last_success=successes, started=self.started)

    def _changed_stamp(self) -> int | None:
        if self._changed is None:
            return None
        try:
            return self._changed.stat().st_mtime_ns
        except OSError:
            return None

    def _stale(self) -> bool:
        # Compared with the stamp seen when the last read began, not with a clock: file
        # times come from the kernel's coarse clock and may lag the wall clock.
        expired = time.monotonic() - self._read_at >= self._ttl
        return expired or self._changed_stamp() != self._read_stamp

    def _refresh_if_stale(self) -> None:
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
            if not running and self._stale():
                self._thread = threading.Thread(
                    target=self._refresh, name="retention-ledger-gauges", daemon=True
                )
                self._thread.start()
                running = True
            thread = self._thread if running else None
        if thread is not None:
            thread.join(self._wait)

    def _refresh(self) -> None:
        with _fork_guard:
            self._read()

    def _read(self) -> None:
        began, stamp = time.monotonic(), self._changed_stamp()
        rows: list[ProviderGauges] | None
        try:
            rows = self._read_ledger()
        except Exception as exc:  # any failure: served as retention_ledger_up 0
            log.warning("metrics_ledger_unreadable", error=f"{type(exc).__name__}: {exc}"[:300])
            rows = None
        try:
            successes = self._last_success()
        except Exception as exc:  # the ledger's counts are still worth serving
            log.warning("metrics_last_success_unreadable", error=f"{type(exc).__name__}")
            successes = {}
        ledger, schedules = ledger_families(rows), self._schedule_families(successes)
        with self._lock:
            self._ledger, self._schedules = ledger, schedules
            self._read_at, self._read_stamp = began, stamp


def _merged_last_success(directory: Path) -> dict[str, float]:
    """Each provider's last successful sweep across every process of this worker (the max-
    mode gauge files; the other files are not read)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    files = [str(f) for f in directory.glob("gauge_max_*.db")]
    return {
        sample.labels["provider"]: sample.value
        for family in MultiProcessCollector.merge(files, accumulate=False)  # type: ignore[no-untyped-call]
        if family.name == "retention_last_successful_sweep_timestamp_seconds"
        for sample in family.samples
    }


# -- serving (the Celery worker's main process) ---------------------------------------------


def prepare_multiprocess_dir() -> Path:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory, before any metric exists, and
    record this process as the one that serves it.

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
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def serve(settings: Settings) -> bool:
    """Serve every process's metrics, merged, with the ledger's and the schedules' gauges,
    from this (the worker's main) process. False, with an error logged, when the port cannot
    be had: the worker still works, but serves no metrics.

    Celery swallows what a ``worker_init`` handler raises, so an unusable port (a second
    worker on the same host, most often) is said here, loudly, or not at all.
    """
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = Path(os.environ[MULTIPROC_ENV])
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
    registry.register(
        GaugeCollector(
            settings,
            started=time.time(),
            last_success=lambda: _merged_last_success(directory),
            changed=directory / _CHANGED_FILE,
            ttl=settings.metrics.ledger_cache_seconds,
        )
    )
    port, address = settings.metrics.port, settings.metrics.address
    try:
        start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        log.error(
            "metrics_not_served",
            port=port,
            address=address,
            error=str(exc),
            hint=f"this worker serves no /metrics: another process holds {address}:{port}, "
            "such as another worker on this host. Give each worker its own port "
            "(RETENTION_METRICS__PORT) and multiprocess directory (PROMETHEUS_MULTIPROC_DIR), "
            "or run one worker with more processes (README, Metrics)",
        )
        return False
    return True


def process_exited(pid: int) -> None:
    """Drop a dead child's live-gauge files (the max-mode gauges are kept)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # unannotated


# -- exporting after a command (textfile collector, Pushgateway) ----------------------------

# A sample: its name (with _total, _bucket... suffixes) and its sorted labels.
_Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class _Family:
    name: str
    type: str
    documentation: str
    samples: dict[_Key, float] = field(default_factory=dict)


_Snapshot = dict[str, _Family]

# Gauges whose newest value wins when a run's values meet the previous runs'.
_LATEST = {
    "retention_last_successful_sweep_timestamp_seconds",
    "retention_last_scrub_timestamp_seconds",
    "retention_last_clean_scrub_timestamp_seconds",
}


def _snapshot(families: Iterable[Metric], *, strip: Iterable[str] = ()) -> _Snapshot:
    drop = set(strip)
    out: _Snapshot = {}
    for metric in families:
        if not metric.name.startswith("retention_") or metric.name.endswith("_created"):
            continue
        family = out.setdefault(
            metric.name, _Family(metric.name, metric.type, metric.documentation)
        )
        for sample in metric.samples:
            if sample.name.endswith("_created"):  # creation times, per process: not merged
                continue
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in drop))
            family.samples[(sample.name, labels)] = sample.value
    return out


def _merge(previous: _Snapshot, run: _Snapshot) -> _Snapshot:
    """This run's recorded metrics added to what the previous runs left: counters and
    histograms add up, so rate() and increase() work across runs; the last-success and
    last-scrub timestamps keep the newest; other gauges take this run's value, or keep the
    previous one when this run has none (a scrub's findings)."""
    out: _Snapshot = {}
    for name in previous.keys() | run.keys():
        old, new = previous.get(name), run.get(name)
        base = new or old
        assert base is not None
        family = out[name] = _Family(base.name, base.type, base.documentation)
        family.samples = dict(old.samples) if old is not None else {}
        if new is None:
            continue
        for key, value in new.samples.items():
            before = family.samples.get(key)
            if before is None:
                family.samples[key] = value
            elif new.type in ("counter", "histogram"):
                family.samples[key] = before + value
            elif name in _LATEST:
                family.samples[key] = max(before, value)
            else:
                family.samples[key] = value
    return out


def _samples(snapshot: _Snapshot, name: str) -> list[tuple[_Key, float]]:
    family = snapshot.get(name)
    return [] if family is None else list(family.samples.items())


def _computed_snapshot(
    settings: Settings,
    ledger: list[ProviderGauges] | None,
    merged: _Snapshot,
    previous: _Snapshot,
    now: float,
) -> _Snapshot:
    successes: dict[str, float] = {}
    for (_, labels), value in _samples(merged, "retention_last_successful_sweep_timestamp_seconds"):
        successes[dict(labels).get("provider", "")] = value
    earliest: dict[tuple[str, str], float] = {}
    for (_, labels), value in _samples(previous, FIRST_SCHEDULED.name):
        named = dict(labels)
        earliest[(named.get("provider", ""), named.get("schedule", ""))] = value
    families = [
        *ledger_families(ledger),
        *schedule_families(
            schedules_of(settings), last_success=successes, started=now, earliest_first=earliest
        ),
        build_info_family(),
    ]
    return _snapshot(families)


class _Families:
    """A collector over a snapshot, for prometheus-client's text rendering and push."""

    def __init__(self, snapshot: _Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import Metric

        for name in sorted(self.snapshot):
            family = self.snapshot[name]
            metric = Metric(family.name, family.documentation, family.type)
            for (sample, labels), value in sorted(family.samples.items()):
                metric.add_sample(sample, dict(labels), value)
            yield metric


def _render(snapshot: _Snapshot) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(_Families(snapshot))
    return generate_latest(registry)


def _parse(text: str, *, only: Mapping[str, str] | None = None) -> _Snapshot:
    """A snapshot of exposition text; with ``only``, the samples carrying those labels (a
    Pushgateway's group), without them and without the ``instance`` it adds."""
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(text))
    if only:
        for family in families:
            family.samples = [
                s for s in family.samples if all(s.labels.get(k) == v for k, v in only.items())
            ]
    return _snapshot(families, strip=[*(only or {}), "instance"] if only else ())


class _Textfile:
    """node_exporter's textfile collector: one .prom file, replaced atomically."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        # Two runs at once would each add their counts to the same previous file and one
        # would be lost. The lock file's name does not end in .prom: node_exporter skips it.
        lock = self.path.with_name(f".{self.path.name}.lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> _Snapshot:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            return _parse(text)
        except ValueError as exc:
            log.warning("metrics_textfile_unreadable", path=str(self.path), error=str(exc)[:200])
            return {}

    def write(self, snapshot: _Snapshot) -> None:
        # Written beside the target and renamed over it: node_exporter never reads half a
        # file, and the temporary name does not end in .prom.
        body = _render(snapshot)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            # node_exporter runs as another user: the file must be world-readable.
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


class _Pushgateway:
    """A Pushgateway's group ``job="retention-worker"``, replaced whole on each push."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.username, self.password = parts.username, parts.password
        # The credentials go in a header, never in a URL that could be logged.
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))

    def __str__(self) -> str:
        return self.url

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        yield  # one host pushes to the group (README); nothing to lock

    def _auth(self) -> dict[str, str]:
        if self.username is None:
            return {}
        import base64

        token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def read(self) -> _Snapshot:
        import urllib.request  # only where a Pushgateway is configured: start-up stays quick

        request = urllib.request.Request(f"{self.url}/metrics", headers=self._auth())  # noqa: S310 - http(s) only (settings)
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            text = answer.read().decode("utf-8")
        return _parse(text, only={"job": PUSH_JOB})

    def write(self, snapshot: _Snapshot) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import default_handler, push_to_gateway

        registry = CollectorRegistry()
        registry.register(_Families(snapshot))
        auth = self._auth()

        def handler(
            url: str,
            method: str,
            timeout: float | None,
            headers: list[tuple[str, str]],
            data: bytes,
        ) -> Callable[[], None]:
            return default_handler(url, method, timeout, [*headers, *auth.items()], data)

        # PUT: the group is replaced by what was merged, so nothing is counted twice.
        push_to_gateway(self.url, job=PUSH_JOB, registry=registry, timeout=10, handler=handler)


def _targets(config: MetricsSettings) -> list[_Textfile | _Pushgateway]:
    targets: list[_Textfile | _Pushgateway] = []
    if config.textfile:
        targets.append(_Textfile(config.textfile))
    if config.pushgateway_url:
        targets.append(_Pushgateway(config.pushgateway_url.get_secret_value()))
    return targets


# What this process already added to each target: a second export in one process adds
# only what was counted since, never the same counts twice.
_sent: dict[str, _Snapshot] = {}


def _not_yet_sent(run: _Snapshot, sent: _Snapshot) -> _Snapshot:
    out: _Snapshot = {}
    for name, family in run.items():
        before = sent.get(name)
        out[name] = _Family(family.name, family.type, family.documentation)
        for key, value in family.samples.items():
            if before is not None and family.type in ("counter", "histogram"):
                value -= before.samples.get(key, 0.0)  # noqa: PLW2901 - the part not yet sent
            out[name].samples[key] = value
    return out


def _own_snapshot() -> _Snapshot:
    """What this process recorded (a `retention sweep` keeps its metrics in memory)."""
    from prometheus_client import REGISTRY

    metrics()  # every family exists, even one this run never touched
    run = _snapshot(REGISTRY.collect())
    if not _scrubbed:
        for name in _SCRUB_GAUGES:
            run.pop(name, None)
    return run


def export_after_command(settings: Settings) -> list[str]:
    """After a `retention sweep` run (not a dry run): write this run's metrics to ``[metrics]
    textfile`` and/or push them to ``[metrics] pushgateway_url``, each added to what the
    previous runs left there, with the ledger's and the schedules' gauges as they stand now.

    Counters and histograms are added to the target's, so they grow across runs as a served
    counter would; each count is added once, however often this is called in one process.
    An export that fails is logged (``metrics_export_failed``) and does not change the
    command's outcome: the sweep itself ran, and the dead-man's switch notices exports that
    stop. Returns the targets written, for the caller's log.
    """
    targets = _targets(settings.metrics)
    if not targets:
        return []
    run = _own_snapshot()
    now = time.time()
    try:
        ledger: list[ProviderGauges] | None = read_ledger_gauges(settings)
    except Exception as exc:  # any failure: exported as retention_ledger_up 0
        log.warning("metrics_ledger_unreadable", error=f"{type(exc).__name__}: {exc}"[:300])
        ledger = None
    written = []
    for target in targets:
        try:
            with target.locked():
                # Only what this version declares is carried on: a metric since renamed
                # (retention_bytes_archived_total) or another tool's does not linger.
                known = declared_metrics()
                previous = {k: v for k, v in target.read().items() if k in known}
                merged = _merge(previous, _not_yet_sent(run, _sent.get(str(target), {})))
                # Computed anew each time: a previous run's ledger counts are never kept,
                # not even when the ledger cannot be read now (retention_ledger_up 0 says so).
                for declared in COMPUTED:
                    merged.pop(declared.name, None)
                merged.update(_computed_snapshot(settings, ledger, merged, previous, now))
                target.write(merged)
        except (OSError, ValueError) as exc:
            log.warning(
                "metrics_export_failed",
                target=str(target),
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
        else:
            _sent[str(target)] = run
            written.append(str(target))
    return written


# -- labels for the S3 error counter --------------------------------------------------------


def operation_of(exc: BaseException, action: str) -> str:
    """The S3 operation a botocore error names (``PutObject``...), or else our own words for
    it ("uploading part of" -> ``uploading_part_of``), numbers left out."""
    name = getattr(exc, "operation_name", None)
    if isinstance(name, str) and name:
        return name
    return re.sub(r"[^a-z]+", "_", re.sub(r"\d+", "", action.lower())).strip("_") or "unknown"
