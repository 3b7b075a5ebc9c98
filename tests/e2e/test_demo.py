"""`retention demo` runs the real pipeline end to end and tells what it did."""

from __future__ import annotations

from tests.helpers import run_cli


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
