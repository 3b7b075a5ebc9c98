"""The `retention` command: sweeps, tracking, holds, the ledger's status, the archive's scrub
and the configuration.

Its contract with scripts (cron, CI, runbooks), after rclone and restic:

* stdout holds results and nothing else; logs and errors go to stderr. With ``--json`` stdout
  is exactly one JSON document; with ``--jsonl`` one JSON object per line, a job's result
  at a time, then one with the totals. Each object says what it is in ``message_type``.
* Exit codes (``worker.exits``): 0 all good; 1 some jobs failed, were deferred or kept; 2 a
  usage or configuration error; 3 a provider, the archive, the ledger or Redis was
  unreachable, or a listing failed; 4 the delete brake stopped the sweep; 130 interrupted.
  2 > 130 > 3 > 4 > 1 > 0.
* Logs: ``-v``/``-q`` a level more or less (from ``RETENTION_LOG_LEVEL``, else INFO, or
  WARNING at a terminal); ``--log-format json|console``.

Heavy libraries (boto3, Celery, SQLAlchemy, structlog, rich) are imported inside the commands
that need them, so `retention --help` stays quick.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from worker import __version__, exits

if TYPE_CHECKING:
    from worker.domain import JobRow
    from worker.ledger import Ledger
    from worker.outcomes import JobResult
    from worker.scrub import Finding
    from worker.settings import Settings
    from worker.terminal import ScrubProgress

F = TypeVar("F", bound=Callable[..., Any])

# The keyword arguments by which a command asks for machine-readable output.
_JSON_MODES = ("as_json", "as_jsonl")


def _fail(message: str, code: int, *, as_json: bool = False) -> None:
    """One error on stderr: a line or two for a person, or one JSON object (restic's
    ``exit_error``) when the command was asked for JSON."""
    if as_json:
        error = {"message_type": "exit_error", "code": code, "message": message}
        click.echo(json.dumps(error, sort_keys=True), err=True)
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn our errors into one or two lines and the documented exit code, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from worker.errors import ConfigError, WorkerError

        as_json = any(kwargs.get(mode) for mode in _JSON_MODES) or kwargs.get("fmt") == "json"
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            _fail(str(exc), exits.USAGE, as_json=as_json)
        except WorkerError as exc:
            code = exits.UNREACHABLE if exits.is_unreachable(exc) else exits.INCOMPLETE
            _fail(str(exc), code, as_json=as_json)
        except KeyboardInterrupt:
            _fail(
                "interrupted; jobs in flight resume on the next sweep",
                exits.INTERRUPTED,
                as_json=as_json,
            )
        except click.ClickException:
            raise  # click prints usage errors itself and exits with 2
        except BrokenPipeError as exc:
            if _stdout_gone():
                # The reader went away (`retention status | head -1`): click silences
                # stdout and exits with 1, as git does, instead of an "unexpected" error.
                raise
            _unexpected(exc, as_json=as_json)
        except Exception as exc:
            _unexpected(exc, as_json=as_json)
        return None

    return wrapper  # type: ignore[return-value]


def _unexpected(exc: Exception, *, as_json: bool) -> None:
    from worker.logging import get_logger
    from worker.redact import REDACTOR

    get_logger("worker.cli").debug("command_crashed", exc_info=True)
    _fail(
        REDACTOR.scrub(f"unexpected {type(exc).__name__}: {exc}")
        + "\n(run again with -v, or RETENTION_LOG_LEVEL=DEBUG, for details)",
        exits.INCOMPLETE,
        as_json=as_json,
    )


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone: its write end polls POLLERR. A broken
    pipe anywhere else is an error to report, not a reader that stopped reading."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (io.UnsupportedOperation)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _fd, events in poller.poll(0))


class Context:
    def __init__(
        self, config: str | None, *, verbosity: int = 0, log_format: str | None = None
    ) -> None:
        self.config = config
        self.verbosity = verbosity
        self.log_format = log_format
        self._settings: Settings | None = None
        self._logging = False

    @property
    def quiet(self) -> bool:
        """-q: no progress lines or bars; results only."""
        return self.verbosity < 0

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from worker.redact import register_secrets
            from worker.settings import load_settings

            self.start_logging()
            self._settings = load_settings(self.config)
            register_secrets(self._settings.secret_values())
        return self._settings

    def start_logging(self) -> None:
        """Logs on stderr, whatever the command prints: JSON lines, or for reading when
        stderr is a terminal; INFO, or WARNING at a terminal, moved by -v and -q."""
        if self._logging:
            return
        # Deferred: structlog is imported when something logs, so a command that logs
        # nothing (status, config show) never loads it.
        from worker.logsetup import STDERR, cli_level, defer

        at_terminal = sys.stderr.isatty()
        as_json = self.log_format == "json" if self.log_format else not at_terminal
        defer(level=cli_level(self.verbosity, at_terminal=at_terminal), json=as_json, stream=STDERR)
        self._logging = True

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


def json_option(fn: F) -> F:
    option = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document on stdout, and nothing else there.",
    )
    return option(fn)


def jsonl_option(fn: F) -> F:
    option = click.option(
        "--jsonl",
        "as_jsonl",
        is_flag=True,
        help="Print a JSON line per job as it finishes, then one with the totals.",
    )
    return option(fn)


def _print_json(document: Any) -> None:
    click.echo(json.dumps(document, sort_keys=True, default=str))


def _one_format(as_json: bool, as_jsonl: bool) -> None:
    if as_json and as_jsonl:
        raise click.UsageError("give --json or --jsonl, not both")


def _interactive() -> bool:
    """A person is watching: stdout is a terminal, and not a dumb one or a CI log. Checked
    here, so scripts and pipes never import rich."""
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and not os.environ.get("CI")


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=exits.help_text(),
)
@click.option(
    "--config",
    "config",
    envvar="RETENTION_CONFIG",
    metavar="PATH",
    help="The TOML configuration (default: $RETENTION_CONFIG).",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log more: one level per -v (DEBUG from the default INFO).",
)
@click.option(
    "-q",
    "--quiet",
    count=True,
    help="Log less (one level per -q), and print no progress: results only.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    envvar="RETENTION_LOG_FORMAT",
    help="Logs (on stderr) as JSON lines or for reading. Default: console at a terminal, "
    "json elsewhere.",
)
@click.version_option(__version__, prog_name="retention")
@click.pass_context
def cli(
    ctx: click.Context, config: str | None, verbose: int, quiet: int, log_format: str | None
) -> None:
    """Archive a processing API's outputs to your own S3 bucket, verify them, then delete
    them at the vendor.

    Results go to stdout (one JSON document with --json), logs and errors to stderr.
    RETENTION_LOG_LEVEL sets the log level; -v and -q move it from there.

    \b
    Example:
      retention --config /etc/retention.toml sweep --dry-run
      retention -q sweep --json > sweep.json
    """
    ctx.obj = Context(config, verbosity=verbose - quiet, log_format=log_format)


# -- sweep ----------------------------------------------------------------------------------


@cli.command(epilog=exits.help_text())
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
    _one_format(as_json, as_jsonl)
    if dry_run and enqueue:
        raise click.UsageError("--dry-run runs here; it cannot be combined with --enqueue")
    names = ctx.providers(providers)
    if enqueue:
        _enqueue(ctx.settings, names, as_json=as_json or as_jsonl)
        return
    from worker.bootstrap import build_runtime
    from worker.render import json_document, summary_line
    from worker.sweep import sweep_provider

    machine = as_json or as_jsonl
    table = not machine and _interactive()
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
            from worker.terminal import SweepProgress

            with SweepProgress(names, dry_run=dry_run) as progress:
                reports = [sweep_provider(rt, name, on_result=progress) for name in names]
        else:
            reports = [sweep_provider(rt, name, on_result=on_result) for name in names]
    finally:
        rt.close()
    summaries = [report.summary() for report in reports]
    code = exits.sweep_exit_code(summaries)
    if not dry_run:
        from worker.metrics import export as metrics

        # CLI-only users: the same metrics, through a textfile or a Pushgateway (optional).
        # Before the results are printed, which fails if the reader has gone.
        metrics.export_after_command(ctx.settings)
    if machine:
        click.echo(json_document(summaries, exit_code=code))
    elif table:
        from worker.terminal import sweep_table

        sweep_table(summaries)
    else:
        for summary in summaries:
            click.echo(summary_line(summary))
    sys.exit(code)


def _printer(*, dry_run: bool) -> Callable[[JobResult], None]:
    """One line per job that changed, or would change, or needs attention."""
    from worker.render import job_line

    return _lines_out(lambda result: job_line(result, dry_run=dry_run))


def _job_lines() -> Callable[[JobResult], None]:
    """--jsonl: one JSON line per job, as it finishes."""
    from worker.render import job_record, json_line

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
        _print_json({"message_type": "enqueued", "queue": queue, "enqueued": sent})


# -- the ledger, by hand --------------------------------------------------------------------


@cli.command()
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
        _print_json({"provider": provider, "tracking": list(job_ids), "new": sorted(added)})
    else:
        click.echo(f"tracking {len(job_ids)} job(s) of {provider}; {len(added)} new")


@cli.command()
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
        _print_json({"provider": provider, "job_id": job_id, "held": True, "changed": changed})
    else:
        click.echo(f"{provider} job {job_id} is held" + ("" if changed else " (it already was)"))


@cli.command()
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
        _print_json({"provider": provider, "job_id": job_id, "held": False, "changed": changed})
    else:
        click.echo(f"{provider} job {job_id} " + ("released" if changed else "was not held"))


@cli.command()
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
        _print_json({"provider": provider, "job_id": job_id, "retried": retried})
    elif retried:
        click.echo(f"{provider} job {job_id} will be tried again on the next sweep")
    if not retried:
        _fail(
            f"{provider} job {job_id} is not in the failed state",
            exits.INCOMPLETE,
            as_json=as_json,
        )


@cli.command()
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
        _print_json({"providers": [dataclasses.asdict(s) for s in statuses]})
        return
    if _interactive():
        from worker.terminal import status_tables

        status_tables(statuses)
        return
    if not statuses:
        click.echo("the ledger is empty")
    from worker.render import status_more

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


# -- checking and reporting -----------------------------------------------------------------


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
@json_option
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
    from worker.schedules import check_schedules
    from worker.settings import config_path

    # A schedule beat would refuse is a configuration error (exit 2), as `config validate`
    # says: init containers gate on this command, and beat would exit 2 behind them.
    check_schedules(ctx.settings, config_path(ctx.config))
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
        _print_json({"ok": not failed, "checks": results})
    sys.exit(exits.INCOMPLETE if failed else exits.OK)


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
    help="table (the default), csv, or json (one JSON array).",
)
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@pass_ctx
@handle_errors
def report(ctx: Context, since: str, provider: str | None, fmt: str | None, as_json: bool) -> None:
    """List every deleted job: when it became due, was archived and was deleted, where its
    archive is, and what the provider answered. The document a compliance officer asks for.

    \b
    Example:
      retention report --since 90d --format csv > deletions.csv
      retention report --json | jq length
    """
    from worker.domain import utcnow
    from worker.reports import REPORT_FIELDS, parse_since
    from worker.reports import report as build_report

    if as_json:
        if fmt not in (None, "json"):
            raise click.UsageError(f"--json is --format json; it cannot go with --format {fmt}")
        fmt = "json"
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


# -- the archive ----------------------------------------------------------------------------


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
        _print_json(
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


@cli.command()
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
    _one_format(as_json, as_jsonl)
    from worker.archive import Archive, make_s3_client
    from worker.domain import utcnow
    from worker.errors import ArchiveError
    from worker.metrics import recorders as metrics
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
    watched = not machine and not ctx.quiet and _interactive()
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
                _print_json(record)
        elif progress is not None:
            progress(row, found, lines)
        elif not machine:
            for line in lines:
                click.echo(line)

    if watched:
        from worker.terminal import ScrubProgress

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
        _print_json(
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


@cli.command()
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
        _print_json({"schema": revision})
    else:
        click.echo(f"the ledger is at schema {revision}")


# -- the configuration ----------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """See the configuration the worker runs with, and check a file, offline.

    \b
    Example:
      retention config validate /etc/retention.toml
      retention config show
      retention config schema > retention.schema.json
    """


@config_group.command("validate")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--allow-unset",
    is_flag=True,
    help="Let ${NAME} references to unset variables pass, unchecked (in CI, where the "
    "secrets are not).",
)
@json_option
@pass_ctx
@handle_errors
def config_validate(ctx: Context, file: Path | None, allow_unset: bool, as_json: bool) -> None:
    """Check a configuration file without touching the network: TOML syntax, types, unknown
    keys, ${NAME} references, KEY_file files, RETENTION_* overrides and RETENTION_SECRETS_DIR.
    Once those pass, each schedule is built as Celery beat builds it, and must come round.
    Names every problem, each with its key; exits 2 if there is any.

    FILE defaults to --config, then $RETENTION_CONFIG.

    \b
    Example:
      retention config validate /etc/retention.toml
      retention config validate --allow-unset deploy/retention.toml   # in CI
    """
    from worker.errors import ConfigError
    from worker.settings import config_path, read_config

    source = config_path(file or ctx.config)
    try:
        found = read_config(source, allow_unset=allow_unset)
        if found.settings is not None:
            # Beat's own schedule objects, which need Celery: built here, not in every
            # command that reads the settings.
            from worker.schedules import schedule_problems

            wrong = tuple(schedule_problems(found.settings))
            if wrong:
                found = dataclasses.replace(found, settings=None, problems=wrong)
    except ConfigError as exc:  # no file to read, or not TOML: a problem like the others
        problems = [{"key": "", "message": str(exc)}]
        lines = [str(exc)]
        unchecked: tuple[str, ...] = ()
        providers: list[str] = []
    else:
        problems = [{"key": p.key, "message": p.message} for p in found.problems]
        lines = found.message().splitlines() if found.problems else []
        unchecked = found.unchecked
        providers = list(found.settings.providers) if found.settings else []
    if as_json:
        _print_json(
            {
                "file": str(source),
                "ok": not problems,
                "problems": problems,
                "unchecked": list(unchecked),
                "providers": providers,
            }
        )
    elif problems:
        for line in lines:
            click.echo(line)
    else:
        names = ", ".join(providers) or "none"
        click.echo(f"{source}: valid; providers: {names}")
        if unchecked:
            click.echo(f"  not checked (unset variables): {', '.join(unchecked)}")
    sys.exit(exits.USAGE if problems else exits.OK)


@config_group.command("show")
@json_option
@pass_ctx
@handle_errors
def config_show(ctx: Context, as_json: bool) -> None:
    """Print the configuration the worker runs with: each provider's effective policy (its
    own keys over [defaults]) and keys, and the archive, ledger, broker, downloads, worker
    and metrics sections, after RETENTION_* overrides, ${NAME} references and secret files.
    Credentials and URL passwords are shown as ********.

    \b
    Example:
      retention config show
      retention config show --json | jq '.providers.daily.retain_days'
    """
    from worker.config_view import effective_config, render_toml
    from worker.settings import config_path

    document = effective_config(ctx.settings, source=config_path(ctx.config))
    if as_json:
        _print_json(document)
    else:
        click.echo(render_toml(document), nl=False)


@config_group.command("schema")
@handle_errors
def config_schema() -> None:
    """Print the JSON Schema of the configuration file, for editors (Taplo, Even Better
    TOML, check-jsonschema). config/retention.schema.json is this output.

    \b
    Example:
      retention config schema > retention.schema.json
    """
    from worker.config_view import schema_text

    click.echo(schema_text(), nl=False)


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
