"""The `retention` command: sweeps, tracking, holds and the ledger's status.

Exit codes: 0 the command ran (a sweep may have deferred jobs for retry); 1 a job failed
permanently, or the command could not finish; 2 a bad configuration or bad usage.

Heavy libraries (boto3, Celery, SQLAlchemy) are imported inside the commands that need them,
so `retention --help` stays quick.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from worker import __version__

if TYPE_CHECKING:
    from worker.ledger import Ledger
    from worker.outcomes import JobResult
    from worker.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn our errors into one or two lines and the documented exit code, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from worker.errors import ConfigError, WorkerError

        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            _fail(str(exc), EXIT_USAGE)
        except WorkerError as exc:
            _fail(str(exc), EXIT_FAILED)
        except KeyboardInterrupt:
            _fail("interrupted; jobs in flight resume on the next sweep", EXIT_FAILED)
        except click.ClickException:
            raise  # click prints usage errors itself and exits with 2
        except Exception as exc:
            from worker.logging import get_logger
            from worker.redact import REDACTOR

            get_logger("worker.cli").debug("command_crashed", exc_info=True)
            _fail(
                REDACTOR.scrub(f"unexpected {type(exc).__name__}: {exc}")
                + "\n(set RETENTION_LOG_LEVEL=DEBUG and run again for details)",
                EXIT_FAILED,
            )
        return None

    return wrapper  # type: ignore[return-value]


class Context:
    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from worker.redact import register_secrets
            from worker.settings import load_settings

            self._settings = load_settings(self.config)
            register_secrets(self._settings.secret_values())
        return self._settings

    def start_logging(self, *, watched: bool = False) -> None:
        """Structured logs for a command that does work: JSON lines on stdout, or, when a
        person watches a progress bar, warnings on stderr (unless RETENTION_LOG_LEVEL says)."""
        from worker.logging import LEVEL_ENV, configure_logging

        if watched:
            configure_logging(
                stream=sys.stderr, level=None if os.environ.get(LEVEL_ENV) else logging.WARNING
            )
        else:
            configure_logging()

    def providers(self, names: tuple[str, ...]) -> list[str]:
        settings = self.settings
        chosen = list(dict.fromkeys(names)) or list(settings.providers)
        for name in chosen:
            settings.provider(name)
        if not chosen:
            from worker.errors import ConfigError

            raise ConfigError("the configuration has no [providers.NAME] tables")
        return chosen

    def ledger(self) -> Ledger:
        from worker.ledger import Ledger

        s = self.settings
        return Ledger.open(s.ledger.url, auto_migrate=s.ledger.auto_migrate)


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config",
    envvar="RETENTION_CONFIG",
    metavar="PATH",
    help="The TOML configuration (default: $RETENTION_CONFIG).",
)
@click.version_option(__version__, prog_name="retention")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Archive a processing API's outputs to your own S3 bucket, verify them, then delete
    them at the vendor.

    \b
    Example:
      retention --config /etc/retention.toml sweep --dry-run
    """
    ctx.obj = Context(config)


@cli.command()
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
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="End with one JSON line of counts (archived, deleted, deferred, ...).",
)
@click.option(
    "--enqueue",
    is_flag=True,
    help="Send the sweep to the Celery workers instead of running it here.",
)
@pass_ctx
@handle_errors
def sweep(
    ctx: Context, providers: tuple[str, ...], dry_run: bool, as_json: bool, enqueue: bool
) -> None:
    """Run one retention sweep now.

    \b
    Example:
      retention sweep --provider daily --dry-run
      retention sweep --json
    """
    if dry_run and enqueue:
        raise click.UsageError("--dry-run runs here; it cannot be combined with --enqueue")
    names = ctx.providers(providers)
    if enqueue:
        ctx.start_logging()
        _enqueue(ctx.settings, names, as_json)
        return
    from worker.bootstrap import build_runtime
    from worker.render import json_document, summary_line
    from worker.sweep import failed_permanently, sweep_provider

    # A person at a terminal gets a progress bar and a table, with the log on stderr.
    watched = not as_json and _interactive()
    ctx.start_logging(watched=watched)
    rt = build_runtime(ctx.settings, dry_run=dry_run, only=names)
    try:
        if watched:
            from worker.terminal import SweepProgress

            with SweepProgress(names, dry_run=dry_run) as progress:
                reports = [sweep_provider(rt, name, on_result=progress) for name in names]
        else:
            printer = _printer(dry_run=dry_run)
            reports = [sweep_provider(rt, name, on_result=printer) for name in names]
    finally:
        rt.close()
    summaries = [report.summary() for report in reports]
    if watched:
        from worker.terminal import sweep_table

        sweep_table(summaries)
    else:
        for summary in summaries:
            click.echo(summary_line(summary))
    if as_json:
        click.echo(json_document(summaries))
    if failed_permanently(reports):
        sys.exit(EXIT_FAILED)


