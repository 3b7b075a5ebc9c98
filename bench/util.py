"""Shared plumbing for the benchmarks: statistics, tables, child processes, machine facts."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
GiB = 1024 * MiB


# -- statistics ----------------------------------------------------------------------------


@dataclass
class Sample:
    """Repeated measurements of one figure (seconds, bytes, ...)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / median, as a fraction: how noisy the runs were."""
        if not self.values or self.median == 0:
            return float("nan")
        return (self.high - self.low) / self.median

    def as_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "n": self.n,
            "values": self.values,
        }


def fmt_seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def fmt_mib(value_bytes: float) -> str:
    if math.isnan(value_bytes):
        return "-"
    return f"{value_bytes / MiB:.0f} MiB"


def fmt_rate(bytes_per_second: float) -> str:
    if math.isnan(bytes_per_second):
        return "-"
    return f"{bytes_per_second / MiB:.0f} MiB/s"


def _general(value: float) -> str:
    return f"{value:.3g}"


def describe(sample: Sample, unit: str = "s") -> str:
    """``median [min-max] (n)`` in a readable unit."""
    formats: dict[str, Callable[[float], str]] = {
        "s": fmt_seconds,
        "MiB": fmt_mib,
        "MiB/s": fmt_rate,
    }
    one = formats.get(unit, _general)
    if sample.n == 0:
        return "-"
    if sample.n == 1:
        return f"{one(sample.median)} (n=1)"
    return f"{one(sample.median)} [{one(sample.low)} .. {one(sample.high)}] (n={sample.n})"


# -- tables --------------------------------------------------------------------------------


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width table (also valid as a Markdown table)."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [f"\n### {title}\n", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def verdict(ok: bool | None) -> str:
    return {True: "MET", False: "MISSED", None: "n/a"}[ok]


# -- processes -----------------------------------------------------------------------------


@dataclass
class ChildResult:
    code: int
    wall: float
    # The child's own peak RSS: VmHWM of its program, read while it runs. (wait4's ru_maxrss
    # would also count the parent's pages the child shared between fork and exec.)
    maxrss_bytes: int
    user: float
    system: float
    stdout: str
    stderr: str

    def result(self, path: Path, what: str) -> dict[str, Any]:
        """The JSON result a child wrote to ``path``, with its wall time and its peak RSS
        (VmHWM polled from outside, or read by the child at its end: start-up included)."""
        if self.code != 0 or not path.exists():
            raise RuntimeError(f"{what} failed ({self.code}): {self.stderr[-3000:]}")
        found: dict[str, Any] = json.loads(path.read_text())
        found["wall"] = self.wall
        found["maxrss"] = max(self.maxrss_bytes, found.get("vmhwm", 0))
        return found

    def last_json(self) -> dict[str, Any]:
        for line in reversed(self.stdout.strip().splitlines()):
            if line.startswith("{"):
                value: dict[str, Any] = json.loads(line)
                return value
        raise RuntimeError(f"no JSON result from child (code {self.code}): {self.stderr[-2000:]}")


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800.0,
    cwd: Path = ROOT,
    stdout_path: Path | None = None,
    unset: Sequence[str] = (),
) -> ChildResult:
    """Run one process; its peak RSS and CPU time come from os.wait4 on that process."""
    out_file = stdout_path.open("wb") if stdout_path else subprocess.PIPE
    child_env = {k: v for k, v in os.environ.items() if k not in unset}
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        stdout=out_file,
        stderr=subprocess.PIPE,
        env={**child_env, **(env or {})},
        cwd=cwd,
    )
    assert proc.stderr is not None
    err_chunks: list[bytes] = []
    out_chunks: list[bytes] = []
    # Read both pipes on threads so neither fills up while we wait for the exit status.
    import threading

    def drain(stream: Any, into: list[bytes]) -> None:
        for chunk in iter(lambda: stream.read(65536), b""):
            into.append(chunk)

    readers = [threading.Thread(target=drain, args=(proc.stderr, err_chunks), daemon=True)]
    if proc.stdout is not None:
        readers.append(threading.Thread(target=drain, args=(proc.stdout, out_chunks), daemon=True))
    for reader in readers:
        reader.start()
    deadline = started + timeout
    status, usage = 0, None
    hwm = 0
    while True:
        hwm = max(hwm, vmhwm(proc.pid))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
        time.sleep(0.01)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(timeout=10)
    if stdout_path is not None and not isinstance(out_file, int):
        out_file.close()
    assert usage is not None
    return ChildResult(
        code=proc.returncode,
        wall=wall,
        maxrss_bytes=hwm or usage.ru_maxrss * 1024,
        user=usage.ru_utime,
        system=usage.ru_stime,
        stdout=b"".join(out_chunks).decode(errors="replace"),
        stderr=b"".join(err_chunks).decode(errors="replace"),
    )


def _status_bytes(pid: int | str, name: str) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    return 0


def vmhwm(pid: int | str) -> int:
    """A running process's peak resident memory in bytes (0 once it has exited)."""
    return _status_bytes(pid, "VmHWM")


def vmrss(pid: int | str) -> int:
    """A running process's resident memory now, in bytes (0 once it has exited)."""
    return _status_bytes(pid, "VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # utime, stime, cutime, cstime are fields 14-17 (1-based), i.e. 11-14 after the name.
    return sum(int(v) for v in fields[11:15]) / ticks


def child_stats() -> dict[str, Any]:
    """This process's own peak RSS (VmHWM) and CPU time, for a child's JSON result."""
    times = os.times()
    return {"vmhwm": vmhwm("self"), "cpu_user": times.user, "cpu_system": times.system}


# -- the machine ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with Path("/proc/cpuinfo").open() as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem / GiB, 1),
        "load": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def machine_line(info: Mapping[str, Any]) -> str:
    load = ", ".join(str(x) for x in info["load"])
    return (
        f"{info['nproc']} cores ({info['cpu']}), {info['memory_gib']} GiB, Python "
        f"{info['python']}, Linux {info['kernel']}, load average {load}"
    )


def python() -> str:
    return sys.executable
