"""Case 1, streaming archive: one large output from the provider's link into S3.

Project: ``bench.archive_child`` (Fetcher.open + Archive.store_stream, as store_artifact
does) in its own process. Peer: ``rclone copyurl`` on the same link to the same bucket.
They alternate in one run. Peak RSS is each process's own VmHWM.
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

from bench.servers import S3Endpoint, SimProcess, endpoints
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
RATIO_TARGET = 1.25


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
        self.rss = Sample()
        self.server_cpu = Sample()
        self.failures: list[str] = []
        self.operations: dict[str, int] = {}


def run(options: Any) -> dict[str, Any]:
    size = int(options.archive_gib * GiB)
    repeat = options.repeat
    text, plan = plan_table()
    print(text, flush=True)
    out: dict[str, Any] = {"part_plan": plan, "size": size, "servers": {}}
    rclone = shutil.which("rclone")
    if rclone is None:
        print("rclone is not installed (apt-get install -y rclone): the peer is skipped")
    work = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    try:
        with SimProcess() as sim, endpoints(options.s3) as servers:
            link = sim.blob_link(size, seed=7)
            from worker.simulators.blobs import Blob

            expected = Blob(size, 7).sha256()
            download = Runs()
            for _ in range(max(1, repeat // 2)):
                result = _project(work, link, servers[0], expected, download_only=True)
                download.seconds.add(result["seconds"])
            for server in servers:
                out["servers"][server.name] = _against(
                    options, work, sim, server, link, expected, size, rclone, download
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
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
    child = run_measured(argv, env=server.credentials)
    if child.code != 0 or not result_path.exists():
        raise RuntimeError(f"archive child failed ({child.code}): {child.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    result["wall"] = child.wall
    result["maxrss"] = max(child.maxrss_bytes, result.get("vmhwm", 0))
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
    project, peer = Runs(), Runs()
    for i in range(options.repeat):
        order = ["project", "rclone"] if i % 2 == 0 else ["rclone", "project"]
        for who in order:
            key = f"{who}/{uuid.uuid4().hex}.bin"
            before = server.cpu()
            if who == "project":
                result = _project(work, link, server, expected, key=key)
                project.seconds.add(result["seconds"])
                project.wall.add(result["wall"])
                project.rss.add(result["maxrss"])
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
                    peer.failures.append(child.stderr.strip().splitlines()[-1:][0])
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
    for label, runs in (("project (store_stream)", project), ("rclone copyurl", peer)):
        if runs.seconds.n == 0:
            continue
        rows.append(
            [
                label,
                describe(runs.seconds),
                fmt_rate(size / runs.seconds.median),
                describe(runs.wall),
                f"{fmt_mib(runs.rss.median)} (max {fmt_mib(runs.rss.high)})",
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
            "the link's ceiling",
        ]
    )
    ratio = project.seconds.median / peer.seconds.median if peer.seconds.n else float("nan")
    rss_ok = project.rss.high <= RSS_TARGET
    print(
        table(
            f"1b. Archive {size / GiB:g} GiB from a link into {server.name} "
            f"({server.url}), alternating, n={options.repeat}",
            [
                "who",
                "transfer time median [min..max]",
                "throughput",
                "process wall",
                "peak RSS",
                "S3 server CPU",
                "result",
            ],
            rows,
        )
    )
    print(
        f"\nproject / rclone time: {ratio:.2f}x (target <= {RATIO_TARGET}x: "
        f"{verdict(None if math.isnan(ratio) else ratio <= RATIO_TARGET)}); "
        f"project peak RSS max {fmt_mib(project.rss.high)} "
        f"(target <= {fmt_mib(RSS_TARGET)}: {verdict(rss_ok)})"
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
            "server_cpu": project.server_cpu.as_dict(),
            "operations": ops,
            "failures": project.failures,
        },
        "rclone": {
            "seconds": peer.seconds.as_dict(),
            "maxrss": peer.rss.as_dict(),
            "server_cpu": peer.server_cpu.as_dict(),
            "failures": peer.failures,
        },
        "download_only": download.seconds.as_dict(),
        "ratio": ratio,
        "rss_ok": rss_ok,
        "pid": os.getpid(),
    }