def _printer(*, dry_run: bool) -> Callable[[JobResult], None]:
    """One line per job that changed, or would change, or needs attention."""
    from worker.render import job_line

    def show(result: JobResult) -> None:
        for line in job_line(result, dry_run=dry_run):
            click.echo(line)

    return show


def _interactive() -> bool:
    """A person is watching: stdout is a terminal, and not a dumb one or a CI log. Checked
    here, so scripts and pipes never import rich."""
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and not os.environ.get("CI")


def _enqueue(settings: Settings, names: list[str], as_json: bool) -> None:
    from worker.celery_app import configure_app

    app = configure_app(settings)
    sent = []
    for name in names:
        result = app.send_task("retention.sweep", args=[name], queue=settings.broker.queue)
        sent.append({"provider": name, "task_id": result.id})
        click.echo(f"enqueued a sweep of {name} (task {result.id})")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "enqueued": sent,
                    "archived": 0,
                    "deleted": 0,
                    "deferred": 0,
                    "failed": 0,
                    "skipped": 0,
                },
                sort_keys=True,
            )
        )


@cli.command()
@click.argument("provider")
@click.argument("job_ids", nargs=-1, required=True)
@pass_ctx
@handle_errors
def track(ctx: Context, provider: str, job_ids: tuple[str, ...]) -> None:
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
    click.echo(f"tracking {len(job_ids)} job(s) of {provider}; {len(added)} new")


@cli.command()
@click.argument("provider")
@click.argument("job_id")
@click.option("--reason", help="Why, for the audit trail (a case number, say).")
@pass_ctx
@handle_errors
def hold(ctx: Context, provider: str, job_id: str, reason: str | None) -> None:
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
    click.echo(f"{provider} job {job_id} is held" + ("" if changed else " (it already was)"))


@cli.command()
@click.argument("provider")
@click.argument("job_id")
@pass_ctx
@handle_errors
def release(ctx: Context, provider: str, job_id: str) -> None:
    """Lift a legal hold; the next sweep treats the job normally.

    \b
    Example:
      retention release daily 3ab8faa2-8ba2-4ee6-bd15-003a92c18245
    """
    from worker.domain import utcnow

    ctx.settings.provider(provider)
    changed = ctx.ledger().operator.set_hold(provider, job_id, held=False, now=utcnow())
    click.echo(f"{provider} job {job_id} " + ("released" if changed else "was not held"))


@cli.command()
@click.argument("provider")
@click.argument("job_id")
@pass_ctx
@handle_errors
def retry(ctx: Context, provider: str, job_id: str) -> None:
    """Put a job that failed permanently back in line for the next sweep.

    \b
    Example:
      retention retry daily 3ab8faa2-8ba2-4ee6-bd15-003a92c18245
    """
    from worker.domain import utcnow

    ctx.settings.provider(provider)
    if ctx.ledger().operator.retry(provider, job_id, now=utcnow()):
        click.echo(f"{provider} job {job_id} will be tried again on the next sweep")
    else:
        _fail(f"{provider} job {job_id} is not in the failed state", EXIT_FAILED)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_ctx
@handle_errors
def status(ctx: Context, as_json: bool) -> None:
    """Show the ledger by provider and state; overdue jobs, jobs kept at the provider (with
    why) and failed jobs.

    \b
    Example:
      retention status --json
    """
    from worker.domain import utcnow

    settings = ctx.settings
    days = {name: settings.policy(name).retain_days for name in settings.providers}
    statuses = ctx.ledger().query.status(days, now=utcnow())
    if as_json:
        click.echo(
            json.dumps(
                {"providers": [dataclasses.asdict(s) for s in statuses]},
                sort_keys=True,
                default=str,
            )
        )
        return
    if _interactive():
        from worker.terminal import status_tables

        status_tables(statuses)
        return
    if not statuses:
        click.echo("the ledger is empty")
    for s in statuses:
        states = ", ".join(f"{k} {v}" for k, v in sorted(s.states.items())) or "no jobs"
        click.echo(f"{s.provider}: {states}; held {s.held}; overdue {s.overdue_count}")
        for job in s.overdue:
            error = f" - {job.last_error}" if job.last_error else ""
            click.echo(f"  overdue {job.job_id} ({job.state}, due {job.due_at}){error}")
        for kept in s.kept:
            click.echo(f"  kept    {kept.job_id}: {kept.reason}")
        for failed in s.failed:
            click.echo(
                f"  failed  {failed.job_id} after {failed.attempts} attempt(s): {failed.last_error}"
            )


