"""`retention status` as a person reads it, in plain lines and in rich tables: every job that
needs a look, and how many more there are when a list is cut short."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import write_config
from worker.cli import cli
from worker.domain import JobSnapshot, ListedJob, Phase
from worker.ledger import Ledger, ProviderStatus
from worker.ledger.queries import FailedJob, KeptJob, OverdueJob, UnknownStatusJob
from worker.render.status import status_tables

NOW = datetime.now(UTC)
TTL = timedelta(minutes=5)
# More than a list shows (Queries.status's limit is 20).
MANY = 23


def fill(ledger: Ledger) -> None:
    """MANY jobs of each kind that needs a look: overdue, failed, kept, unknown status."""
    ledger.discovery.record_listing(
        "daily",
        [ListedJob(f"late-{n}", "finished", Phase.SUCCEEDED) for n in range(MANY)],
        NOW - timedelta(days=9),
    )
    for n in range(MANY):
        for name in ("bad", "kept", "odd"):
            row = ledger.jobs.claim("daily", f"{name}-{n}", owner="w", ttl=TTL, now=NOW)
            assert row is not None
            if name == "bad":
                ledger.jobs.fail(row, "it broke", owner="w", now=NOW)
            elif name == "kept":
                ledger.jobs.keep(row, "unknown_output", "kept: why", owner="w", now=NOW)
            else:
                snapshot = JobSnapshot(row.job_id, "paused", Phase.UNKNOWN, None, {})
                row = ledger.jobs.record_status(row, snapshot, owner="w", now=NOW)
                ledger.jobs.defer(
                    row, "status 'paused' is unknown", owner="w", now=NOW, retry_at=NOW
                )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path}/ledger.db"
    fill(Ledger.open(url))
    return write_config(
        tmp_path / "retention.toml",
        {
            "archive": {"bucket": "acme-archive", "endpoint_url": "http://127.0.0.1:9"},
            "ledger": {"url": url},
            "providers": {"daily": {"type": "daily", "api_key": "k"}},
        },
    )


def test_status_lines_say_how_many_more_each_list_holds(config: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(config), "status"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("daily: ")
    assert f"overdue {MANY}" in lines[0]
    assert f"unknown status {MANY}" in lines[0]
    for kind in ("overdue", "failed", "kept", "unknown"):
        assert sum(line.startswith(f"  {kind} ") for line in lines) == 20
        assert f"  ... {MANY - 20} more {kind}" in lines
    odd = next(line for line in lines if line.startswith("  unknown odd-"))
    assert "status 'paused'" in odd
    assert "1 attempt(s)" in odd


def test_status_tables_show_unknown_statuses_and_how_many_more(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich's width: no cell wraps
    status = ProviderStatus(
        provider="daily",
        states={"pending": 5, "failed": 4, "kept": 3},
        held=0,
        overdue=[OverdueJob("late-1", "pending", "2026-11-01T00:00:00+00:00", 0, None)],
        overdue_count=2,
        failed=[FailedJob("bad-1", 2, "it broke [/] here", None)],
        kept=[KeptJob("kept-1", "kept: why", None)],
        unknown=[UnknownStatusJob("odd-1", "paused", 3, "status 'paused' is unknown", None)],
        unknown_count=5,
    )

    status_tables([status])

    out = capsys.readouterr().out
    assert "odd-1" in out
    assert "paused" in out
    assert "status 'paused' is unknown" in out
    assert "it broke [/] here" in out  # a provider's words, not markup
    for more in ("1 more overdue", "3 more failed", "2 more kept", "4 more unknown"):
        assert more in out
