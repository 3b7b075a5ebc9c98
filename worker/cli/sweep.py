"""`retention sweep`: one sweep now, here or by the Celery workers."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from worker import exits
from worker.cli.context import Context, pass_ctx
from worker.cli.errors import handle_errors
from worker.cli.options import interactive, json_option, jsonl_option, one_format, print_json

if TYPE_CHECKING:
    from worker.outcomes import JobResult
    from worker.settings import Settings


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
@pass_ctx
@handle_errors
def sweep(
    ctx: Context,
    providers: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    as_jsonl: bool,
    enqueue: bool,
) -> None:
    """Run one retention sweep now.

    Prints a line per job that changed (or, in a dry run, would), then a line per provider;
    at a terminal, a progress bar and a table. --json prints only the counts (archived,
    deleted, deferred, failed, kept, stopped, skipped, gone, bytes, and each provider's);
    --jsonl a line per job, then the counts. A dry run exits as the real run would. With
    --enqueue, --json prints what was sent (message_type "enqueued": the queue, task ids).

    \b
    Example:
      retention sweep --provider daily --dry-run
      retention sweep --json
      retention -q sweep --jsonl | jq -c 'select(.outcome == "failed")'
    """
    one_format(as_json, as_jsonl)
    if dry_run and enqueue:
        raise click.UsageError("--dry-run runs here; it cannot be combined with --enqueue")
    names = ctx.providers(providers)
    if enqueue:
        _enqueue(ctx.settings, names, as_json=as_json or as_jsonl)
        return
    from worker.bootstrap import build_runtime
    from worker.render.sweep import json_document, summary_line
    from worker.sweep import sweep_provider

    machine = as_json or as_jsonl
    table = not machine and interactive()
    # A person at a terminal gets a progress bar; a pipe gets a line per job; -q neither.
    watched = table and not ctx.quiet
    on_result = None
    if as_jsonl:
        on_result = _job_lines()
    elif not machine and not ctx.quiet and not watched:
        on_result = _printer(dry_run=dry_run)
    rt = build_runtime(ctx.settings, dry_run=dry_run, only=names)
    try:
        if watched:
            from worker.render.terminal import SweepProgress

            with SweepProgress(names, dry_run=dry_run) as progress:
                reports = [sweep_provider(rt, name, on_result=progress) for name in names]
        else:
            reports = [sweep_provider(rt, name, on_result=on_result) for name in names]
    finally:
        rt.close()
    summaries = [report.summary() for report in reports]
    code = exits.sweep_exit_code(summaries)
    if not dry_run:
        from worker import metrics

        # CLI-only users: the same metrics, through a textfile or a Pushgateway (optional).
        # Before the results are printed, which fails if the reader has gone.
        metrics.export_after_command(ctx.settings)
    if machine:
        click.echo(json_document(summaries, exit_code=code))
    elif table:
        from worker.render.terminal import sweep_table

        sweep_table(summaries)
    else:
        for summary in summaries:
            click.echo(summary_line(summary))
    sys.exit(code)


def _printer(*, dry_run: bool) -> Callable[[JobResult], None]:
    """One line per job that changed, or would change, or needs attention."""
    from worker.render.sweep import job_line

    return _lines_out(lambda result: job_line(result, dry_run=dry_run))


def _job_lines() -> Callable[[JobResult], None]:
    """--jsonl: one JSON line per job, as it finishes."""
    from worker.render.sweep import job_record, json_line

    return _lines_out(lambda result: [json_line(job_record(result))])


def _lines_out(lines_of: Callable[[JobResult], list[str]]) -> Callable[[JobResult], None]:
    """Print each result's lines as it arrives from the sweep's threads. Once the reader has
    gone (``| head``), print nothing more: the sweep goes on to its end, and the results
    printed at the end hand the broken pipe to click, which exits quietly."""
    lock = threading.Lock()
    gone = False

    def show(result: JobResult) -> None:
        nonlocal gone
        lines = lines_of(result)
        with lock:
            if gone:
                return
            try:
                for line in lines:
                    click.echo(line)
            except BrokenPipeError:
                gone = True

    return show


def _enqueue(settings: Settings, names: list[str], *, as_json: bool) -> None:
    """Send a sweep per provider to the workers. With --json, one document of what was sent
    (``message_type`` "enqueued"): no sweep ran here, so it has no sweep's counts."""
    from worker.celery_app import configure_app, sweep_queue

    app = configure_app(settings)
    queue = sweep_queue(settings)
    sent = []
    for name in names:
        result = app.send_task("retention.sweep", args=[name], queue=queue)
        sent.append({"provider": name, "task": "retention.sweep", "task_id": result.id})
        if not as_json:
            click.echo(f"enqueued a sweep of {name} (task {result.id})")
    if as_json:
        print_json({"message_type": "enqueued", "queue": queue, "enqueued": sent})
