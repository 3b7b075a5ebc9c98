"""`retention exporter`: the ledger's state as Prometheus gauges, served by one process."""

from __future__ import annotations

import click

from worker import exits
from worker.cli.context import Context, pass_ctx
from worker.cli.errors import CommandFailed, handle_errors


@click.command()
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Listen on this port (default: [metrics] port)."
)
@click.option("--address", help="Listen on this address (default: [metrics] address).")
@pass_ctx
@handle_errors
def exporter(ctx: Context, port: int | None, address: str | None) -> None:
    """Serve the ledger's gauges on /metrics until stopped (SIGTERM, Ctrl-C): jobs by state,
    held, overdue and failed jobs, the oldest overdue job's lateness, and whether the ledger
    could be read.

    The ledger is the same for every worker, so one exporter serves its state, as
    kube-state-metrics serves a cluster's; the workers serve what they themselves did. Run
    exactly one (deploy/k8s: the retention-exporter Deployment). It reads the ledger
    read-only, at most every [metrics] ledger_cache_seconds, and calls nothing else.

    \b
    Example:
      retention exporter --port 9810
    """
    from worker.metrics.serving import run_exporter

    settings = ctx.settings
    try:
        run_exporter(settings, port=port, address=address)
    except OSError as exc:
        where = f"{address or settings.metrics.address}:{port or settings.metrics.port}"
        raise CommandFailed(
            f"the exporter cannot listen on {where}: {exc}. Give it a free port (--port, or "
            "RETENTION_METRICS__PORT)",
            exits.UNREACHABLE,
        ) from exc
