"""The ledger, by hand: track, hold, release, retry, status and migrate."""

from __future__ import annotations

import click

from worker.cli.context import Context, pass_ctx
from worker.cli.errors import CommandFailed, handle_errors
from worker.cli.options import json_option, output_format
from worker.render.view import show


@click.command()
@click.argument("provider")
@click.argument("job_ids", nargs=-1, required=True)
@json_option
@pass_ctx
@handle_errors
def track(ctx: Context, provider: str, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Record job ids the worker must look after (for providers with no list endpoint).

    \b
    Example:
      retention track loom R123 R124
    """
    from worker.domain import utcnow
    from worker.keys import safe_relative_key
    from worker.render.ledger import TrackView

    ctx.provider(provider)
    for job_id in job_ids:
        safe_relative_key(job_id, what="job id")
    added = ctx.ledger().operator.track(provider, job_ids, now=utcnow())
    show(TrackView(provider, job_ids, added), output_format(as_json=as_json))


@click.command()
@click.argument("provider")
@click.argument("job_id")
@click.option("--reason", help="Why, for the audit trail (a case number, say).")
@json_option
@pass_ctx
@handle_errors
def hold(ctx: Context, provider: str, job_id: str, reason: str | None, as_json: bool) -> None:
    """Put a legal hold on a job: it is never archived or deleted until released.

    Works for a job the worker has not seen yet.

    \b
    Example:
      retention hold daily 3ab8faa2-8ba2-4ee6-bd15-003a92c18245 --reason "case 42"
    """
    from worker.domain import utcnow
    from worker.render.ledger import HoldView

    ctx.provider(provider)
    changed = ctx.ledger().operator.set_hold(
        provider, job_id, held=True, now=utcnow(), reason=reason
    )
    show(HoldView(provider, job_id, held=True, changed=changed), output_format(as_json=as_json))


@click.command()
@click.argument("provider")
@click.argument("job_id")
@json_option
@pass_ctx
@handle_errors
def release(ctx: Context, provider: str, job_id: str, as_json: bool) -> None:
    """Lift a legal hold; the next sweep treats the job normally.

    \b
    Example:
      retention release daily 3ab8faa2-8ba2-4ee6-bd15-003a92c18245
    """
    from worker.domain import utcnow
    from worker.render.ledger import HoldView

    ctx.provider(provider)
    changed = ctx.ledger().operator.set_hold(provider, job_id, held=False, now=utcnow())
    show(HoldView(provider, job_id, held=False, changed=changed), output_format(as_json=as_json))


@click.command()
@click.argument("provider")
@click.argument("job_id")
@json_option
@pass_ctx
@handle_errors
def retry(ctx: Context, provider: str, job_id: str, as_json: bool) -> None:
    """Put a job that failed permanently back in line for the next sweep. Exits 1 if the
    job is not in the failed state.

    \b
    Example:
      retention retry daily 3ab8faa2-8ba2-4ee6-bd15-003a92c18245
    """
    from worker.domain import utcnow
    from worker.render.ledger import RetryView

    ctx.provider(provider)
    retried = ctx.ledger().operator.retry(provider, job_id, now=utcnow())
    show(RetryView(provider, job_id, retried=retried), output_format(as_json=as_json))
    if not retried:
        raise CommandFailed(f"{provider} job {job_id} is not in the failed state")


@click.command()
@json_option
@pass_ctx
@handle_errors
def status(ctx: Context, as_json: bool) -> None:
    """Show the ledger by provider and state; overdue jobs, jobs kept at the provider (with
    why), failed jobs, and jobs in a status the worker does not know (deferred until a person
    looks). Each list shows its first 20 and says how many more there are.

    \b
    Example:
      retention status --json
    """
    from worker.operations import ledger_status
    from worker.render.status import StatusView

    statuses = ledger_status(ctx.settings, ctx.ledger())
    show(StatusView(statuses), output_format(as_json=as_json))


@click.command()
@json_option
@pass_ctx
@handle_errors
def migrate(ctx: Context, as_json: bool) -> None:
    """Bring the ledger's schema up to date.

    \b
    Example:
      retention migrate
    """
    from worker.operations import migrate_ledger
    from worker.render.ledger import MigrateView

    revision = migrate_ledger(ctx.settings)
    show(MigrateView(revision), output_format(as_json=as_json))
