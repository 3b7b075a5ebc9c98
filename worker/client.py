"""Hand jobs to the worker from a Python application that shares its configuration::

    from worker.client import track

    track("loom", ["R123", "R124"])            # the file RETENTION_CONFIG names
    track("loom", ["R125"], hold=True, reason="case 42", config="/etc/retention.toml")
    track("unsiloed", [job_id], finished_at=finished, wait=30)   # and wait for the answer

Each call checks the request against the configuration first, here, where the mistake is
made (``worker.tracking``: an unknown provider, an id its adapter cannot have, a finish time
in the future raise ``TrackRefused`` and nothing is sent), then sends it to the Celery
workers as ``retention.track`` messages on ``[broker] queue``, 1000 ids a message. Sending
returns once the broker has the message; a worker records it at least once (tracking is
idempotent, so a message delivered twice changes nothing more). ``wait`` waits that many
seconds for each message's answer from the worker: what it recorded, or ``TrackRefused``.

An application without this package (another language, or no shared configuration) sends
the same message by name with any Celery client: README.md, "Feeding the worker from your
application".
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker.domain import utcnow
from worker.settings import CONFIG_ENV, load_settings
from worker.tracking import TASK_NAME, TrackRequest, check_request, parse_request

if TYPE_CHECKING:
    from celery import Celery

    from worker.settings import Settings

__all__ = ["Sent", "track"]


@dataclass(frozen=True, slots=True)
class Sent:
    """One ``retention.track`` message: its Celery task id, the ids it carries, and, when
    the call waited for it, the worker's answer (``new`` and ``held``: the ids it changed)."""

    task_id: str
    job_ids: tuple[str, ...]
    answer: dict[str, Any] | None = None


@functools.lru_cache(maxsize=8)
def _configured(path: str) -> tuple[Settings, Celery]:
    # Read once per file and process: an application tracks as it submits jobs, and the
    # configuration does not change under a running worker either.
    from worker.celery_app import configure_app

    settings = load_settings(path)
    return settings, configure_app(settings)


def track(
    provider: str,
    job_ids: Iterable[str | int],
    *,
    hold: bool = False,
    reason: str | None = None,
    finished_at: datetime | str | None = None,
    config: str | os.PathLike[str] | None = None,
    wait: float | None = None,
) -> list[Sent]:
    """Send ``job_ids`` of the ``[providers.NAME]`` account ``provider`` to the workers to
    look after; see the module's docstring. Raises ``TrackRefused`` (nothing sent) for a
    request the workers would refuse, ``ConfigError`` for a configuration that does not load.
    """
    path = os.fspath(config) if config is not None else os.environ.get(CONFIG_ENV, "")
    settings, app = _configured(path)
    request = parse_request(
        provider,
        list(job_ids),
        options={"hold": hold, "reason": reason, "finished_at": finished_at},
        max_ids=None,
    )
    check_request(settings, request, now=utcnow())
    sent = [_send(app, settings.broker.queue, batch) for batch in request.batches()]
    if wait is None:
        return sent
    return [Sent(s.task_id, s.job_ids, app.AsyncResult(s.task_id).get(timeout=wait)) for s in sent]


def _send(app: Celery, queue: str, request: TrackRequest) -> Sent:
    args, kwargs = request.arguments()
    result = app.send_task(TASK_NAME, args=args, kwargs=kwargs, queue=queue)
    return Sent(result.id, request.job_ids)
