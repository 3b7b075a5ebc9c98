"""The archive: `retention restore` and `retention scrub`."""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from worker import exits
from worker.cli.context import Context, pass_ctx
from worker.cli.errors import handle_errors
from worker.cli.options import interactive, json_option, jsonl_option, one_format, print_json

if TYPE_CHECKING:
    from worker.domain import JobRow
    from worker.render.terminal import ScrubProgress
    from worker.scrub import Finding


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
) -> None:
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
    from worker.archive import Archive, make_s3_client
    from worker.restore import parse_duration
    from worker.restore import restore as restore_job

    seconds = parse_duration(timeout) if wait else None
    settings = ctx.settings
    settings.provider(provider)
    archive = Archive(make_s3_client(settings.archive), settings.archive)
    bad = thawing = total = 0
    records = []
    files = restore_job(
        archive, settings, provider, job_id, to=None if verify_only else to, wait=seconds
    )
    for item in files:
        total += 1
        where = str(item.path) if item.path else item.key
        records.append(dataclasses.asdict(item))
        if item.ok:
            if not as_json:
                click.echo(f"ok        {where}  {item.size} bytes")
                if item.note:
                    click.echo(f"  note: {item.note}")
        elif item.waiting:
            thawing += 1
            if not as_json:
                click.echo(f"WAITING   {where}: {item.waiting}")
        else:
            bad += 1
            if not as_json:
                click.echo(f"PROBLEM   {where}: {item.problem}")
    verb = "verified" if verify_only else "restored"
    code = exits.INCOMPLETE if bad or thawing else exits.OK
    if as_json:
        print_json(
            {
                "provider": provider,
                "job_id": job_id,
                "mode": verb,
                "ok": code == exits.OK,
                "files": records,
                verb: total - bad - thawing,
                "problems": bad,
                "waiting": thawing,
            }
        )
        sys.exit(code)
    summary = f"{provider} job {job_id}: {total - bad - thawing} of {total} file(s) {verb}"
    if bad:
        summary += f"; {bad} missing or different"
    if thawing:
        summary += f"; {thawing} waiting for a restore from cold storage"
    click.echo(summary)
    sys.exit(code)


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
) -> None:
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
    one_format(as_json, as_jsonl)
    from worker import metrics
    from worker.archive import Archive, make_s3_client
    from worker.domain import utcnow
    from worker.errors import ArchiveError
    from worker.reports import parse_since
    from worker.scrub import scrub as scrub_archive

    settings = ctx.settings
    if provider is not None:
        settings.provider(provider)
    since_at = parse_since(since, utcnow()) if since else None
    archive = Archive(make_s3_client(settings.archive), settings.archive)
    try:
        # An archive that cannot be reached is one error (exit 3), not a finding per job;
        # any other answer is left to the scrub, which names what it finds per file.
        archive.check_bucket()
    except ArchiveError as exc:
        if exits.is_unreachable(exc):
            raise
    ledger = ctx.ledger()
    machine = as_json or as_jsonl
    watched = not machine and not ctx.quiet and interactive()
    lock = threading.Lock()
    progress: ScrubProgress | None = None

    def seen(row: JobRow, found: list[Finding]) -> None:
        lines = _finding_lines(found)
        if as_jsonl:
            record = {
                "message_type": "job",
                "provider": row.provider,
                "job_id": row.job_id,
                "manifest_key": row.manifest_key,
                "findings": [dataclasses.asdict(f) for f in found],
            }
            with lock:
                print_json(record)
        elif progress is not None:
            progress(row, found, lines)
        elif not machine:
            for line in lines:
                click.echo(line)

    if watched:
        from worker.render.terminal import ScrubProgress

        with ScrubProgress() as progress:
            result = scrub_archive(
                archive,
                ledger,
                provider=provider,
                since=since_at,
                read_fraction=read_fraction,
                on_job=seen,
            )
    else:
        result = scrub_archive(
            archive,
            ledger,
            provider=provider,
            since=since_at,
            read_fraction=read_fraction,
            on_job=seen,
        )
    metrics.record_scrub(findings=len(result.findings))
    code = exits.OK if result.clean else exits.INCOMPLETE
    if machine:
        print_json(
            {
                "message_type": "summary",
                "jobs": result.jobs,
                "files": result.files,
                "read": result.read,
                "bytes_read": result.bytes_read,
                "cold_skipped": result.cold_skipped,
                "clean": result.clean,
                "findings": [dataclasses.asdict(f) for f in result.findings],
                "exit_code": code,
            }
        )
        sys.exit(code)
    text = f"scrubbed {result.jobs} job(s), {result.files} file(s)"
    if read_fraction:
        text += f"; read back {result.read} ({result.bytes_read} bytes)"
        if result.cold_skipped:
            text += f", {result.cold_skipped} in cold storage not read"
    keys = len({(f.provider, f.job_id, f.key) for f in result.findings})
    click.echo(text + (f"; {keys} key(s) damaged or missing" if keys else "; all intact"))
    sys.exit(code)


def _finding_lines(found: list[Finding]) -> list[str]:
    """One line per damaged or missing key, its problems together."""
    by_key: dict[str, list[str]] = {}
    for finding in found:
        by_key.setdefault(finding.key, []).append(finding.problem)
    lines = []
    for key, problems in by_key.items():
        missing = all(p.startswith(("missing", "the manifest is missing")) for p in problems)
        lines.append(f"{'MISSING' if missing else 'DAMAGED':<8} {key}: {'; '.join(problems)}")
    return lines
