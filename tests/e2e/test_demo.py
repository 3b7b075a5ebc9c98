"""`retention demo` runs the real pipeline end to end and tells what it did."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli


@pytest.mark.slow
def test_the_demo_shows_all_five_providers_archived_and_deleted() -> None:
    run = run_cli("demo", timeout=300)
    assert run.code == 0, run.stderr
    out = run.stdout
    assert "daily: archived 4, deleted 4, deferred 1, failed 0" in out
    for provider in ("loom", "mpc", "unsiloed", "datocms"):
        assert f"{provider}: archived 1, deleted 1, deferred 0, failed 0" in out
    assert "status 'paused' is not one this worker knows" in out
    assert "daily_eu: archived 0, deleted 0" in out
    assert "objects left in your own bucket acme-daily-outputs: 0" in out
    assert "delete requests the providers received: 8 before, 8 after" in out
    assert "manifest.json" in out
    assert "deletion.json" in out
    assert "not due until" in out
    assert "held before the worker has ever seen it" in out


@pytest.mark.slow
def test_demo_serve_keeps_servers_up_for_commands_typed_by_hand(tmp_path: Path) -> None:
    # given: the demo's servers, started as a person starts them
    folder = tmp_path / "demo"
    server = subprocess.Popen(
        [sys.executable, "-m", "worker", "demo", "--serve", "--dir", str(folder)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        printed = []
        for line in server.stdout:
            printed.append(line.rstrip("\n"))
            if "Ctrl-C stops the servers" in line:
                break
        assert "Ctrl-C stops the servers" in printed[-1], "\n".join(printed)

        # when: a person sources the file it names and types the commands it prints
        env = dict(re.findall(r"^export (\w+)=(.*)$", (folder / "demo.env").read_text(), re.M))
        env = {k: shlex.split(v)[0] for k, v in env.items()}
        typed = [line for line in printed if line.startswith("  retention ")]
        ran = {}
        for argv in (shlex.split(line, comments=True)[1:] for line in typed):
            run = run_cli(*argv, env=env, cwd=tmp_path)
            ran[argv[0]] = run
            # then: each works against the servers (a sweep with a deferred job exits 1)
            assert run.code in (0, 1), (argv, run.stderr)
    finally:
        server.send_signal(signal.SIGTERM)
        rest, _ = server.communicate(timeout=60)

    assert server.returncode == 0, rest
    assert "servers stopped" in rest
    assert {"check", "track", "hold", "sweep", "status", "report", "restore", "scrub"} <= set(ran)
    assert ran["check"].code == 0
    assert "daily: archived 4, deleted 4" in ran["sweep"].stdout
    assert (tmp_path / "restored").is_dir()
