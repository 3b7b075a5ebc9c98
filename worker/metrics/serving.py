"""The worker's /metrics: every process's recorded metrics, merged, with the computed gauges.

Served by the Celery worker's main process (``celery_app``, on ``worker_init``), before it
forks its children: they inherit ``PROMETHEUS_MULTIPROC_DIR`` and record into it
(``recorders``), and this process merges their files with prometheus-client's multiprocess
collector and adds ``gauges.GaugeCollector``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from worker.logging import get_logger
from worker.metrics.gauges import GaugeCollector
from worker.metrics.recorders import CHANGED_FILE, MULTIPROC_ENV, OWNER_FILE

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
            changed=directory / CHANGED_FILE,
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
            "or run one worker with more processes (docs/operations/metrics.md)",
        )
        return False
    return True


def process_exited(pid: int) -> None:
    """Drop a dead child's live-gauge files (the max-mode gauges are kept)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # unannotated
