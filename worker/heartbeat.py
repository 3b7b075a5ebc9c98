"""Liveness that means liveness: a file the Celery consumer, or beat's scheduler, renews itself.

A probe that asks /metrics only learns that the metrics thread answers: a worker whose
consumer has hung in its event loop keeps serving it. So the loop that matters renews a
heartbeat file (``worker.liveness``: a timer on the consumer's own event loop; beat's
scheduler on every tick), and the orchestrator's probe reads its age:

    python -m worker.heartbeat /var/lib/retention/health/worker.heartbeat --max-age 30

exits 0 when the heartbeat is fresh and 1, with one line saying why, when it is stale or
missing; ``--running`` also fails while the consumer is not running (starting, reconnecting,
stopping), for a startup or readiness probe. Cheap: this module imports nothing but the
standard library (about 40 ms of CPU a run).

The file says what the process is doing (``State``). Only a running consumer or scheduler is
judged by the age of its heartbeat. A worker that is connecting to the broker, at start or
after losing it, is alive but cannot renew it from its event loop: restarting it would not
bring the broker back, and Celery itself gives up (and exits) after
``broker_connection_max_retries``. A worker that is shutting down is left to finish.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

# The files in [worker] heartbeat_dir.
WORKER_FILE = "worker.heartbeat"
BEAT_FILE = "beat.heartbeat"


class State(StrEnum):
    STARTING = "starting"  # the worker process started; its consumer is not running yet
    RUNNING = "running"  # renewed by the event loop: judged by its age
    RECONNECTING = "reconnecting"  # the consumer lost the broker and is connecting again
    STOPPING = "stopping"  # a shutdown began


@dataclass(frozen=True)
class Beat:
    state: State
    pid: int
    at: float  # Unix time it was written


def write(path: Path, state: State, *, now: float | None = None) -> None:
    """Replace the heartbeat at ``path`` atomically: a probe never reads half a file."""
    body = json.dumps({"state": state.value, "pid": os.getpid(), "at": now or time.time()})
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def remove(path: Path) -> None:
    """Forget a heartbeat a previous run left (a restarted container keeps its volumes)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def read(path: Path) -> Beat:
    """The heartbeat at ``path``; OSError or ValueError when there is none to read."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return Beat(State(data["state"]), int(data["pid"]), float(data["at"]))


def verdict(
    path: Path, *, max_age: float, running: bool = False, now: float | None = None
) -> tuple[bool, str]:
    """(alive, why) for the heartbeat at ``path``; with ``running``, only a running consumer
    or scheduler passes (a startup or readiness probe: it is consuming)."""
    try:
        beat = read(path)
    except FileNotFoundError:
        return False, (
            f"no heartbeat at {path}: the consumer (or scheduler) has not started, or "
            "[worker] heartbeat_dir names another directory"
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"unreadable heartbeat at {path}: {type(exc).__name__}: {exc}"
    age = (now or time.time()) - beat.at
    if beat.state is not State.RUNNING:
        return not running, f"pid {beat.pid} is {beat.state.value} (for {age:.0f} s)"
    if age > max_age:
        return False, (
            f"pid {beat.pid}'s event loop last renewed its heartbeat {age:.0f} s ago "
            f"(more than {max_age:g} s): it is blocked or stopped"
        )
    return True, f"pid {beat.pid} is running (heartbeat {age:.0f} s old)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.heartbeat",
        description="Exit 0 if the heartbeat file is fresh (or its process is connecting to "
        "the broker or shutting down), 1 if it is stale or missing: a liveness probe.",
    )
    parser.add_argument("path", type=Path, help="the heartbeat file ([worker] heartbeat_dir)")
    parser.add_argument(
        "--max-age",
        type=float,
        default=30.0,
        help="seconds a running process's heartbeat may age (default 30; at least a few "
        "times [worker] heartbeat_seconds)",
    )
    parser.add_argument(
        "--running",
        action="store_true",
        help="pass only while the consumer (or scheduler) runs, not while it starts, "
        "reconnects or stops: for a startup or readiness probe",
    )
    args = parser.parse_args(argv)
    alive, why = verdict(args.path, max_age=args.max_age, running=args.running)
    print(why, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


if __name__ == "__main__":
    raise SystemExit(main())
