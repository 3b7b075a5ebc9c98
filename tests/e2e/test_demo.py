"""`retention demo` runs the real pipeline end to end and tells what it did."""

from __future__ import annotations

from tests.helpers import run_cli


def test_the_demo_archives_deletes_and_explains() -> None:
    run = run_cli("demo", timeout=300)
    assert run.code == 0, run.stderr
    out = run.stdout
    assert "daily: archived 4, deleted 4, deferred 1, failed 0" in out
    assert "status 'paused' is not one this worker knows" in out
    assert "daily_eu: archived 0, deleted 0" in out
    assert "objects left in your own bucket acme-daily-outputs: 0" in out
    assert "DELETE requests the simulators received in total: 4" in out
    assert "manifest.json" in out
    assert "deletion.json" in out
    assert "not due until" in out
    assert "held" in out
