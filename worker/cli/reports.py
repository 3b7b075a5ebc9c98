"""Checking and reporting: `retention check` and `retention report`."""

from __future__ import annotations

import click

from worker import exits
from worker.cli.context import Context, pass_ctx
from worker.cli.errors import handle_errors
from worker.cli.options import json_option, output_format
from worker.render.view import show


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
def check(ctx: Context, skip_providers: bool, no_probe: bool, as_json: bool) -> int:
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
    from worker.check import check_all
    from worker.render.checks import CheckView
    from worker.settings import config_path

    run = check_all(
        ctx.settings,
        config_path(ctx.config),
        providers=not skip_providers,
        probe=not (skip_providers or no_probe),
    )
    show(CheckView(run), output_format(as_json=as_json))
    return exits.INCOMPLETE if run.failed else exits.OK


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
    help='table (the default), csv, or json (one JSON document, the rows under "jobs").',
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
      retention report --json | jq '.jobs | length'
    """
    from worker.domain import utcnow
    from worker.render.report import ReportView
    from worker.reports import parse_since
    from worker.reports import report as deleted_jobs

    if as_json:
        if fmt not in (None, "json"):
            raise click.UsageError(f"--json is --format json; it cannot go with --format {fmt}")
        fmt = "json"
    since_at = parse_since(since, utcnow())
    if provider is not None:
        ctx.provider(provider)
    rows = deleted_jobs(ctx.ledger(), ctx.settings, since=since_at, provider=provider)
    view = ReportView(rows, since=since_at, provider=provider)
    if fmt == "csv":
        view.csv()
    else:
        show(view, output_format(as_json=fmt == "json"))
