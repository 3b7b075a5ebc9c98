"""Case 1, streaming archive: one large output from the provider's link into S3.

Project: ``bench.archive_child`` (Fetcher.open + Archive.store_stream, as store_artifact
does) in its own process. Peer: ``rclone copyurl`` on the same link to the same bucket
(skipped, with how to install it, when ``rclone`` is not on the PATH). They alternate in one
run, once per size in ``--archive-gib`` (a list: ``--archive-gib 0.5,1``).

Peak RSS is each process's own VmHWM, start-up included (the interpreter, imports and
clients as well as the transfer), polled while it runs and, for the project, also read by
the child itself at its end; that is the figure judged against 150 MiB. Beside it, for the
project: its resident memory when the transfer starts, and what the transfer added to that
(peak - at start). The time is the transfer's, measured inside the child for the project
(rclone's is its process wall time); the process wall time is beside it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.servers import S3Endpoint, SimProcess, base_settings, endpoints
from bench.util import (
    GiB,
    MiB,
    Sample,
    describe,
    fmt_mib,
    fmt_rate,
    python,
    run_measured,
    table,
    verdict,
)

BUCKET = "bench-archive"
RSS_TARGET = 150 * MiB
RATIO_TARGET = 0.85


def part_plan(size: int | None, total: int) -> dict[str, Any]:
    """How the uploader would cut ``total`` bytes (``size`` is the hint it is given), with the
    default ``[archive]`` settings."""
    from worker.archive import MAX_PARTS, part_size_for, parts_in_flight
    from worker.settings import ArchiveSettings

    defaults = ArchiveSettings(bucket="archive")

    sent, number, largest = 0, 0, 0
    while sent < total:
        number += 1
        part = part_size_for(size, number, defaults.part_size_mib * MiB)
        largest = max(largest, part)
        sent += part
    in_flight = parts_in_flight(
        largest,
        max_concurrency=defaults.max_concurrency,
        max_buffer=defaults.max_buffer_mib * MiB,
    )
    return {
        "parts": number,
        "largest_part": largest,
        "in_flight": in_flight,
        "memory_bound": (in_flight + 1) * largest,
        "ok": number <= MAX_PARTS,
    }


def plan_table() -> tuple[str, dict[str, Any]]:
    rows, data = [], {}
    for label, hint, total in (
        ("1 GiB, size known", GiB, GiB),
        ("100 GiB, size known", 100 * GiB, 100 * GiB),
        ("100 GiB, size unknown", None, 100 * GiB),
        ("5 TiB, size known", 5 * 1024 * GiB, 5 * 1024 * GiB),
    ):
        plan = part_plan(hint, total)
        data[label] = plan
        rows.append(
            [
                label,
                str(plan["parts"]),
                fmt_mib(plan["largest_part"]),
                str(plan["in_flight"]),
                fmt_mib(plan["memory_bound"]),
                verdict(plan["ok"]),
            ]
        )
    text = table(
        "1a. Part plan (part_size_for; defaults: 8 MiB base, at most 4 parts in flight "
        "within a 64 MiB buffer budget)",
        [
            "output",
            "parts",
            "largest part",
            "in flight",
            "(in flight + 1) x part",
            "<= 10,000 parts",
        ],
        rows,
    )
    return text, data


def rclone_env(endpoint: S3Endpoint, config_dir: Path) -> dict[str, str]:
    return {
        "RCLONE_CONFIG": str(config_dir / "none.conf"),
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint.url,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": endpoint.credentials["AWS_ACCESS_KEY_ID"],
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": endpoint.credentials["AWS_SECRET_ACCESS_KEY"],
        "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    }


class Runs:
    def __init__(self) -> None:
        self.seconds = Sample()  # the transfer (project: measured inside the child)
        self.wall = Sample()  # the whole process, start-up included
        self.rss = Sample()  # the whole process's peak, start-up included
        self.rss_at_start = Sample()  # project: resident when the transfer starts
        self.transfer_rss = Sample()  # project: peak - resident at the transfer's start
        self.server_cpu = Sample()
        self.failures: list[str] = []
        self.operations: dict[str, int] = {}


RCLONE_MISSING = (
    "rclone is not installed: the peer (rclone copyurl) is skipped. Install it with "
    "`apt-get install -y rclone` (Debian/Ubuntu; or https://rclone.org/install/) and run "
    "the case again."
)


def run(options: Any) -> dict[str, Any]:
    sizes = [int(gib * GiB) for gib in options.archive_gib]
    repeat = options.repeat
    text, plan = plan_table()
    print(text, flush=True)
    out: dict[str, Any] = {"part_plan": plan, "sizes": sizes, "by_size": {}}
    rclone = shutil.which("rclone")
    if rclone is None:
        print(RCLONE_MISSING)
    work = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    try:
        with SimProcess() as sim, endpoints(options.s3) as servers:
            from worker.simulators.blobs import Blob

            for size in sizes:
                link = sim.blob_link(size, seed=7)
                expected = Blob(size, 7).sha256()
                download = Runs()
                for _ in range(max(1, repeat // 2)):
                    result = _project(work, link, servers[0], expected, download_only=True)
                    download.seconds.add(result["seconds"])
                by_server: dict[str, Any] = {}
                for server in servers:
                    by_server[server.name] = _against(
                        options, work, sim, server, link, expected, size, rclone, download
                    )
                out["by_size"][f"{size / GiB:g} GiB"] = {"size": size, "servers": by_server}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if rclone is None:
        print(f"\n{RCLONE_MISSING}")
    return out


def _project(
    work: Path,
    link: str,
    server: S3Endpoint,
    expected: str,
    *,
    download_only: bool = False,
    key: str = "",
) -> dict[str, Any]:
    result_path = work / f"result-{uuid.uuid4().hex}.json"
    argv = [
        python(),
        "-m",
        "bench.archive_child",
        "--url",
        link,
        "--endpoint",
        server.url,
        "--bucket",
        BUCKET,
        "--key",
        key or f"project/{uuid.uuid4().hex}.bin",
        "--sha256",
        expected,
        "--result",
        str(result_path),
    ]
    if download_only:
        argv.append("--download-only")
    return run_measured(argv, env=server.credentials).result(result_path, "archive child")


def _sweep(work: Path, sim: SimProcess, server: S3Endpoint, size: int) -> dict[str, Any]:
    """``retention sweep`` as a whole process (bench.sweep_child, project mode) of one due
    Daily job whose one output is ``size`` bytes: settings, ledger, provider client, the
    download, the upload, the manifest, the delete gate, the delete and the receipt. The
    ledger is migrated first in a process of its own, as a deployed worker's already is."""
    sim.add_jobs(1, size=size)
    run_id = uuid.uuid4().hex[:10]
    ledger_url = f"sqlite:///{work / run_id}.db"
    migrated = run_measured(
        [python(), "-c", f"from worker.ledger import Ledger; Ledger.open({ledger_url!r}).close()"]
    )
    if migrated.code != 0:
        raise RuntimeError(f"migrating the bench ledger failed: {migrated.stderr[-2000:]}")
    config = base_settings(
        endpoint=server, bucket=BUCKET, prefix=f"sweep-{run_id}/", ledger_url=ledger_url, sim=sim
    )
    config_path = work / f"{run_id}.json"
    config_path.write_text(json.dumps(config))
    result_path = work / f"{run_id}.result.json"
    argv = [python(), "-m", "bench.sweep_child", "--config", str(config_path)]
    argv += ["--mode", "project", "--result", str(result_path)]
    result = run_measured(argv, env=server.credentials).result(result_path, "sweep child")
    result["prefix"] = f"sweep-{run_id}/"
    return result


