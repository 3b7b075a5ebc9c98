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

A module per group of commands: ``sweep``; ``ledger`` (track, hold, release, retry, status,
migrate); ``reports`` (check, report); ``archive`` (restore, scrub); ``config`` (and init);
``exporter`` (the ledger's gauges, served). Each command parses its options, makes one call
outside the CLI (``worker.operations``, ``check``, ``reports``, ``restore``, ``scrub``,
``config_view``, ``config_init``, ``tracking``, ``metrics.serving``, or the ledger's
``operator``), and hands what comes back to a view of ``worker.render``, in the form the
options ask for.
``context`` builds what the commands share, once (the settings, the logging, the ledger and
archive clients); ``errors`` turns the exit code a command returns, or the error it raises,
into the process's exit, in one place.

Heavy libraries (boto3, Celery, SQLAlchemy, structlog, rich) are imported inside the commands
that need them, so `retention --help` stays quick.
"""

from __future__ import annotations

from pathlib import Path

import click

from worker import __version__, exits
from worker.cli.archive import restore, scrub
from worker.cli.config import config_group, init
from worker.cli.context import Context
from worker.cli.errors import handle_errors
from worker.cli.exporter import exporter
from worker.cli.ledger import hold, migrate, release, retry, status, track
from worker.cli.reports import check, report
from worker.cli.sweep import sweep


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


for command in (
    sweep,
    *(track, hold, release, retry, status, migrate),
    *(check, report, exporter),
    *(restore, scrub),
    config_group,
    init,
):
    cli.add_command(command)


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the demo's working folder afterwards.")
@click.option(
    "--serve",
    is_flag=True,
    help="Start the simulated providers and the S3 server, write a configuration for them, "
    "and keep them running until Ctrl-C, to try each command by hand.",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --serve: the folder for the configuration and the ledger (default: a new one).",
)
@handle_errors
def demo(keep: bool, serve: bool, folder: Path | None) -> None:
    """Run the whole pipeline against simulated providers and a local S3 server.

    Needs nothing but this package and its demo extra: no credentials, no network. With
    --serve, nothing runs by itself: the servers wait for your commands, which it prints.

    \b
    Example:
      retention demo
      retention demo --serve
    """
    if serve:
        from worker.demo import serve_demo

        serve_demo(folder)
        return
    if folder is not None:
        raise click.UsageError("--dir goes with --serve")
    from worker.demo import run_demo

    run_demo(keep=keep)


def main() -> None:
    """The console script `retention` (and `python -m worker`)."""
    cli(prog_name="retention")
