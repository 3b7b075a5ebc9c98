"""The archive: `retention restore` and `retention scrub`."""

from __future__ import annotations

from pathlib import Path

import click

from worker import exits
from worker.cli.context import Context, pass_ctx
from worker.cli.errors import handle_errors
from worker.cli.options import json_option, jsonl_option, output_format
from worker.render.view import show


@click.command()
@click.argument("provider")
@click.argument("job_id")
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Write the job's files (and its manifest and receipt) under DIR.",
)
@click.option("--verify-only", is_flag=True, help="Check every file; write nothing.")
@click.option(
    "--wait",
    is_flag=True,
    help="For files in GLACIER or DEEP_ARCHIVE: wait for their restore to finish (polling), "
    "then restore them.",
)
@click.option(
    "--timeout",
    default="48h",
    show_default=True,
    metavar="DURATION",
    help="With --wait: give up waiting after this long (90s, 15m, 12h, 2d).",
)
@json_option
@pass_ctx
@handle_errors
def restore(
    ctx: Context,
    provider: str,
    job_id: str,
    to: Path | None,
    verify_only: bool,
    wait: bool,
    timeout: str,
    as_json: bool,
) -> int:
    """Get an archived job back: each file is read from the archive and checked against the
    manifest (size and SHA-256). Exits 1 if any file is missing, differs, or is still
    thawing; 3 if the archive cannot be reached.

    A file in a cold storage class (GLACIER, DEEP_ARCHIVE) cannot be read until a restore
    finishes: one is started for every such file ([archive] restore_tier, restore_days), and
    the command says when to come back, or with --wait polls until the files are readable.

    \b
    Example:
      retention restore daily 3ab8faa2-8ba2-4ee6-bd15-003a92c18245 --to ./restored
      retention restore loom R123 --verify-only
      retention restore daily 3ab8faa2-8ba2-4ee6-bd15-003a92c18245 --to ./r --wait --timeout 12h
    """
    if (to is None) == (not verify_only):
        raise click.UsageError("give --to DIR, or --verify-only")
    from worker.render.restore import RestoreView
    from worker.restore import parse_duration, restore_job

    seconds = parse_duration(timeout) if wait else None
    ctx.provider(provider)
    run = restore_job(ctx.archive(), ctx.settings, provider, job_id, to=to, wait=seconds)
    view = RestoreView(run, provider, job_id, verify_only=verify_only)
    show(view, output_format(as_json=as_json))
    return exits.OK if run.ok else exits.INCOMPLETE


def _read_fraction(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float:
    if value is None:
        return 0.0
    try:
        percent = float(value.strip().removesuffix("%"))
    except ValueError:
        raise click.BadParameter("give a share of the files such as 5% or 0.5%") from None
    if not 0 <= percent <= 100:
        raise click.BadParameter("must be between 0% and 100%")
    return percent / 100


@click.command()
@click.option("--provider", metavar="NAME", help="Only this provider's jobs.")
@click.option(
    "--since",
    metavar="WHEN",
    help="Only jobs archived since: a duration back from now (30d, 12h, 2w) or an ISO date. "
    "Default: every archived job.",
)
@click.option(
    "--read-data",
    "read_fraction",
    metavar="N%",
    callback=_read_fraction,
    help="Also read this share of the files back and hash them, drawn at random "
    "(restic's --read-data-subset). Files in a cold storage class are not read.",
)
@json_option
@jsonl_option
@pass_ctx
@handle_errors
def scrub(
    ctx: Context,
    provider: str | None,
    since: str | None,
    read_fraction: float,
    as_json: bool,
    as_jsonl: bool,
) -> int:
    """Re-verify the archive: each archived job's manifest against the ledger, and each of
    its files by a HEAD at the version that was verified (size, ETag, and SHA-256 where the
    server stores it); with --read-data a sample is read back and hashed. Changes nothing.

    Prints one line per damaged or missing key; exits 1 if there is any, 3 if the archive
    cannot be reached.

    \b
    Example:
      retention scrub --since 30d
      retention scrub --provider daily --read-data 5% --json
    """
    from worker.domain import utcnow
    from worker.metrics import recorders as metrics
    from worker.render.scrub import ScrubView, scrub_feed
    from worker.reports import parse_since
    from worker.scrub import scrub_archive

    fmt = output_format(as_json=as_json, as_jsonl=as_jsonl)
    if provider is not None:
        ctx.provider(provider)
    since_at = parse_since(since, utcnow()) if since else None
    with scrub_feed(fmt, quiet=ctx.quiet) as feed:
        result = scrub_archive(
            ctx.archive(),
            ctx.ledger(),
            provider=provider,
            since=since_at,
            read_fraction=read_fraction,
            on_job=feed,
        )
    metrics.record_scrub(findings=len(result.findings))
    code = exits.OK if result.clean else exits.INCOMPLETE
    show(ScrubView(result, read_fraction=read_fraction, exit_code=code), fmt)
    return code
