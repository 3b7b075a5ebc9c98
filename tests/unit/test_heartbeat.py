"""The liveness probe's verdicts: only a running consumer is judged by its heartbeat's age."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker import heartbeat
from worker.heartbeat import State


def test_a_running_heartbeat_is_alive_until_it_is_older_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / heartbeat.WORKER_FILE
    heartbeat.write(path, State.RUNNING, now=1000.0)

    assert heartbeat.verdict(path, max_age=30, now=1029.0)[0]
    alive, why = heartbeat.verdict(path, max_age=30, now=1031.0)
    assert not alive
    assert "31 s ago" in why
    assert "blocked or stopped" in why


@pytest.mark.parametrize("state", [State.STARTING, State.RECONNECTING, State.STOPPING])
def test_a_worker_connecting_to_the_broker_or_stopping_is_not_restarted(
    tmp_path: Path, state: State
) -> None:
    # A restart would not bring the broker back; Celery's own retry limit ends a worker that
    # never reconnects, and a stopping worker is given its grace period.
    path = tmp_path / heartbeat.WORKER_FILE
    heartbeat.write(path, state, now=1000.0)

    alive, why = heartbeat.verdict(path, max_age=30, now=5000.0)
    assert alive
    assert state.value in why
    # but it is not ready: it consumes nothing
    assert not heartbeat.verdict(path, max_age=30, running=True, now=1001.0)[0]


def test_a_missing_or_unreadable_heartbeat_fails_and_says_where_it_looked(tmp_path: Path) -> None:
    path = tmp_path / heartbeat.WORKER_FILE
    alive, why = heartbeat.verdict(path, max_age=30)
    assert not alive
    assert str(path) in why
    assert "heartbeat_dir" in why

    path.write_text("{not json")
    alive, why = heartbeat.verdict(path, max_age=30)
    assert not alive
    assert "unreadable" in why


def test_the_probe_exits_0_when_alive_and_1_with_the_reason_on_stderr_when_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / heartbeat.BEAT_FILE
    heartbeat.write(path, State.RUNNING)
    assert heartbeat.main([str(path), "--max-age", "5"]) == 0
    assert "running" in capsys.readouterr().out

    heartbeat.write(path, State.RUNNING, now=1.0)
    assert heartbeat.main([str(path), "--max-age", "5"]) == 1
    assert "blocked or stopped" in capsys.readouterr().err


def test_a_heartbeat_is_replaced_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / heartbeat.WORKER_FILE
    for state in (State.STARTING, State.RUNNING):
        heartbeat.write(path, state)
    assert heartbeat.read(path).state is State.RUNNING
    assert [p.name for p in tmp_path.iterdir()] == [heartbeat.WORKER_FILE]
