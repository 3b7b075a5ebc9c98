"""Health that means health, with real `celery worker` and `celery beat` processes: the
liveness probe follows the consumer's event loop and beat's scheduler, not a metrics thread;
an idle worker stops at once on SIGTERM, handing back what it held."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from tests.helpers import REDIS_URL, ROOT, config_data, unused_port, write_config
from worker import heartbeat

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# The heartbeat's period and the probe's limit, shortened so the test takes seconds.
PERIOD = 0.5
MAX_AGE = 3.0

Start = Callable[..., subprocess.Popen[bytes]]


def probe(path: Path) -> subprocess.CompletedProcess[str]:
    """The probe as the orchestrator runs it (deploy/k8s: an exec probe)."""
    return subprocess.run(
        [sys.executable, "-m", "worker.heartbeat", str(path), "--max-age", str(MAX_AGE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Seconds it took for ``condition`` to hold."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if condition():
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def worker_config(tmp_path: Path, queue: str, broker: str = REDIS_URL) -> Path:
    data = config_data(
        bucket="acme-archive",
        endpoint_url="http://127.0.0.1:9",
        ledger_url=f"sqlite:///{tmp_path}/ledger.db",
        providers={"daily": {"type": "daily", "api_key": "k", "base_url": "http://127.0.0.1:9"}},
        broker={"url": broker, "queue": queue},
        worker={
            "heartbeat_dir": str(tmp_path / "health"),
            "heartbeat_seconds": PERIOD,
            # A soft shutdown of 25 s: an idle worker that waited it out would be seen.
            "grace_period_seconds": 30,
        },
    )
    # A worker with no metrics server: liveness must not depend on one.
    return write_config(tmp_path / "retention.toml", data | {"metrics": {"enabled": False}})


@pytest.fixture
def config(tmp_path: Path, celery_queue: str) -> Path:
    return worker_config(tmp_path, celery_queue)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start `celery worker` or `celery beat` as deploy/ runs them (SIGTERM remapped to
    SIGQUIT); each is stopped at the end if a test has not."""
    processes: list[subprocess.Popen[bytes]] = []

    def run(config: Path, *arguments: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"celery-{len(processes)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", *arguments],
            cwd=ROOT,
            env={**os.environ, "RETENTION_CONFIG": str(config), "REMAP_SIGTERM": "SIGQUIT"},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        return process

    yield run
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_arguments(queue: str) -> list[str]:
    return [
        "worker",
        "--queues",
        f"{queue},{queue}.sweeps",
        "--concurrency",
        "2",
        "--pool",
        "prefork",
        "--hostname",
        f"{queue}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]


def running(path: Path) -> bool:
    try:
        return heartbeat.read(path).state is heartbeat.State.RUNNING
    except (OSError, ValueError):
        return False


def test_liveness_fails_while_the_workers_consumer_is_stopped_and_recovers_after(
    config: Path, tmp_path: Path, celery_queue: str, start: Start
) -> None:
    # given: a worker whose consumer runs, and whose probe passes
    worker = start(config, *worker_arguments(celery_queue))
    path = tmp_path / "health" / heartbeat.WORKER_FILE
    wait_for(lambda: running(path), timeout=60, what="the consumer's first heartbeat")
    assert probe(path).returncode == 0
    assert heartbeat.read(path).pid == worker.pid

    # when: the worker's main process, where the consumer's event loop runs, is stopped
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        # then: the probe fails within its limit (and a poll of the probe's period)
        took = wait_for(
            lambda: probe(path).returncode == 1, timeout=MAX_AGE + 10, what="the probe to fail"
        )
        assert took <= MAX_AGE + 3
        assert "blocked or stopped" in probe(path).stderr
    finally:
        os.kill(worker.pid, signal.SIGCONT)

    # and: once the loop runs again, so does the heartbeat
    wait_for(lambda: probe(path).returncode == 0, timeout=10, what="the probe to pass again")


def test_an_idle_worker_exits_within_seconds_of_sigterm_and_requeues_what_it_held(
    config: Path, tmp_path: Path, celery_queue: str, start: Start
) -> None:
    # given: an idle worker holding one message it will not start for ten minutes (a retry
    # waiting out its countdown)
    worker = start(config, *worker_arguments(celery_queue))
    path = tmp_path / "health" / heartbeat.WORKER_FILE
    wait_for(lambda: running(path), timeout=60, what="the consumer's first heartbeat")
    client = Celery(broker=REDIS_URL)
    client.send_task(
        "retention.process_job", args=["daily", "job-1"], countdown=600, queue=celery_queue
    )
    broker = redis.Redis.from_url(REDIS_URL)
    wait_for(
        lambda: broker.llen(celery_queue) == 0, timeout=30, what="the worker to take the message"
    )
    time.sleep(1)

    # when: the orchestrator stops it
    began = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    stopped = time.monotonic() - began

    # then: it is gone within seconds, not the 25 s of its soft shutdown, and the message it
    # held is back in the queue for another worker
    assert stopped < 8, f"an idle worker took {stopped:.1f} s to stop"
    assert worker.returncode == 0
    (message,) = broker.lrange(celery_queue, 0, -1)
    headers = json.loads(message)["headers"]
    assert (headers["task"], headers["argsrepr"]) == ("retention.process_job", "['daily', 'job-1']")
    broker.close()
    client.close()


def test_beats_liveness_follows_its_scheduler(config: Path, tmp_path: Path, start: Start) -> None:
    # given: beat, whose next sweep is up to an hour away, ticking
    beat = start(
        config, "beat", "--loglevel", "INFO", "--schedule", str(tmp_path / "celerybeat-schedule")
    )
    path = tmp_path / "health" / heartbeat.BEAT_FILE
    wait_for(lambda: running(path), timeout=60, what="beat's first tick")
    # it ticks at least once a heartbeat period, however far the next sweep
    first = heartbeat.read(path).at
    wait_for(lambda: heartbeat.read(path).at > first, timeout=10, what="beat's next tick")
    assert probe(path).returncode == 0

    # when: beat's process is stopped, then the probe fails within its limit
    os.kill(beat.pid, signal.SIGSTOP)
    try:
        took = wait_for(
            lambda: probe(path).returncode == 1, timeout=MAX_AGE + 10, what="the probe to fail"
        )
        assert took <= MAX_AGE + 3
    finally:
        os.kill(beat.pid, signal.SIGCONT)


@pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="needs redis-server, to stop a broker of the test's own (apt-get install redis-server)",
)
def test_a_worker_that_lost_its_broker_is_left_alive_while_it_reconnects(
    tmp_path: Path, celery_queue: str, start: Start
) -> None:
    # given: a worker on a Redis of its own, consuming
    port = unused_port()
    redis_server = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    broker = subprocess.Popen(redis_server, stdout=subprocess.DEVNULL)
    try:
        config = worker_config(tmp_path, celery_queue, broker=f"redis://127.0.0.1:{port}/0")
        start(config, *worker_arguments(celery_queue))
        path = tmp_path / "health" / heartbeat.WORKER_FILE
        wait_for(lambda: running(path), timeout=60, what="the consumer's first heartbeat")

        # when: the broker goes away for longer than the probe's limit
        broker.terminate()
        broker.wait(timeout=10)
        wait_for(
            lambda: heartbeat.read(path).state is heartbeat.State.RECONNECTING,
            timeout=30,
            what="the consumer to stop for a reconnection",
        )
        time.sleep(MAX_AGE + 1)

        # then: liveness holds (a restart would not bring Redis back), readiness does not
        assert probe(path).returncode == 0
        assert "reconnecting" in probe(path).stdout
        running_only = [sys.executable, "-m", "worker.heartbeat", str(path), "--running"]
        assert subprocess.run(running_only, cwd=ROOT, check=False).returncode == 1

        # and: once the broker is back, the consumer runs and renews its heartbeat again
        broker = subprocess.Popen(redis_server, stdout=subprocess.DEVNULL)
        wait_for(lambda: running(path), timeout=60, what="the consumer to run again")
        assert probe(path).returncode == 0
    finally:
        broker.terminate()
        broker.wait(timeout=10)
