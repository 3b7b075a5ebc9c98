"""The gauges computed rather than recorded: the ledger's, the schedules' and the build's.

The ledger's (jobs by state, held, overdue and failed jobs, the oldest overdue job's lateness)
are the same whoever reads them, so one process exports them, as kube-state-metrics does for
a cluster: `retention exporter` serves ``LedgerCollector`` (``serving.run_exporter``), and
``export`` writes them after a `retention sweep` run by hand. They are read read-only, with
bounded waits. The schedules' are each worker's own: ``ScheduleCollector`` serves, on the
worker's /metrics, the next sweep each provider's cron schedule calls for after the last
success this worker knows of, as kube-state-metrics' ``kube_cronjob_next_schedule_time``, so
the dead-man's switch waits for the schedule's own next run (weekdays only, weekly...), never
a fixed gap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from worker import __version__
from worker.ledger import Ledger
from worker.logging import get_logger
from worker.metrics import recorders
from worker.schedules import next_run_after, schedule_of, shortest_period

if TYPE_CHECKING:
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric

    from worker.ledger.queries import ProviderGauges
    from worker.settings import Settings

log = get_logger(__name__)

# The exporter reads the ledger gauges (a count over the whole jobs table) at most this often:
# [metrics] ledger_cache_seconds.
LEDGER_CACHE_SECONDS = 15.0
# How long a scrape waits for a ledger read before it is served the previous values: the
# exporter's probes hit /metrics too, and a slow ledger must not fail them and restart it.
LEDGER_WAIT_SECONDS = 2.0
# Bounds on one ledger read for the gauges (PostgreSQL), so a stuck read never piles up.
LEDGER_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Declared:
    """A gauge that a collector computes rather than a process records."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()


LEDGER_JOBS = Declared(
    "retention_ledger_jobs",
    "Jobs in the ledger by provider and state",
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
    m = recorders.metrics()
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


# The prefork pool forks children from the worker's serving process, at start and whenever one
# is replaced. A fork while a scrape's thread is inside an import or holds a library's lock
# copies that lock into the child, where nothing will ever release it: the child hangs on its
# first task (seen in tests/e2e/test_metrics.py while the worker read the ledger). So a fork
# waits for a collection to finish (a few files and cron computations), and a collection
# waits for a fork to finish.
_fork_guard = threading.Lock()
_fork_guard_lock = threading.Lock()
_fork_guard_installed = False


def _install_fork_guard() -> None:
    global _fork_guard_installed  # noqa: PLW0603 - once per process
    with _fork_guard_lock:
        if not _fork_guard_installed:
            os.register_at_fork(
                before=_fork_guard.acquire,
                after_in_parent=_fork_guard.release,
                after_in_child=_fork_guard.release,
            )
            _fork_guard_installed = True


class ScheduleCollector:
    """The schedules' gauges and the build info, for the worker's /metrics. ``last_success``
    reads the providers' last successful sweeps (in the worker, from every process's files)."""

    def __init__(
        self, settings: Settings, *, started: float, last_success: Callable[[], dict[str, float]]
    ) -> None:
        self.schedules = schedules_of(settings)
        self.started = started
        self._last_success = last_success
        _install_fork_guard()

    def describe(self) -> list[Metric]:
        return [_gauge(d) for d in (NEXT_SWEEP, FIRST_SCHEDULED, SWEEP_PERIOD, BUILD_INFO)]

    def collect(self) -> list[Metric]:
        with _fork_guard:
            try:
                successes = self._last_success()
            except Exception as exc:  # the schedules' other gauges are still worth serving
                log.warning("metrics_last_success_unreadable", error=f"{type(exc).__name__}")
                successes = {}
            families = schedule_families(
                self.schedules, last_success=successes, started=self.started
            )
        return [*families, build_info_family()]


class LedgerCollector:
    """The ledger's gauges and the build info, for `retention exporter`'s /metrics.

    The ledger is read on a short-lived thread, at most every ``ttl`` seconds, and a scrape
    waits ``wait`` seconds at most for it: a slow ledger serves the previous counts (and
    ``retention_ledger_up`` says when a read failed) instead of failing the probes that share
    /metrics.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        read_ledger: Callable[[], list[ProviderGauges]] | None = None,
        ttl: float = LEDGER_CACHE_SECONDS,
        wait: float = LEDGER_WAIT_SECONDS,
    ) -> None:
        self._read_ledger = read_ledger or (lambda: read_ledger_gauges(settings))
        self._ttl = ttl
        self._wait = wait
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._read_at = -float("inf")  # monotonic
        self._ledger: list[Metric] = []

    def describe(self) -> list[Metric]:
        return [_gauge(d) for d in (*LEDGER_GAUGES, LEDGER_UP, BUILD_INFO)]

    def collect(self) -> list[Metric]:
        self._refresh_if_stale()
        with self._lock:
            return [*self._ledger, build_info_family()]

    def _refresh_if_stale(self) -> None:
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
            if not running and time.monotonic() - self._read_at >= self._ttl:
                self._thread = threading.Thread(
                    target=self._read, name="retention-ledger-gauges", daemon=True
                )
                self._thread.start()
                running = True
            thread = self._thread if running else None
        if thread is not None:
            thread.join(self._wait)

    def _read(self) -> None:
        began = time.monotonic()
        rows: list[ProviderGauges] | None
        try:
            rows = self._read_ledger()
        except Exception as exc:  # any failure: served as retention_ledger_up 0
            log.warning("metrics_ledger_unreadable", error=f"{type(exc).__name__}: {exc}"[:300])
            rows = None
        ledger = ledger_families(rows)
        with self._lock:
            self._ledger, self._read_at = ledger, began
