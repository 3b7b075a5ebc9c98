"""/metrics for the long-running processes: each worker's, and `retention exporter`'s.

A worker's is served by the Celery worker's main process (``celery_app``, on ``worker_init``),
before it forks its children: they inherit ``PROMETHEUS_MULTIPROC_DIR`` and record into it
(``recorders``), and this process merges their files with prometheus-client's multiprocess
collector and adds the schedules' gauges (``gauges.ScheduleCollector``): what this worker did.

The ledger's state is the same whichever process reads it, so it is served by one process,
`retention exporter` (``run_exporter``, ``gauges.LedgerCollector``), as kube-state-metrics
serves a cluster's: N workers do not run N copies of the same count, and no query has to
deduplicate N copies of the answer.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from worker.logging import get_logger
from worker.metrics.gauges import LedgerCollector, ScheduleCollector
from worker.metrics.recorders import MULTIPROC_ENV, OWNER_FILE

if TYPE_CHECKING:
    from worker.settings import Settings

log = get_logger(__name__)


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
    (path / OWNER_FILE).write_text(str(os.getpid()))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def serve(settings: Settings) -> bool:
    """Serve every process's metrics, merged, with the schedules' gauges, from this (the
    worker's main) process. False, with an error logged, when the port cannot be had: the
    worker still works, but serves no metrics.

    Celery swallows what a ``worker_init`` handler raises, so an unusable port (a second
    worker on the same host, most often) is said here, loudly, or not at all.
    """
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = Path(os.environ[MULTIPROC_ENV])
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
    registry.register(
        ScheduleCollector(
            settings, started=time.time(), last_success=lambda: _merged_last_success(directory)
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
            "or run one worker with more processes (docs/operations/metrics.md)",
        )
        return False
    return True


def process_exited(pid: int) -> None:
    """Drop a dead child's live-gauge files (the max-mode gauges are kept)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # unannotated


def run_exporter(
    settings: Settings,
    *,
    port: int | None = None,
    address: str | None = None,
    stop: threading.Event | None = None,
) -> None:
    """`retention exporter`: serve the ledger's gauges until SIGTERM or SIGINT (or ``stop``).

    Raises OSError when the port cannot be had: unlike a worker, an exporter that serves
    nothing has no reason to run.
    """
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(LedgerCollector(settings, ttl=settings.metrics.ledger_cache_seconds))
    port = settings.metrics.port if port is None else port
    address = settings.metrics.address if address is None else address
    server, thread = start_http_server(port, addr=address, registry=registry)
    log.info("exporter_serving", port=port, address=address)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    log.info("exporter_stopped")
