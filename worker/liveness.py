"""The Celery side of ``worker.heartbeat``: the consumer and beat renew their heartbeat files.

* ``ConsumerHeartbeat``, a bootstep of the worker's consumer, renews
  ``{heartbeat_dir}/worker.heartbeat`` from a timer on the consumer's event loop, in the
  worker's main process: the same loop that receives messages and hands them to the pool. A
  loop that blocks, or a main process that is stopped, stops renewing it; the metrics
  thread, which keeps answering either way, has no part in it.
* ``HeartbeatScheduler``, beat's scheduler, renews ``{heartbeat_dir}/beat.heartbeat`` each time
  it ticks; ``celery_app`` caps beat's sleep between ticks at the heartbeat's period.

Both are set up by ``celery_app`` from ``[worker] heartbeat_dir`` and ``heartbeat_seconds``
(kept in the app's configuration as ``HEARTBEAT_DIR`` and ``HEARTBEAT_SECONDS``); with no
directory, nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery, bootsteps
from celery.beat import PersistentScheduler
from celery.bootsteps import RUN  # type: ignore[attr-defined]  # not in the type stubs

from worker import heartbeat
from worker.logging import get_logger

log = get_logger(__name__)

# Keys of the app's configuration (celery_app.celery_config).
HEARTBEAT_DIR = "retention_heartbeat_dir"
HEARTBEAT_SECONDS = "retention_heartbeat_seconds"


def heartbeat_path(app: Celery, name: str) -> Path | None:
    directory = app.conf.get(HEARTBEAT_DIR)
    return Path(directory) / name if directory else None


def worker_starting(app: Celery) -> None:
    """In the worker's main process, before its consumer starts: a heartbeat left by an earlier
    run is replaced, so the probe never reads it as this run's."""
    path = heartbeat_path(app, heartbeat.WORKER_FILE)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        heartbeat.write(path, heartbeat.State.STARTING)


def worker_stopping(app: Celery) -> None:
    path = heartbeat_path(app, heartbeat.WORKER_FILE)
    if path is not None and path.parent.is_dir():
        heartbeat.write(path, heartbeat.State.STOPPING)


class ConsumerHeartbeat(bootsteps.StartStopStep):
    """Renews the worker's heartbeat from the consumer's event loop while the consumer runs."""

    label = "retention heartbeat"
    # Started once the task consumer is: the loop then runs (Evloop is always last).
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path = heartbeat_path(parent.app, heartbeat.WORKER_FILE)
        self.seconds = float(parent.app.conf.get(HEARTBEAT_SECONDS) or 10.0)
        self.entry: Any = None

    def start(self, parent: Any) -> None:
        if self.path is None:
            return
        if parent.hub is None:
            # Without the event loop (an unusual pool or transport) the timer has a thread of
            # its own, which says nothing about the consumer.
            log.warning(
                "heartbeat_without_event_loop",
                hint="the heartbeat comes from a timer thread, not the consumer's loop: run the "
                "worker with the prefork pool on Redis, as deploy/ does",
            )
        self._renew()
        self.entry = parent.timer.call_repeatedly(self.seconds, self._renew)

    def stop(self, parent: Any) -> None:
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None
        if self.path is None:
            return
        # The consumer stops for a shutdown (its blueprint is closing) or to connect to the
        # broker again after losing it (its blueprint still runs).
        running = parent.blueprint is not None and parent.blueprint.state == RUN
        state = heartbeat.State.RECONNECTING if running else heartbeat.State.STOPPING
        heartbeat.write(self.path, state)

    shutdown = stop

    def _renew(self) -> None:
        if self.path is not None:
            heartbeat.write(self.path, heartbeat.State.RUNNING)


class HeartbeatScheduler(PersistentScheduler):
    """Beat's default scheduler, which renews beat's heartbeat each time it ticks."""

    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        self._heartbeat = heartbeat_path(app, heartbeat.BEAT_FILE)
        if self._heartbeat is not None:
            self._heartbeat.parent.mkdir(parents=True, exist_ok=True)
            heartbeat.remove(self._heartbeat)
        super().__init__(app, *args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval: float = super().tick(*args, **kwargs)
        if self._heartbeat is not None:
            heartbeat.write(self._heartbeat, heartbeat.State.RUNNING)
        return interval
