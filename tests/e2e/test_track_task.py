"""Applications hand their jobs to the worker: `retention.track` sent by name from a Celery
client that knows only the broker and the queue, through Redis to a real `celery worker`;
and `worker.client.track` for applications that share the configuration."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from tests.conftest import StartWorker
from tests.helpers import REDIS_URL, config_data, objects, run_cli, write_config
from worker.errors import TrackRefused
from worker.ledger import Ledger
from worker.ledger.schema import audit_events, jobs
from worker.simulators.loom import LoomSimulator
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = [pytest.mark.redis, pytest.mark.slow]

OUTSIDE_APP = Path(__file__).with_name("outside_app.py")


@pytest.fixture
def loom() -> Iterator[LoomSimulator]:
    sim = LoomSimulator("loom-track-key", "loom-track-secret")
    sim.start()
    yield sim
    sim.stop()


def a_loom_job(sim: LoomSimulator, name: str) -> str:
    return sim.add_job(
        inputs=[(f"{name}.mp3", "audio", f"ID3 {name}".encode())],
        transcripts=[(f"{name}.txt", f"{name} said hello\n".encode())],
    )


def send_from_outside(queue: str, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the outside application: `python -I`, so neither this checkout nor the tests are on
    its path, and its import guard refuses this project's modules if anything reached them."""
    run = subprocess.run(
        [sys.executable, "-I", str(OUTSIDE_APP), REDIS_URL, queue, json.dumps(list(requests))],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=OUTSIDE_APP.parent,
    )
    assert run.returncode == 0, run.stderr
    *answers, imported = [json.loads(line) for line in run.stdout.splitlines()]
    assert imported == {"modules": []}
    return answers


def loom_config(
    tmp_path: Path,
    loom: LoomSimulator,
    bucket: str,
    s3_server: S3Server,
    ledger_url: str,
    queue: str,
) -> Path:
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=ledger_url,
        providers={"loom": loom.provider_table()},
        broker={"url": REDIS_URL, "queue": queue},
    )
    return write_config(tmp_path / "retention.toml", data)


def jobs_in(ledger_url: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(jobs.c.provider, jobs.c.job_id))]
    finally:
        engine.dispose()


def audit_of(ledger_url: str, event: str) -> list[Any]:
    engine = sa.create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            query = sa.select(audit_events).where(audit_events.c.event == event)
            return list(conn.execute(query.order_by(audit_events.c.id)).all())
    finally:
        engine.dispose()


def test_a_bare_celery_client_tracks_jobs_by_name_and_the_sweep_takes_only_those(
    loom: LoomSimulator,
    bucket: str,
    s3: S3Client,
    s3_server: S3Server,
    ledger_url: str,
    tmp_path: Path,
    celery_queue: str,
    start_worker: StartWorker,
) -> None:
    # given: three finished Loom jobs (Loom lists none), and a worker on the queue
    first, second, untracked = (a_loom_job(loom, name) for name in ("one", "two", "three"))
    config = loom_config(tmp_path, loom, bucket, s3_server, ledger_url, celery_queue)
    log = start_worker(config, celery_queue)

    # when: an outside application tracks two of them, and its message arrives twice
    request = {"args": ["loom", [first, second]]}
    answers = send_from_outside(celery_queue, request, request)

    # then: the worker answers what it recorded, the first time only
    assert [a.get("answer", a) for a in answers] == [
        {
            "message_type": "track",
            "provider": "loom",
            "tracking": 2,
            "new": [first, second],
            "held": [],
        },
        {"message_type": "track", "provider": "loom", "tracking": 2, "new": [], "held": []},
    ]
    # and the audit trail has one event per job, naming the task that recorded it
    tracked = audit_of(ledger_url, "tracked")
    assert [(e.provider, e.job_id) for e in tracked] == [("loom", first), ("loom", second)]
    assert all(e.detail["via"] == "retention.track" for e in tracked)
    assert {e.detail["task_id"] for e in tracked} == {answers[0]["task_id"]}

    # when: a sweep runs
    swept = run_cli("sweep", "--json", config=config)

    # then: the tracked jobs are archived, then deleted; the third is never touched
    assert swept.code == 0, swept.stderr
    assert sorted(loom.deleted) == sorted([first, second])
    stored = objects(s3, bucket)
    for ref, name in ((first, "one"), (second, "two")):
        assert (
            stored[f"archive/loom/{ref}/transcripts/{name}.txt"] == f"{name} said hello\n".encode()
        )
        assert f"archive/loom/{ref}/manifest.json" in stored
    assert not [key for key in stored if untracked in key]
    assert loom.seen(path=untracked) == []
    rows = Ledger.open(ledger_url).query
    assert rows.get("loom", untracked) is None
    assert "Traceback" not in log.read_text()


def test_an_unknown_provider_or_a_bad_id_is_refused_whole_in_one_line(
    loom: LoomSimulator,
    bucket: str,
    s3_server: S3Server,
    ledger_url: str,
    tmp_path: Path,
    celery_queue: str,
    start_worker: StartWorker,
) -> None:
    # given: a worker whose configuration names Loom only
    config = loom_config(tmp_path, loom, bucket, s3_server, ledger_url, celery_queue)
    log = start_worker(config, celery_queue)

    # when: an outside application sends what cannot be taken
    answers = send_from_outside(
        celery_queue,
        {"args": ["loon", ["R1"]]},
        {"args": ["loom", ["R2", "../R3", " R4"]]},
        {"args": ["loom", "R5"]},
        {"args": ["loom", ["R6"]], "kwargs": {"finished_at": "2025-06-01 12:00", "hod": True}},
    )

    # then: each is refused with a message saying what was wrong, and nothing is recorded
    assert {a["error_type"] for a in answers} == {"TrackRefused"}
    unknown, bad_ids, a_string, options = (a["error"] for a in answers)
    assert "no provider named 'loon'" in unknown
    assert "configured: loom" in unknown
    assert "job id '../R3' contains a '..' segment" in bad_ids
    assert "job id ' R4' has spaces at its start or end" in bad_ids
    assert "'R2'" not in bad_ids
    assert "must be a list of job ids" in a_string
    assert "must carry its UTC offset" in options
    assert "unknown option(s) hod" in options
    assert all("nothing was tracked" in a["error"] for a in answers)
    assert jobs_in(ledger_url) == []
    assert audit_of(ledger_url, "tracked") == []
    # and the worker logged each refusal without a traceback
    text = log.read_text()
    assert "Traceback" not in text
    refusals = [json.loads(line) for line in text.splitlines() if "track_refused" in line]
    assert len(refusals) == 4


