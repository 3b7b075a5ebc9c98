"""Checking and reporting: `retention check` and `retention report`."""

from __future__ import annotations

import dataclasses
import json
import sys

import click

from worker import exits
from worker.cli.context import Context, pass_ctx
from worker.cli.errors import handle_errors
from worker.cli.options import interactive, json_option, print_json


@click.command()
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
        print_json({"ok": not failed, "checks": results})
    sys.exit(exits.INCOMPLETE if failed else exits.OK)


@click.command()
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
    elif interactive():
        from worker.render.terminal import report_table

        report_table(rows)
    else:
        for row in rows:
            click.echo(
                f"{row['provider']}  {row['job_id']}  due {row['due_at']}  archived "
                f"{row['archived_at']}  deleted {row['deleted_at']}  {row['files']} "
                f"file(s) {row['bytes']} bytes  {row['manifest_key']}  "
                f"{row['provider_answer']} ({row['provider_status_code']})"
            )
