"""``python -m bench``: every benchmark case, each printed next to its peer.

    python -m bench                      # every case, full size (about 30-40 minutes here)
    python -m bench --quick              # a smoke run of every case (a few minutes)
    python -m bench archive sweep        # only these cases
    python -m bench --s3 moto,s3rver     # S3 servers (default moto; s3rver is fetched with npm)
    python -m bench --json out.json      # also write every figure as JSON
    python -m bench archive --archive-gib 0.5,1 --repeat 1
    python -m bench sweep --jobs 100 --latency 0,25 --repeat 1

Cases: archive (1), sweep (2), scale (3), startup (4). docs/performance.md shows the
latest figures and how they were taken.

* archive: one large output from a link into S3, the project (Fetcher + store_stream)
  against ``rclone copyurl`` (``apt-get install -y rclone``; skipped if absent), at each
  size of ``--archive-gib``; peak RSS is the whole process's, start-up included.
* sweep: N due Daily jobs, the worker (``retention sweep``, each ``--concurrency``) against
  a naive loop (plain httpx + boto3, nothing of the project) and a same-clients loop, at
  each ``--latency``: wall time, CPU/job, S3 and provider requests/job, S3 server CPU/job,
  peak RSS, and what Daily's default rate limit alone would cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.util import machine, machine_line

CASES = ("archive", "sweep", "scale", "startup")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per figure")
    parser.add_argument(
        "--s3", default="moto", help="S3 servers, comma-separated: moto,s3rver (default moto)"
    )
    parser.add_argument(
        "--archive-gib",
        default=None,
        help="case 1: output sizes in GiB, comma-separated (default 0.5,1; --quick: 0.5)",
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="case 2: due jobs (default 1000; --quick: 100)"
    )
    parser.add_argument(
        "--concurrency",
        default=None,
        help="case 2: worker concurrencies to run, comma-separated (default 4,8; --quick: 8); "
        "the naive and same-clients loops always run",
    )
    parser.add_argument(
        "--latency",
        default=None,
        help="case 2: provider round trips to emulate, in ms, comma-separated (default: 0,25); "
        "targets are judged at 0 and 25 ms",
    )
    parser.add_argument(
        "--scale",
        default=None,
        help="case 3: ledger sizes, comma-separated (default 1000,10000,100000)",
    )
    parser.add_argument(
        "--pg",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="case 3: a PostgreSQL server to create the database retention_bench in ('' to skip)",
    )
    parser.add_argument("--json", dest="json_path", default=None, help="write figures here")
    options = parser.parse_args(argv)
    options.cases = options.cases or list(CASES)
    for case in options.cases:
        if case not in CASES:
            parser.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    quick = options.quick
    if options.repeat is None:
        options.repeat = 1 if quick else 5
    options.s3 = [s for s in options.s3.split(",") if s]
    options.archive_gib = [
        float(gib) for gib in (options.archive_gib or ("0.5" if quick else "0.5,1")).split(",")
    ]
    if options.jobs is None:
        options.jobs = 100 if quick else 1000
    options.concurrency = [
        int(c) for c in (options.concurrency or ("8" if quick else "4,8")).split(",")
    ]
    options.latency = [float(ms) for ms in (options.latency or "0,25").split(",")]
    options.scale = [
        int(n)
        for n in (options.scale or ("1000,10000" if quick else "1000,10000,100000")).split(",")
    ]
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    info = machine()
    print(f"# retention-worker benchmarks ({'quick' if options.quick else 'full'})")
    print(f"command: python -m bench {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {machine_line(info)}")
    print(f"S3 servers: {', '.join(options.s3)}; repetitions: {options.repeat}")
    results: dict[str, Any] = {"machine": info, "argv": sys.argv[1:], "cases": {}}
    runners: dict[str, Callable[[Any], dict[str, Any]]] = {}
    from bench import case_archive, case_scale, case_startup, case_sweep

    runners = {
        "archive": case_archive.run,
        "sweep": case_sweep.run,
        "scale": case_scale.run,
        "startup": case_startup.run,
    }
    for name in CASES:
        if name not in options.cases:
            continue
        started = time.monotonic()
        print(f"\n## {name}", flush=True)
        results["cases"][name] = runners[name](options)
        print(f"\n({name} took {time.monotonic() - started:.0f} s)", flush=True)
    results["machine_after"] = machine()
    print(
        f"\nload average at the end: {', '.join(str(x) for x in results['machine_after']['load'])}"
    )
    if options.json_path:
        Path(options.json_path).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