@cli.command()
@click.option(
    "--skip-providers",
    is_flag=True,
    help="Do not call the providers' APIs, and write no probe object (a container health check).",
)
@click.option(
    "--no-probe",
    is_flag=True,
    help="Write no probe object to the archive bucket (read-only checks only).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_ctx
@handle_errors
def check(ctx: Context, skip_providers: bool, no_probe: bool, as_json: bool) -> None:
    """Check the configuration, the archive bucket, the ledger (and pending migrations), the
    broker, and each provider's credentials. One line per check: "ok", "warn" (works, but
    the server lacks an optional feature or a setting could be better) or "FAILED"; exits 1
    if any failed.

    The archive's notes say what its server supports: Object Lock, versioning and, from a
    probe that writes and removes a few tiny objects under {prefix}.retention-probe/,
    conditional writes, stored checksums, the multipart ETag form and SSE-KMS. They end with
    the [archive] settings this server needs.

    \b
    Example:
      retention check
      retention check --skip-providers     # the image's HEALTHCHECK
    """
    from worker.check import run_checks
    from worker.settings import config_path

    ctx.start_logging(watched=_interactive())
    failed = False
    results = []
    marks = {"ok": "ok", "warn": "warn", "failed": "FAILED"}
    checks = run_checks(
        ctx.settings,
        config_path(ctx.config),
        providers=not skip_providers,
        probe=not (skip_providers or no_probe),
    )
    for result in checks:
        failed = failed or not result.ok
        results.append(dataclasses.asdict(result))
        if not as_json:
            click.echo(f"{marks[result.level]:<6}  {result.name}: {result.detail}")
            for note in result.notes:
                click.echo(f"        {marks[note.level]:<6}  {note.name}: {note.detail}")
    if as_json:
        click.echo(json.dumps({"ok": not failed, "checks": results}, sort_keys=True))
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@cli.command()
@click.option(
    "--since",
    default="30d",
    show_default=True,
    metavar="WHEN",
    help="A duration back from now (30d, 12h, 2w) or an ISO date.",
)
@click.option("--provider", metavar="NAME", help="Only this provider.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@pass_ctx
@handle_errors
def report(ctx: Context, since: str, provider: str | None, fmt: str) -> None:
    """List every deleted job: when it became due, was archived and was deleted, where its
    archive is, and what the provider answered. The document a compliance officer asks for.

    \b
    Example:
      retention report --since 90d --format csv > deletions.csv
    """
    from worker.domain import utcnow
    from worker.reports import REPORT_FIELDS, parse_since
    from worker.reports import report as build_report

    if provider is not None:
        ctx.settings.provider(provider)
    rows = build_report(
        ctx.ledger(), ctx.settings, since=parse_since(since, utcnow()), provider=provider
    )
    if fmt == "json":
        click.echo("[", nl=False)
        for n, row in enumerate(rows):
            click.echo(("," if n else "") + "\n" + json.dumps(row, sort_keys=True), nl=False)
        click.echo("\n]")
    elif fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=REPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row | {"archive_keys": ";".join(row["archive_keys"])})
    elif _interactive():
        from worker.terminal import report_table

        report_table(rows)
    else:
        for row in rows:
            click.echo(
                f"{row['provider']}  {row['job_id']}  due {row['due_at']}  archived "
                f"{row['archived_at']}  deleted {row['deleted_at']}  {row['files']} "
                f"file(s) {row['bytes']} bytes  {row['manifest_key']}  "
                f"{row['provider_answer']} ({row['provider_status_code']})"
            )


@cli.command()
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
) -> None:
    """Get an archived job back: each file is read from the archive and checked against the
    manifest (size and SHA-256). Exits 1 if any file is missing, differs, or is still
    thawing.

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
    files = restore_job(
        archive, settings, provider, job_id, to=None if verify_only else to, wait=seconds
    )
    for item in files:
        total += 1
        where = str(item.path) if item.path else item.key
        if item.ok:
            click.echo(f"ok        {where}  {item.size} bytes")
            if item.note:
                click.echo(f"  note: {item.note}")
        elif item.waiting:
            thawing += 1
            click.echo(f"WAITING   {where}: {item.waiting}")
        else:
            bad += 1
            click.echo(f"PROBLEM   {where}: {item.problem}")
    verb = "verified" if verify_only else "restored"
    summary = f"{provider} job {job_id}: {total - bad - thawing} of {total} file(s) {verb}"
    if bad:
        summary += f"; {bad} missing or different"
    if thawing:
        summary += f"; {thawing} waiting for a restore from cold storage"
    click.echo(summary)
    sys.exit(EXIT_FAILED if bad or thawing else EXIT_OK)


@cli.command()
@pass_ctx
@handle_errors
def migrate(ctx: Context) -> None:
    """Bring the ledger's schema up to date.

    \b
    Example:
      retention migrate
    """
    from worker.ledger import Ledger, make_engine
    from worker.ledger import migrate as run_migrations

    engine = make_engine(ctx.settings.ledger.url)
    run_migrations(engine)
    click.echo(f"the ledger is at schema {Ledger(engine).schema_revision()}")


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the demo's working folder afterwards.")
@handle_errors
def demo(keep: bool) -> None:
    """Run the whole pipeline against simulated providers and a local S3 server.

    Needs nothing but this package and its demo extra: no credentials, no network.

    \b
    Example:
      retention demo
    """
    from worker.demo import run_demo

    run_demo(keep=keep)


def main() -> None:
    cli(prog_name="retention")


if __name__ == "__main__":
    main()
