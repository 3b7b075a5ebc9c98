"""`retention sweep`: one sweep now, here or by the Celery workers."""

from __future__ import annotations

import click

from worker import exits
from worker.cli.context import Context, pass_ctx
from worker.cli.errors import handle_errors
from worker.cli.options import json_option, jsonl_option, output_format
from worker.render.view import show


@click.command(epilog=exits.help_text())
@click.option(
    "--provider",
    "providers",
    multiple=True,
    metavar="NAME",
    help="Sweep only this provider (repeatable). Default: all.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Change nothing anywhere; print what a real run would archive and delete.",
)
@json_option
@jsonl_option
@click.option(
    "--enqueue",
    is_flag=True,
    help="Send the sweep to the Celery workers instead of running it here.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show on stderr, per provider, the jobs done of those known so far, bytes archived, "
    "rate and time left. Default: when stderr is a terminal (and without -q).",
)
@pass_ctx
@handle_errors
def sweep(
    ctx: Context,
    providers: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    as_jsonl: bool,
    enqueue: bool,
    progress: bool | None,
) -> int | None:
    """Run one retention sweep now.

    Prints a line per job that changed (or, in a dry run, would), then a line per provider;
    at a terminal, a table. While it runs, stderr shows each provider's progress (jobs done
    of those known so far, bytes, rate, time left) when it is a terminal or with --progress.
    --json prints only the counts (archived,
    deleted, deferred, failed, kept, stopped, skipped, gone, bytes, and each provider's);
    --jsonl a line per job, then the counts. A dry run exits as the real run would. With
    --enqueue, --json prints what was sent (message_type "enqueued": the queue, task ids).

    \b
    Example:
      retention sweep --provider daily --dry-run
      retention sweep --json
      retention -q sweep --jsonl | jq -c 'select(.outcome == "failed")'
    """
    from worker.operations import enqueue_sweeps, run_sweeps
    from worker.render.sweep import EnqueuedView, SweepView, sweep_feed

    fmt = output_format(as_json=as_json, as_jsonl=as_jsonl)
    if dry_run and enqueue:
        raise click.UsageError("--dry-run runs here; it cannot be combined with --enqueue")
    names = ctx.providers(providers)
    # Traces, when the OTEL_* variables ask for them: this run's, or the Celery sweeps it sends.
    from worker import tracing

    tracing.configure("retention")
    if enqueue:
        sent = enqueue_sweeps(ctx.settings, names)
        show(EnqueuedView(sent.queue, sent.sweeps), fmt)
        return None
    live = sweep_feed(fmt, quiet=ctx.quiet, dry_run=dry_run, providers=names, progress=progress)
    with live as feed:
        summaries = run_sweeps(
            ctx.settings, names, dry_run=dry_run, on_result=feed, on_found=feed.found
        )
    code = exits.sweep_exit_code(summaries)
    if not dry_run:
        from worker.metrics import export as metrics

        # CLI-only users: the same metrics, through a textfile or a Pushgateway (optional).
        # Before the results are printed, which fails if the reader has gone.
        metrics.export_after_command(ctx.settings)
    show(SweepView(summaries, exit_code=code), fmt)
    return code