def _against(
    options: Any,
    work: Path,
    sim: SimProcess,
    server: S3Endpoint,
    link: str,
    expected: str,
    size: int,
    rclone: str | None,
    download: Runs,
) -> dict[str, Any]:
    server.ensure_bucket(BUCKET)
    client = server.client()
    project, peer, sweep = Runs(), Runs(), Runs()
    for i in range(options.repeat):
        order = ["project", "rclone", "sweep"] if i % 2 == 0 else ["sweep", "rclone", "project"]
        for who in order:
            key = f"{who}/{uuid.uuid4().hex}.bin"
            before = server.cpu()
            if who == "sweep":
                result = _sweep(work, sim, server, size)
                sweep.seconds.add(result["seconds"])
                sweep.wall.add(result["wall"])
                sweep.rss.add(result["maxrss"])
                if result.get("deleted") != 1:
                    sweep.failures.append(f"deleted {result.get('deleted')} of 1")
                sweep.server_cpu.add(server.cpu() - before)
                # The job's output, manifest and receipt: keep the server's memory flat.
                listed = client.list_objects_v2(Bucket=BUCKET, Prefix=result["prefix"])
                for item in listed.get("Contents", []):
                    server.remove(BUCKET, item["Key"])
                print(
                    f"  [{server.name}] run {i + 1}/{options.repeat} sweep: "
                    f"{result['seconds']:.2f} s, peak RSS {fmt_mib(result['maxrss'])}",
                    flush=True,
                )
                continue
            if who == "project":
                result = _project(work, link, server, expected, key=key)
                project.seconds.add(result["seconds"])
                project.wall.add(result["wall"])
                project.rss.add(result["maxrss"])
                project.rss_at_start.add(result["rss_at_start"])
                project.transfer_rss.add(result["maxrss"] - result["rss_at_start"])
                project.operations = result["operations"]
                if not result["ok"] or not result.get("sha256_ok", False):
                    project.failures.append(result.get("error", "SHA-256 mismatch"))
            else:
                if rclone is None:
                    continue
                child = run_measured(
                    [rclone, "copyurl", link, f"bench:{BUCKET}/{key}"],
                    env=rclone_env(server, work),
                    # rclone's AWS SDK refuses a custom CA bundle with its own transport;
                    # the endpoint is plain http on loopback anyway.
                    unset=("AWS_CA_BUNDLE",),
                )
                if child.code != 0:
                    said = child.stderr.strip().splitlines() or [f"exit code {child.code}"]
                    peer.failures.append(said[-1])
                peer.seconds.add(child.wall)
                peer.wall.add(child.wall)
                peer.rss.add(child.maxrss_bytes)
                head = client.head_object(Bucket=BUCKET, Key=key)
                if head["ContentLength"] != size:
                    peer.failures.append(f"stored {head['ContentLength']} bytes")
            (project if who == "project" else peer).server_cpu.add(server.cpu() - before)
            server.remove(BUCKET, key)
            print(
                f"  [{server.name}] run {i + 1}/{options.repeat} {who}: "
                f"{(project if who == 'project' else peer).seconds.values[-1]:.2f} s",
                flush=True,
            )
    rows = []
    labelled = (
        ("project (store_stream)", project),
        ("`retention sweep` of one job (whole process)", sweep),
        ("rclone copyurl", peer),
    )
    for label, runs in labelled:
        if runs.seconds.n == 0:
            continue
        at_start = runs.rss_at_start.n > 0
        rows.append(
            [
                label,
                describe(runs.seconds),
                fmt_rate(size / runs.seconds.median),
                describe(runs.wall),
                f"{fmt_mib(runs.rss.median)} (max {fmt_mib(runs.rss.high)})",
                fmt_mib(runs.rss_at_start.median) if at_start else "-",
                f"+{fmt_mib(runs.transfer_rss.median)}" if at_start else "-",
                f"{runs.server_cpu.median:.1f} s",
                "; ".join(sorted(set(runs.failures))) or "ok",
            ]
        )
    rows.append(
        [
            "download only (Fetcher + SHA-256)",
            describe(download.seconds),
            fmt_rate(size / download.seconds.median),
            "-",
            "-",
            "-",
            "-",
            "-",
            "the link's ceiling",
        ]
    )
    ratio = project.seconds.median / peer.seconds.median if peer.seconds.n else float("nan")
    rss_ok = project.rss.high <= RSS_TARGET
    sweep_rss_ok = sweep.rss.high <= RSS_TARGET
    print(
        table(
            f"1b. Archive {size / GiB:g} GiB from a link into {server.name} "
            f"({server.url}), alternating, n={options.repeat}",
            [
                "who",
                "transfer time median [min..max]",
                "throughput",
                "process wall",
                "peak RSS (process, start-up incl.)",
                "RSS at transfer start",
                "transfer adds",
                "S3 server CPU",
                "result",
            ],
            rows,
        )
    )
    print(
        f"\nproject / rclone time: {'-' if math.isnan(ratio) else f'{ratio:.2f}x'} "
        f"(target <= {RATIO_TARGET}x: "
        f"{verdict(None if math.isnan(ratio) else ratio <= RATIO_TARGET)}"
        f"{'' if peer.seconds.n else ', rclone not installed'}); "
        f"project process peak RSS (VmHWM, start-up included) max {fmt_mib(project.rss.high)} "
        f"(target <= {fmt_mib(RSS_TARGET)}: {verdict(rss_ok)}), of which "
        f"{fmt_mib(project.rss_at_start.median)} resident before the transfer began and "
        f"+{fmt_mib(project.transfer_rss.median)} the transfer's own; a whole `retention "
        f"sweep` process archiving and deleting the job peaks at max {fmt_mib(sweep.rss.high)} "
        f"(target <= {fmt_mib(RSS_TARGET)}: {verdict(sweep_rss_ok)})"
    )
    ops = project.operations
    reads = ops.get("GetObject", 0)
    print(
        f"project S3 operations per archive: {json.dumps(ops, sort_keys=True)}; "
        f"object read back: {reads} time(s) "
        f"({verdict(reads == 0)} 'no second read'); link read once: bytes read == size"
    )
    if not server.standard_multipart_etag and project.failures:
        print(
            f"note: {server.name} answers a multipart ETag that is the whole object's MD5 and "
            "stores no CRC32, so the project's verification refuses it (as designed); the "
            "time is still the whole upload plus the HEAD."
        )
    return {
        "project": {
            "seconds": project.seconds.as_dict(),
            "wall": project.wall.as_dict(),
            "maxrss": project.rss.as_dict(),
            "rss_at_transfer_start": project.rss_at_start.as_dict(),
            "transfer_rss": project.transfer_rss.as_dict(),
            "server_cpu": project.server_cpu.as_dict(),
            "operations": ops,
            "failures": project.failures,
        },
        "rclone": {
            "installed": rclone is not None,
            "seconds": peer.seconds.as_dict(),
            "maxrss": peer.rss.as_dict(),
            "server_cpu": peer.server_cpu.as_dict(),
            "failures": peer.failures,
        },
        "sweep": {
            "seconds": sweep.seconds.as_dict(),
            "maxrss": sweep.rss.as_dict(),
            "server_cpu": sweep.server_cpu.as_dict(),
            "failures": sweep.failures,
            "rss_ok": sweep_rss_ok,
        },
        "download_only": download.seconds.as_dict(),
        "ratio": ratio,
        "rss_ok": rss_ok,
        "pid": os.getpid(),
    }
