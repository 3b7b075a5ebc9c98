"""The ledger, by hand: track, hold, release, retry, status and migrate."""

from __future__ import annotations

import dataclasses

import click

from worker import exits
from worker.cli.context import Context, pass_ctx
from worker.cli.errors import fail, handle_errors
from worker.cli.options import interactive, json_option, print_json


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

    ctx.settings.provider(provider)
    for job_id in job_ids:
        safe_relative_key(job_id, what="job id")
    added = ctx.ledger().operator.track(provider, job_ids, now=utcnow())
    if as_json:
        print_json({"provider": provider, "tracking": list(job_ids), "new": sorted(added)})
    else:
        click.echo(f"tracking {len(job_ids)} job(s) of {provider}; {len(added)} new")


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

    ctx.settings.provider(provider)
    changed = ctx.ledger().operator.set_hold(
        provider, job_id, held=True, now=utcnow(), reason=reason
    )
    if as_json:
        print_json({"provider": provider, "job_id": job_id, "held": True, "changed": changed})
    else:
        click.echo(f"{provider} job {job_id} is held" + ("" if changed else " (it already was)"))


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

    ctx.settings.provider(provider)
    changed = ctx.ledger().operator.set_hold(provider, job_id, held=False, now=utcnow())
    if as_json:
        print_json({"provider": provider, "job_id": job_id, "held": False, "changed": changed})
    else:
        click.echo(f"{provider} job {job_id} " + ("released" if changed else "was not held"))


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

    ctx.settings.provider(provider)
    retried = ctx.ledger().operator.retry(provider, job_id, now=utcnow())
    if as_json:
        print_json({"provider": provider, "job_id": job_id, "retried": retried})
    elif retried:
        click.echo(f"{provider} job {job_id} will be tried again on the next sweep")
    if not retried:
        fail(
            f"{provider} job {job_id} is not in the failed state",
            exits.INCOMPLETE,
            as_json=as_json,
        )


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
    from worker.domain import utcnow

    settings = ctx.settings
    days, on_purpose = settings.overdue_terms()
    statuses = ctx.ledger().query.status(days, now=utcnow(), archived_on_purpose=on_purpose)
    if as_json:
        print_json({"providers": [dataclasses.asdict(s) for s in statuses]})
        return
    if interactive():
        from worker.render.terminal import status_tables

        status_tables(statuses)
        return
    if not statuses:
        click.echo("the ledger is empty")
    from worker.render.sweep import status_more

    for s in statuses:
        states = ", ".join(f"{k} {v}" for k, v in sorted(s.states.items())) or "no jobs"
        header = f"{s.provider}: {states}; held {s.held}; overdue {s.overdue_count}"
        click.echo(header + (f"; unknown status {s.unknown_count}" if s.unknown_count else ""))
        more = status_more(s)
        for job in s.overdue:
            error = f" - {job.last_error}" if job.last_error else ""
            click.echo(f"  overdue {job.job_id} ({job.state}, due {job.due_at}){error}")
        _more_line(more, "overdue")
        for kept in s.kept:
            click.echo(f"  kept    {kept.job_id}: {kept.reason}")
        _more_line(more, "kept")
        for failed in s.failed:
            click.echo(
                f"  failed  {failed.job_id} after {failed.attempts} attempt(s): {failed.last_error}"
            )
        _more_line(more, "failed")
        for odd in s.unknown:
            click.echo(
                f"  unknown {odd.job_id} (status {odd.status!r}, {odd.attempts} attempt(s)): "
                f"{odd.last_error or 'not read since it was listed'}"
            )
        _more_line(more, "unknown")


def _more_line(more: dict[str, int], kind: str) -> None:
    if more[kind]:
        click.echo(f"  ... {more[kind]} more {kind}")


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
    from worker.ledger import Ledger, make_engine
    from worker.ledger import migrate as run_migrations

    engine = make_engine(ctx.settings.ledger.url)
    run_migrations(engine)
    revision = Ledger(engine).schema_revision()
    if as_json:
        print_json({"schema": revision})
    else:
        click.echo(f"the ledger is at schema {revision}")
