"""What a person runs by hand, beside the scheduled sweeps: a sweep now, here or sent to the
Celery workers; the ledger's status; and its migrations.

An entry point parses its input and calls one of these (or ``check``, ``reports``,
``restore``, ``scrub``, ``config_view``, or the ledger's ``operator`` and ``query``), then
hands what comes back to a view in ``worker.render``. They take the settings and the
ledger already built, so a test, the CLI or another entry point calls them the same way.
Heavy libraries are imported inside, as the CLI's start-up needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.outcomes import SentSweep

if TYPE_CHECKING:
    from worker.ledger import Ledger, ProviderStatus
    from worker.outcomes import JobResult, SweepSummary
    from worker.settings import Settings


def run_sweeps(
    settings: Settings,
    providers: Sequence[str],
    *,
    dry_run: bool = False,
    on_result: Callable[[JobResult], None] | None = None,
    on_found: Callable[[str, int, bool], None] | None = None,
) -> list[SweepSummary]:
    """One sweep of each provider, in this process, one after the other; ``on_result`` is
    told of each job as it finishes (from the sweep's threads), ``on_found`` of the jobs
    ahead as each sweep reads them (``sweep.OnFound``)."""
    from worker.bootstrap import build_runtime
    from worker.sweep import sweep_provider

    rt = build_runtime(settings, dry_run=dry_run, only=list(providers))
    try:
        reports = [
            sweep_provider(rt, name, on_result=on_result, on_found=on_found) for name in providers
        ]
    finally:
        rt.close()
    return [report.summary() for report in reports]


@dataclass(frozen=True)
class Enqueued:
    """The sweeps' queue, and each sweep as it is sent (lazily: a person sees each one
    go)."""

    queue: str
    sweeps: Iterator[SentSweep]


def enqueue_sweeps(settings: Settings, providers: Sequence[str]) -> Enqueued:
    """A sweep per provider, sent to the Celery workers instead of run here."""
    from worker.celery_app import configure_app, sweep_queue

    app = configure_app(settings)
    queue = sweep_queue(settings)

    def send() -> Iterator[SentSweep]:
        for name in providers:
            result = app.send_task("retention.sweep", args=[name], queue=queue)
            yield SentSweep(name, "retention.sweep", result.id)

    return Enqueued(queue, send())


def ledger_status(settings: Settings, ledger: Ledger) -> list[ProviderStatus]:
    """The ledger by provider and state, with the jobs that need a look. Overdue as the
    metrics count it: not a ``read_only`` provider's archived jobs, kept there on purpose."""
    from worker.domain import utcnow

    days, on_purpose = settings.overdue_terms()
    return ledger.query.status(days, now=utcnow(), archived_on_purpose=on_purpose)


def migrate_ledger(settings: Settings) -> str | None:
    """Bring the ledger's schema up to date; the revision it is at."""
    from worker.ledger import Ledger, make_engine, migrate

    engine = make_engine(settings.ledger.url)
    migrate(engine)
    return Ledger(engine).schema_revision()