def test_hold_and_a_known_finish_time_travel_as_keyword_arguments(
    loom: LoomSimulator,
    bucket: str,
    s3_server: S3Server,
    ledger_url: str,
    tmp_path: Path,
    celery_queue: str,
    start_worker: StartWorker,
) -> None:
    # given
    config = loom_config(tmp_path, loom, bucket, s3_server, ledger_url, celery_queue)
    start_worker(config, celery_queue)

    # when
    (answer,) = send_from_outside(
        celery_queue,
        {
            "args": ["loom", ["R10"]],
            "kwargs": {"hold": True, "reason": "case 42", "finished_at": "2025-06-01T12:00:00Z"},
        },
    )

    # then
    assert answer["answer"]["held"] == ["R10"]
    row = Ledger.open(ledger_url).query.get("loom", "R10")
    assert row is not None
    assert row.held
    assert row.tracked
    assert row.terminal_at is not None
    assert row.terminal_at.isoformat() == "2025-06-01T12:00:00+00:00"
    (hold,) = audit_of(ledger_url, "hold")
    assert hold.detail["reason"] == "case 42"


def test_the_python_helper_checks_here_sends_by_the_configured_queue_and_may_wait(
    loom: LoomSimulator,
    bucket: str,
    s3_server: S3Server,
    ledger_url: str,
    tmp_path: Path,
    celery_queue: str,
    start_worker: StartWorker,
) -> None:
    from worker.celery_app import app
    from worker.client import track

    config = loom_config(tmp_path, loom, bucket, s3_server, ledger_url, celery_queue)

    # a request the workers would refuse is refused here, and nothing is sent
    with pytest.raises(TrackRefused, match="job id 'a/b' contains a '/'"):
        track("loom", ["ok", "a/b"], config=config)
    client = redis.Redis.from_url(REDIS_URL)
    assert client.llen(celery_queue) == 0

    # with no worker yet, a request waits in the queue
    (sent,) = track("loom", ["R20", "R21"], config=config)
    assert sent.answer is None
    assert client.llen(celery_queue) == 1
    client.close()

    # a worker takes it; a second request waits for the worker's answer
    start_worker(config, celery_queue)
    (answered,) = track("loom", ["R21", "R22"], config=config, wait=90)
    assert answered.answer is not None
    assert answered.answer["new"] in (["R22"], ["R21", "R22"])
    # and the first request's answer was kept for whoever asks for it later
    first = app.AsyncResult(sent.task_id).get(timeout=90)
    assert {*first["new"], *answered.answer["new"]} == {"R20", "R21", "R22"}
    rows = Ledger.open(ledger_url).query
    for ref in ("R20", "R21", "R22"):
        row = rows.get("loom", ref)
        assert row is not None
        assert row.tracked


class HeldProxy:
    """A TCP proxy to PostgreSQL that, until ``forward()``, accepts connections and holds
    them unanswered: a task that opens the ledger then hangs where it is, to be killed."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.forwarding = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.forwarding.is_set():
                self.held.append(client)
                continue
            upstream = socket.create_connection(self.upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def forward(self) -> None:
        self.forwarding.set()

    def close(self) -> None:
        self.server.close()
        for held in self.held:
            held.close()


def worker_pid(queue: str) -> int:
    """The main process of the worker this test started (its hostname names the queue)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if b"worker" in argv and f"{queue}-0@%h".encode() in argv:
                    return int(proc.name)
    raise AssertionError(f"no worker process for {queue}")


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.postgres
def test_a_track_whose_worker_process_dies_mid_way_is_delivered_again(
    loom: LoomSimulator,
    bucket: str,
    s3_server: S3Server,
    postgres_url: str,
    tmp_path: Path,
    celery_queue: str,
    start_worker: StartWorker,
) -> None:
    # given: a worker whose ledger answers nothing yet, so a task hangs as it opens it
    url = sa.make_url(postgres_url)
    proxy = HeldProxy((url.host or "127.0.0.1", url.port or 5432))
    held_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    config = loom_config(tmp_path, loom, bucket, s3_server, held_url, celery_queue)
    start_worker(config, celery_queue, concurrency=1)
    try:
        client = Celery(broker=REDIS_URL)
        client.send_task("retention.track", args=["loom", ["R30"]], queue=celery_queue)
        wait_until(lambda: bool(proxy.held), timeout=60, what="the task to open the ledger")

        # when: the process running it is killed (OOM, a node's kill -9), then the ledger answers
        proxy.forward()
        (child,) = children_of(worker_pid(celery_queue))
        os.kill(child, signal.SIGKILL)

        # then: the message is delivered again, and the job is recorded
        def recorded() -> bool:
            return Ledger.open(postgres_url).query.get("loom", "R30") is not None

        wait_until(recorded, timeout=90, what="the track to be recorded after the kill")
    finally:
        proxy.close()
