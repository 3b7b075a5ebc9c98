"""A sweep's memory at scale, in a process of its own.

``python -m bench.scale_child discover --config PATH --result PATH``
    ``sweep_provider`` on a Daily account whose listing holds N finished jobs that are not
    due yet: the listing is folded into the ledger page by page, then the candidates are
    looked up (none are due). Run twice on one ledger: first sighting, then steady state.

``python -m bench.scale_child walk --ledger URL --result PATH``
    Walk every candidate of a ledger whose N jobs are all due, batch by batch, as a sweep
    does before it hands each one to the thread pool (``sweep._candidate_batches``).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.util import child_stats


def discover(config: str) -> dict[str, Any]:
    from worker.bootstrap import build_runtime
    from worker.logsetup import configure_logging
    from worker.settings import Settings
    from worker.sweep import sweep_provider

    configure_logging(stream=Path("/dev/null").open("w"), json=True)  # noqa: SIM115
    settings = Settings.model_validate(json.loads(Path(config).read_text()))
    rt = build_runtime(settings)
    started = time.perf_counter()
    try:
        report = sweep_provider(rt, "daily")
    finally:
        seconds = time.perf_counter() - started
        rt.close()
    summary = report.summary()
    return {
        "seconds": seconds,
        "listed": summary.listed,
        "new": report.new,
        "dispatched": summary.dispatched,
    }


def walk(ledger_url: str, provider: str) -> dict[str, Any]:
    from worker.bootstrap import Runtime
    from worker.domain import utcnow
    from worker.ledger import Ledger
    from worker.sweep import _candidate_batches

    ledger = Ledger.open(ledger_url)
    rt: Any = Runtime.__new__(Runtime)  # _candidate_batches reads only rt.ledger
    rt.ledger = ledger
    now = utcnow()
    started = time.perf_counter()
    count = 0
    for batch, _last in _candidate_batches(
        rt,
        provider,
        start=now,
        cutoff=now - timedelta(days=7),
        refreshed_since=now - timedelta(minutes=1),
        resume=True,
    ):
        count += len(batch)
    seconds = time.perf_counter() - started
    ledger.close()
    return {"seconds": seconds, "candidates": count}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("discover", "walk"))
    parser.add_argument("--config")
    parser.add_argument("--ledger")
    parser.add_argument("--provider", default="daily")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    result = discover(args.config) if args.what == "discover" else walk(args.ledger, args.provider)
    result.update(child_stats())
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
