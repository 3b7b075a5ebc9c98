"""The ledger on SQLite and PostgreSQL: migrations, claims, fencing and the delete gate."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from worker.domain import OPEN_STATES, JobSnapshot, JobState, ListedJob, Phase
from worker.errors import LedgerError
from worker.ledger import OPEN_JOBS, SCHEMA_REVISION, FileRecord, Ledger, metadata

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=5)


def finished(job_id: str) -> JobSnapshot:
    return JobSnapshot(job_id, "finished", Phase.SUCCEEDED, None, {"id": job_id})


def open_ledger(url: str, *, returning: bool = True) -> Ledger:
    """A ledger; ``returning=False`` takes the path of a database without UPDATE RETURNING
    (SQLite before 3.35), where each fenced UPDATE is followed by a SELECT of the row."""
    ledger = Ledger.open(url)
    if not returning:
        ledger.engine.dialect.update_returning = False
    return ledger


RETURNING = pytest.mark.parametrize("returning", [True, False], ids=["returning", "no-returning"])


def test_the_migrations_create_exactly_the_tables_the_code_uses(empty_ledger_url: str) -> None:
    ledger = Ledger.open(empty_ledger_url)
    with ledger.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_the_code_expects_the_migrations_head() -> None:
    config = Config()
    config.set_main_option(
        "script_location", str(Path(__file__).parents[2] / "worker" / "migrations")
    )
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION


def test_opening_twice_migrates_once(empty_ledger_url: str) -> None:
    Ledger.open(empty_ledger_url).close()
    assert Ledger.open(empty_ledger_url).schema_revision() == SCHEMA_REVISION


@RETURNING
def test_a_claim_is_exclusive_until_released_or_expired(ledger_url: str, returning: bool) -> None:
    ledger = open_ledger(ledger_url, returning=returning)
    assert ledger.jobs.claim("daily", "j", owner="a", ttl=TTL, now=NOW) is not None
    assert ledger.jobs.claim("daily", "j", owner="b", ttl=TTL, now=NOW) is None
    assert ledger.jobs.claim("daily", "j", owner="b", ttl=TTL, now=NOW + TTL + timedelta(seconds=1))
    row = ledger.query.get("daily", "j")
    assert row is not None
    assert row.lease_owner == "b"


@RETURNING
def test_a_worker_that_lost_its_claim_cannot_move_the_job(ledger_url: str, returning: bool) -> None:
    ledger = open_ledger(ledger_url, returning=returning)
    row = ledger.jobs.claim("daily", "j", owner="a", ttl=TTL, now=NOW)
    assert row is not None
    later = NOW + TTL + timedelta(seconds=1)
    assert ledger.jobs.claim("daily", "j", owner="b", ttl=TTL, now=later) is not None
    with pytest.raises(LedgerError, match="no longer holds"):
        ledger.jobs.record_status(row, finished("j"), owner="a", now=later)


def archived(ledger: Ledger, job_id: str, owner: str = "w") -> None:
    row = ledger.jobs.claim("daily", job_id, owner=owner, ttl=TTL, now=NOW)
    assert row is not None
    row = ledger.jobs.record_status(row, finished(job_id), owner=owner, now=NOW)
    record = FileRecord("k", 1, "0" * 64, "src", "etag", None, None, None)
    ledger.jobs.record_file(row, record, owner=owner, now=NOW)
    ledger.jobs.mark_archived(row, owner=owner, manifest_key="m", files=[record], now=NOW)


@RETURNING
def test_the_delete_gate_opens_only_for_an_archived_unheld_claimed_job(
    ledger_url: str, returning: bool
) -> None:
    ledger = open_ledger(ledger_url, returning=returning)
    pending = ledger.jobs.claim("daily", "pending", owner="w", ttl=TTL, now=NOW)
    assert pending is not None
    with pytest.raises(LedgerError, match="gate stayed shut"):
        ledger.jobs.open_delete_gate(pending, owner="w", now=NOW)

    archived(ledger, "held")
    ledger.operator.set_hold("daily", "held", held=True, now=NOW)
    held = ledger.query.get("daily", "held")
    assert held is not None
    with pytest.raises(LedgerError, match="gate stayed shut"):
        ledger.jobs.open_delete_gate(held, owner="w", now=NOW)

    archived(ledger, "ok")
    ok = ledger.query.get("daily", "ok")
    assert ok is not None
    with pytest.raises(LedgerError):
        ledger.jobs.open_delete_gate(ok, owner="someone-else", now=NOW)
    assert ledger.jobs.open_delete_gate(ok, owner="w", now=NOW).state == JobState.DELETING
    events = [e["event"] for e in ledger.query.audit_trail("daily", "ok")]
    assert events == ["archived", "delete_requested"]


def test_a_hold_on_an_unseen_job_survives_its_discovery(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    assert ledger.operator.set_hold("daily", "future", held=True, now=NOW, reason="case 42")
    ledger.discovery.record_listing(
        "daily", [ListedJob("future", "finished", Phase.SUCCEEDED)], NOW
    )
    row = ledger.query.get("daily", "future")
    assert row is not None
    assert row.held
    assert row.terminal_at == NOW
    assert ledger.query.candidates("daily", now=NOW, due_cutoff=NOW, refreshed_since=NOW) == []


def test_candidates_are_due_resumable_or_stale_and_never_held(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    earlier = NOW - timedelta(days=10)
    ledger.discovery.record_listing(
        "daily",
        [
            ListedJob("old", "finished", Phase.SUCCEEDED),
            ListedJob("running", "processing", Phase.RUNNING),
        ],
        earlier,
    )
    ledger.discovery.record_listing("daily", [ListedJob("fresh", "finished", Phase.SUCCEEDED)], NOW)
    ledger.operator.track("daily", ["tracked"], now=NOW)
    cutoff = NOW - timedelta(days=7)
    found = ledger.query.candidates("daily", now=NOW, due_cutoff=cutoff, refreshed_since=NOW)
    assert {c.job_id for c in found} == {"old", "running", "tracked"}


def test_a_sweep_lease_excludes_a_second_sweep_until_it_expires(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    assert ledger.coord.acquire("sweep:daily", owner="a", ttl=TTL, now=NOW)
    assert not ledger.coord.acquire("sweep:daily", owner="b", ttl=TTL, now=NOW)
    assert not ledger.coord.renew("sweep:daily", owner="b", ttl=TTL, now=NOW)
    ledger.coord.release("sweep:daily", owner="b")  # not b's to release
    assert not ledger.coord.acquire("sweep:daily", owner="b", ttl=TTL, now=NOW)
    assert ledger.coord.acquire("sweep:daily", owner="b", ttl=TTL, now=NOW + TTL * 2)


def test_a_dry_run_never_creates_or_changes_the_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing.db"
    ledger = Ledger.open(url, read_only=True)
    assert ledger.query.get("daily", "x") is None
    with pytest.raises(LedgerError, match="read-only"):
        ledger.operator.track("daily", ["x"], now=NOW)
    assert not (tmp_path / "missing.db").exists()


def test_status_reports_overdue_and_failed_jobs(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    ledger.discovery.record_listing(
        "daily", [ListedJob("late", "finished", Phase.SUCCEEDED)], NOW - timedelta(days=9)
    )
    row = ledger.jobs.claim("daily", "bad", owner="w", ttl=TTL, now=NOW)
    assert row is not None
    ledger.jobs.fail(row, "daily job bad: it broke. Do this", owner="w", now=NOW)
    (status,) = ledger.query.status({"daily": 7}, now=NOW)
    assert status.overdue_count == 1
    assert status.overdue[0].job_id == "late"
    assert status.failed[0].last_error == "daily job bad: it broke. Do this"
    assert ledger.operator.retry("daily", "bad", now=NOW)
    bad = ledger.query.get("daily", "bad")
    assert bad is not None
    assert bad.state == JobState.PENDING


def defer_unknown(ledger: Ledger, job_id: str, status: str = "paused") -> None:
    """A job read in a status word no adapter knows, and deferred for it, as a sweep does."""
    row = ledger.jobs.claim("daily", job_id, owner="w", ttl=TTL, now=NOW)
    assert row is not None
    row = ledger.jobs.record_status(
        row, JobSnapshot(job_id, status, Phase.UNKNOWN, None, {}), owner="w", now=NOW
    )
    error = f"daily job {job_id}: status {status!r} is not one this worker knows"
    ledger.jobs.defer(row, error, owner="w", now=NOW, retry_at=NOW + timedelta(minutes=5))


def test_status_lists_jobs_in_a_status_the_adapter_does_not_know(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    ledger.discovery.record_listing(
        "daily", [ListedJob("fine", "finished", Phase.SUCCEEDED)], NOW - timedelta(days=1)
    )
    defer_unknown(ledger, "odd")

    (status,) = ledger.query.status({"daily": 7}, now=NOW)

    assert status.unknown_count == 1
    (odd,) = status.unknown
    assert (odd.job_id, odd.status, odd.attempts) == ("odd", "paused", 1)
    assert odd.last_error == "daily job odd: status 'paused' is not one this worker knows"
    assert odd.checked_at == NOW.isoformat()


def test_status_counts_each_list_whole_though_it_shows_only_the_first_rows(
    ledger_url: str,
) -> None:
    # given: three jobs of each kind that needs a look
    ledger = Ledger.open(ledger_url)
    ledger.discovery.record_listing(
        "daily",
        [ListedJob(f"late-{n}", "finished", Phase.SUCCEEDED) for n in range(3)],
        NOW - timedelta(days=9),
    )
    for n in range(3):
        defer_unknown(ledger, f"odd-{n}")
        for name in ("bad", "kept"):
            row = ledger.jobs.claim("daily", f"{name}-{n}", owner="w", ttl=TTL, now=NOW)
            assert row is not None
            if name == "bad":
                ledger.jobs.fail(row, "it broke", owner="w", now=NOW)
            else:
                ledger.jobs.keep(row, "unknown_output", "kept: why", owner="w", now=NOW)

    # when: at most two rows a list
    (status,) = ledger.query.status({"daily": 7}, now=NOW, limit=2)

    # then: two shown of each, and the counts of all
    shown = (status.overdue, status.failed, status.kept, status.unknown)
    assert [len(rows) for rows in shown] == [2, 2, 2, 2]
    counts = (status.overdue_count, status.states["failed"], status.states["kept"])
    assert (*counts, status.unknown_count) == (3, 3, 3, 3)


def test_naive_datetimes_are_refused(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    with pytest.raises(sa.exc.StatementError):
        ledger.operator.track("daily", ["x"], now=datetime(2026, 1, 1))


@pytest.mark.postgres
def test_a_claim_on_postgresql_skips_a_row_another_transaction_holds(postgres_url: str) -> None:
    ledger = Ledger.open(postgres_url)
    ledger.operator.track("daily", ["j"], now=NOW)
    with ledger.engine.connect() as other:
        other.execute(sa.text("SELECT id FROM jobs WHERE job_id = 'j' FOR UPDATE"))
        started = time.monotonic()
        assert ledger.jobs.claim("daily", "j", owner="w", ttl=TTL, now=NOW) is None
        assert time.monotonic() - started < 2
        other.rollback()
    assert ledger.jobs.claim("daily", "j", owner="w", ttl=TTL, now=NOW) is not None


def test_a_listed_finish_time_starts_the_clock_but_never_later_than_our_sighting(
    ledger_url: str,
) -> None:
    ledger = Ledger.open(ledger_url)
    last_month = NOW - timedelta(days=30)
    ledger.discovery.record_listing(
        "mpc",
        [
            ListedJob("old", "SUCCEEDED", Phase.SUCCEEDED, finished_at=last_month),
            ListedJob("ahead", "SUCCEEDED", Phase.SUCCEEDED, finished_at=NOW + timedelta(hours=2)),
            ListedJob("plain", "SUCCEEDED", Phase.SUCCEEDED),
        ],
        NOW,
    )
    terminal = {
        j: getattr(ledger.query.get("mpc", j), "terminal_at", None)
        for j in ("old", "ahead", "plain")
    }
    assert terminal == {"old": last_month, "ahead": NOW, "plain": NOW}
    due = ledger.query.candidates(
        "mpc", now=NOW, due_cutoff=NOW - timedelta(days=7), refreshed_since=NOW
    )
    assert [c.job_id for c in due] == ["old"]


def test_the_open_jobs_index_covers_exactly_the_states_a_sweep_acts_on() -> None:
    closed = {JobState.DELETED, JobState.GONE, JobState.FAILED}
    assert closed == set(JobState) - OPEN_STATES
    named = set(re.findall(r"'([a-z]+)'", str(OPEN_JOBS)))
    assert named == {s.value for s in JobState if s not in closed}


def test_the_migrated_open_jobs_index_is_partial(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    with ledger.engine.connect() as conn:
        if ledger.db.is_postgres:
            definition = conn.exec_driver_sql("SELECT pg_get_indexdef('ix_jobs_open'::regclass)")
        else:
            definition = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'ix_jobs_open'"
            )
        sql = definition.scalar_one()
    where = sql.split(" WHERE ", 1)[1]
    assert set(re.findall(r"'([a-z]+)'", where)) == set(re.findall(r"'([a-z]+)'", str(OPEN_JOBS)))


def test_picking_a_batch_reads_the_open_jobs_index(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    query = ledger.query.candidates_query(
        "daily", now=NOW, due_cutoff=NOW, refreshed_since=NOW, after_pk=0, limit=500
    )
    explain = "EXPLAIN QUERY PLAN " if not ledger.db.is_postgres else "EXPLAIN "
    compiled = query.compile(ledger.engine, compile_kwargs={"literal_binds": True})
    with ledger.engine.connect() as conn:
        if ledger.db.is_postgres:
            conn.exec_driver_sql("SET enable_seqscan = off")
        plan = " ".join(str(row) for row in conn.exec_driver_sql(f"{explain}{compiled}"))
    assert "ix_jobs_open" in plan
