"""Case 2, concurrency within a sweep: N due Daily jobs, two small outputs each.

Project: ``sweep_provider`` (``retention sweep``) at each configured concurrency. Peer: a
sequential loop making the same requests through the same clients (bench/sweep_child.py).
Every run gets freshly added jobs, a fresh SQLite ledger and its own key prefix; the modes
alternate (rotated each repetition). The S3 server's CPU time is read from /proc before and
after each run.

Each latency in ``--latency`` is a run of its own. At 0 ms everything is on loopback and the
two cores are shared by the worker, the S3 server and the simulator: the sweep is bound by
CPU, and the table prints the ceiling that leaves to any concurrency (the loop's time over
the busiest process's CPU time per job). With a latency, the simulator answers every
provider and download request that much later, as a provider's API and file links do over
the internet (tens to hundreds of milliseconds); S3 stays on loopback with no delay.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.servers import S3Endpoint, SimProcess, base_settings, endpoints
from bench.util import Sample, describe, fmt_mib, python, run_measured, table, verdict

BUCKET = "bench-sweep"
SPEEDUP_TARGET = 2.0


class ModeRuns:
    def __init__(self) -> None:
        self.seconds = Sample()
        self.s3_cpu = Sample()  # per job
        self.sim_cpu = Sample()  # per job
        self.own_cpu = Sample()  # per job
        self.rss = Sample()
        self.problems: list[str] = []


def ledger_cpu_per_job(work: Path, jobs: int = 300) -> float:
    """CPU seconds one job's ledger steps cost on SQLite, in this process and one thread:
    the transactions a sweep makes for a due job with two files, from claim to release."""
    from datetime import UTC, datetime, timedelta

    from worker.domain import JobSnapshot, Phase
    from worker.ledger import FileRecord, Ledger

    ledger = Ledger.open(f"sqlite:///{work / 'lifecycle.db'}")
    now, ttl = datetime.now(UTC), timedelta(minutes=5)
    started = time.process_time()
    for n in range(jobs):
        job_id = f"job-{n}"
        row = ledger.jobs.claim("daily", job_id, owner="w", ttl=ttl, now=now)
        assert row is not None
        snapshot = JobSnapshot(job_id, "finished", Phase.SUCCEEDED, None, {"id": job_id})
        row = ledger.jobs.record_status(row, snapshot, owner="w", now=now)
        ledger.query.files(row.pk)
        records = [
            FileRecord(f"k{i}", 1, "0" * 64, "src", "etag", None, None, None) for i in (1, 2)
        ]
        for record in records:
            ledger.jobs.record_file(row, record, owner="w", now=now)
        row = ledger.jobs.mark_archived(row, owner="w", manifest_key="m", files=records, now=now)
        row = ledger.jobs.open_delete_gate(row, owner="w", now=now)
        ledger.query.files(row.pk)
        row = ledger.jobs.record_provider_deleted(row, {"status_code": 200}, owner="w", now=now)
        ledger.query.files(row.pk)
        ledger.jobs.mark_deleted(row, receipt_key="r", owner="w", now=now)
        ledger.jobs.release(row.pk, owner="w")
    spent = time.process_time() - started
    ledger.close()
    return spent / jobs


def run(options: Any) -> dict[str, Any]:
    modes = ["loop", *[f"project c={c}" for c in options.concurrency]]
    out: dict[str, Any] = {"jobs": options.jobs, "servers": {}}
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        ledger_cpu = ledger_cpu_per_job(work)
        out["ledger_cpu_per_job"] = ledger_cpu
        print(
            f"ledger steps of one due job (claim .. release, two files), SQLite, one thread: "
            f"{ledger_cpu * 1e3:.1f} ms of CPU per job",
            flush=True,
        )
        with SimProcess() as sim, endpoints(options.s3) as servers:
            for server in servers:
                out["servers"][server.name] = {}
                for latency in options.latency:
                    sim.set_latency(latency)
                    out["servers"][server.name][f"{latency:g} ms"] = _against(
                        options, work, sim, server, modes, latency
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _one(
    options: Any, work: Path, sim: SimProcess, server: S3Endpoint, mode: str
) -> dict[str, Any]:
    sim.reset()
    sim.add_jobs(options.jobs)
    run_id = uuid.uuid4().hex[:10]
    concurrency = int(mode.split("=")[1]) if mode.startswith("project") else None
    config = base_settings(
        endpoint=server,
        bucket=BUCKET,
        prefix=f"{run_id}/",
        ledger_url=f"sqlite:///{work / run_id}.db",
        sim=sim,
        concurrency=concurrency,
    )
    config_path = work / f"{run_id}.json"
    config_path.write_text(json.dumps(config))
    result_path = work / f"{run_id}.result.json"
    s3_before, sim_before = server.cpu(), sim.cpu()
    child = run_measured(
        [
            python(),
            "-m",
            "bench.sweep_child",
            "--config",
            str(config_path),
            "--mode",
            "loop" if concurrency is None else "project",
            "--result",
            str(result_path),
        ],
        env=server.credentials,
    )
    s3_cpu, sim_cpu = server.cpu() - s3_before, sim.cpu() - sim_before
    if child.code != 0 or not result_path.exists():
        raise RuntimeError(f"sweep child failed ({child.code}): {child.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    result.update(
        s3_cpu=s3_cpu,
        sim_cpu=sim_cpu,
        own_cpu=child.user + child.system,
        maxrss=max(child.maxrss_bytes, result.get("vmhwm", 0)),
        sim=sim.stats(),
    )
    return result


def _against(
    options: Any, work: Path, sim: SimProcess, server: S3Endpoint, modes: list[str], latency: float
) -> dict[str, Any]:
    server.ensure_bucket(BUCKET, versioning=False)
    jobs = options.jobs
    runs = {mode: ModeRuns() for mode in modes}
    for i in range(options.repeat):
        order = modes[i % len(modes) :] + modes[: i % len(modes)]
        for mode in order:
            result = _one(options, work, sim, server, mode)
            r = runs[mode]
            r.seconds.add(result["seconds"])
            r.s3_cpu.add(result["s3_cpu"] / jobs)
            r.sim_cpu.add(result["sim_cpu"] / jobs)
            r.own_cpu.add(result["own_cpu"] / jobs)
            r.rss.add(result["maxrss"])
            if result.get("deleted") != jobs:
                r.problems.append(
                    f"deleted {result.get('deleted')} of {jobs} "
                    f"(deferred {result.get('deferred', 0)}, failed {result.get('failed', 0)})"
                )
            print(
                f"  [{server.name}, {latency:g} ms] run {i + 1}/{options.repeat} {mode}: "
                f"{result['seconds']:.1f} s, S3 CPU {result['s3_cpu']:.1f} s",
                flush=True,
            )
    loop = runs["loop"]
    rows = []
    verdicts: dict[str, Any] = {}
    for mode in modes:
        r = runs[mode]
        speedup = loop.seconds.median / r.seconds.median
        rows.append(
            [
                mode,
                describe(r.seconds),
                f"{jobs / r.seconds.median:.0f}",
                f"{speedup:.2f}x",
                f"{r.s3_cpu.median * 1e3:.1f} ms",
                f"{r.own_cpu.median * 1e3:.1f} ms",
                f"{r.sim_cpu.median * 1e3:.1f} ms",
                fmt_mib(r.rss.median),
                "; ".join(sorted(set(r.problems))) or "ok",
            ]
        )
        if mode != "loop":
            # No schedule on this machine beats its busiest process, or all the CPU time
            # spread over every core: the best any concurrency could do against the loop.
            floor = max(
                r.s3_cpu.median,
                r.own_cpu.median,
                (r.s3_cpu.median + r.own_cpu.median + r.sim_cpu.median) / (os.cpu_count() or 1),
            )
            verdicts[mode] = {
                "speedup": speedup,
                "cpu_ceiling": (loop.seconds.median / jobs) / floor,
                "speedup_ok": speedup >= SPEEDUP_TARGET,
                "s3_cpu_ratio": r.s3_cpu.median / loop.s3_cpu.median,
                "s3_cpu_ok": r.s3_cpu.median <= loop.s3_cpu.median,
            }
    print(
        table(
            f"2. Sweep of {jobs} due jobs x 2 small outputs into {server.name}, provider "
            f"latency {latency:g} ms, alternating, n={options.repeat}",
            [
                "who",
                "time median [min..max]",
                "jobs/s",
                "vs loop",
                "S3 server CPU/job",
                "worker CPU/job",
                "simulator CPU/job",
                "peak RSS",
                "result",
            ],
            rows,
        )
    )
    for mode, v in verdicts.items():
        print(
            f"{mode}: {v['speedup']:.2f}x the loop (target >= {SPEEDUP_TARGET}x: "
            f"{verdict(v['speedup_ok'])}); S3 server CPU per job {v['s3_cpu_ratio']:.2f}x the "
            f"loop's (target <= 1.00x: {verdict(v['s3_cpu_ok'])}); CPU ceiling "
            f"{v['cpu_ceiling']:.2f}x on {os.cpu_count()} cores"
        )
    return {
        mode: {
            "seconds": r.seconds.as_dict(),
            "s3_cpu_per_job": r.s3_cpu.as_dict(),
            "worker_cpu_per_job": r.own_cpu.as_dict(),
            "sim_cpu_per_job": r.sim_cpu.as_dict(),
            "maxrss": r.rss.as_dict(),
            "problems": r.problems,
            **verdicts.get(mode, {}),
        }
        for mode, r in runs.items()
    }
