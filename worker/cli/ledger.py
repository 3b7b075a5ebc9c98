"""The ledger, by hand: track, hold, release, retry, status and migrate."""

from __future__ import annotations

from typing import TextIO

import click

from worker.cli.context import Context, pass_ctx
from worker.cli.errors import CommandFailed, handle_errors
from worker.cli.options import json_option, output_format
from worker.render.view import show


@click.command()
@click.argument("provider")
@click.argument("job_ids", nargs=-1)
@click.option(
    "--from-file",
    "from_file",
    type=click.File("r", encoding="utf-8"),
    metavar="PATH|-",
    help="Also read ids from PATH (- for stdin), one a line; blank lines and lines starting "
    "with # are skipped.",
)
@click.option("--hold", is_flag=True, help="Put a legal hold on each job too.")
@click.option("--reason", help="Why, for the audit trail (a case number, say).")
@click.option(
    "--finished-at",
    metavar="TIME",
    help="When the jobs finished, if you know (ISO 8601 with its offset, such as "
    "2025-06-01T12:00:00Z): their retention period counts from then.",
)
@json_option
@pass_ctx
@handle_errors
def track(
    ctx: Context,
    provider: str,
    job_ids: tuple[str, ...],
    from_file: TextIO | None,
    hold: bool,
    reason: str | None,
    finished_at: str | None,
    as_json: bool,
) -> None:
    """Record job ids the worker must look after (for providers with no list endpoint).

    Each id is checked against its provider's rules first (Huawei MPC's are numbers, DatoCMS's
    UPLOAD_ID/TRACK_ID); one that fails refuses them all, and nothing is recorded. Tracking a
    job again changes nothing. Applications hand ids over through Celery instead (the
    retention.track task).

    \b
    Example:
      retention track loom R123 R124
      retention track loom --from-file ids.txt
      retention track unsiloed --finished-at 2025-06-01T12:00:00Z 4f1c0a9e
    """
    from worker.domain import utcnow
    from worker.render.ledger import TrackView
    from worker.tracking import parse_request, track_jobs

    ctx.provider(provider)
    ids = list(job_ids)
    lines = [0] * len(ids)
    if from_file is not None:
        for number, line in enumerate(from_file, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                ids.append(text)
                lines.append(number)
    if not ids:
        raise click.UsageError("give job ids, or --from-file PATH with one id a line")

    def label(i: int) -> str:
        return f"line {lines[i]}: " if lines[i] else ""

    options = {"hold": hold, "reason": reason, "finished_at": finished_at}
    request = parse_request(provider, ids, options=options, max_ids=None)
    changed = track_jobs(
        ctx.settings, ctx.ledger(), request, now=utcnow(), detail={"via": "cli"}, label=label
    )
    new = [job_id for batch in changed for job_id in batch.added]
    held = [job_id for batch in changed for job_id in batch.held]
    show(TrackView(provider, request.job_ids, new, held), output_format(as_json=as_json))


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
