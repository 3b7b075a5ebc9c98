"""The ledger's writes under a claim, on SQLite and PostgreSQL: the claim that ends with the
job's last transition, fenced writes that change nothing when refused, the delete budget,
driver errors, and the manifest's identity (schema 0005)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import sqlite

from worker.domain import JobRow, JobSnapshot, JobState, Phase
from worker.errors import BrakeEngaged, LedgerError
from worker.leases import Claim
from worker.ledger import SCHEMA_REVISION, FileRecord, Ledger, make_engine
from worker.ledger.schema import UTCDateTime

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=5)
RECORD = FileRecord("k", 1, "0" * 64, "src", "etag", None, None, None)
RETURNING = pytest.mark.parametrize("returning", [True, False], ids=["returning", "no-returning"])


def open_ledger(url: str, *, returning: bool = True) -> Ledger:
    ledger = Ledger.open(url)
    if not returning:
        ledger.engine.dialect.update_returning = False
    return ledger


def claimed(ledger: Ledger, job_id: str, owner: str = "w") -> JobRow:
    row = ledger.jobs.claim("daily", job_id, owner=owner, ttl=TTL, now=NOW)
    assert row is not None
    snapshot = JobSnapshot(job_id, "finished", Phase.SUCCEEDED, None, {"id": job_id})
    return ledger.jobs.record_status(row, snapshot, owner=owner, now=NOW)


def archived(
    ledger: Ledger,
    job_id: str,
    owner: str = "w",
    *,
    manifest_etag: str | None = None,
    manifest_version_id: str | None = None,
) -> JobRow:
    row = claimed(ledger, job_id, owner)
    ledger.jobs.record_file(row, RECORD, owner=owner, now=NOW)
    return ledger.jobs.mark_archived(
        row,
        owner=owner,
        manifest_key="m",
        files=[RECORD],
        now=NOW,
        manifest_etag=manifest_etag,
        manifest_version_id=manifest_version_id,
    )


def cleaning(ledger: Ledger, job_id: str, owner: str = "w") -> JobRow:
    row = archived(ledger, job_id, owner)
    row = ledger.jobs.open_delete_gate(row, owner=owner, now=NOW)
    return ledger.jobs.record_provider_deleted(row, {"status_code": 200}, owner=owner, now=NOW)


# -- a claim ends with the job's last transition ---------------------------------------------


@RETURNING
def test_the_last_transition_of_a_job_ends_its_claim_in_the_same_update(
    ledger_url: str, returning: bool
) -> None:
    ledger = open_ledger(ledger_url, returning=returning)
    finished = {
        "deleted": ledger.jobs.mark_deleted(
            cleaning(ledger, "deleted"), receipt_key="r", owner="w", now=NOW
        ),
        "gone": ledger.jobs.mark_gone(claimed(ledger, "gone"), {"status": 404}, owner="w", now=NOW),
        "failed": ledger.jobs.fail(claimed(ledger, "failed"), "broken", owner="w", now=NOW),
    }
    for job_id, row in finished.items():
        assert (row.lease_owner, row.lease_expires_at) == (None, None), job_id
        stored = ledger.query.get("daily", job_id)
        assert stored is not None
        assert (stored.lease_owner, stored.lease_expires_at) == (None, None), job_id
    assert finished["deleted"].state == JobState.DELETED


@RETURNING
def test_a_job_the_worker_still_acts_on_stays_claimed(ledger_url: str, returning: bool) -> None:
    ledger = open_ledger(ledger_url, returning=returning)
    later = NOW + timedelta(hours=1)
    rows = [
        claimed(ledger, "read"),
        ledger.jobs.keep(claimed(ledger, "kept"), "why", "kept on purpose", owner="w", now=NOW),
        ledger.jobs.defer(claimed(ledger, "deferred"), "later", owner="w", now=NOW, retry_at=later),
        archived(ledger, "archived"),
    ]
    for row in rows:
        assert row.lease_owner == "w", row.job_id
        assert row.lease_expires_at == NOW + TTL, row.job_id


def test_a_claim_that_ended_with_the_job_has_nothing_to_release(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger.open(ledger_url)
    ledger.jobs.release(cleaning(ledger, "done").pk, owner="w")
    released: list[int] = []
    release = ledger.jobs.release

    def counted_release(pk: int, *, owner: str) -> None:
        released.append(pk)
        release(pk, owner=owner)

    monkeypatch.setattr(ledger.jobs, "release", counted_release)

    with Claim(ledger, "daily", "done", ttl=TTL, clock=lambda: NOW) as claim:
        assert claim.row is not None
        claim.row = ledger.jobs.mark_deleted(
            claim.current, receipt_key="r", owner=claim.owner, now=NOW
        )
    assert released == []

    with Claim(ledger, "daily", "waiting", ttl=TTL, clock=lambda: NOW) as claim:
        assert claim.row is not None
        pk = claim.row.pk
    assert released == [pk]
    waiting = ledger.query.get("daily", "waiting")
    assert waiting is not None
    assert waiting.lease_owner is None
    assert ledger.jobs.claim("daily", "done", owner="next", ttl=TTL, now=NOW) is not None


# -- a refused write changes nothing ---------------------------------------------------------


@RETURNING
def test_a_refused_transition_changes_nothing_it_would_have_written_with_it(
    ledger_url: str, returning: bool
) -> None:
    ledger = open_ledger(ledger_url, returning=returning)
    row = claimed(ledger, "j")
    with pytest.raises(LedgerError, match="no longer holds"):
        ledger.jobs.record_file(row, RECORD, owner="someone-else", now=NOW)
    assert ledger.query.files(row.pk) == {}
    with pytest.raises(LedgerError):
        ledger.jobs.mark_deleted(row, receipt_key="r", owner="w", now=NOW)
    after = ledger.query.get("daily", "j")
    assert after is not None
    assert (after.state, after.lease_owner, after.receipt_key) == (JobState.PENDING, "w", None)
    assert ledger.query.audit_trail("daily", "j") == []


def test_a_spent_delete_budget_leaves_the_job_archived_and_the_budget_as_it_was(
    ledger_url: str,
) -> None:
    ledger = Ledger.open(ledger_url)
    ledger.coord.open_budget("sweep-1", "daily", 1, now=NOW)
    first, second = archived(ledger, "first"), archived(ledger, "second")
    assert ledger.jobs.open_delete_gate(first, owner="w", now=NOW, budget="sweep-1").state == (
        JobState.DELETING
    )
    with pytest.raises(BrakeEngaged):
        ledger.jobs.open_delete_gate(second, owner="w", now=NOW, budget="sweep-1")
    after = ledger.query.get("daily", "second")
    assert after is not None
    assert (after.state, after.delete_requested_at) == (JobState.ARCHIVED, None)
    assert ledger.coord.budget_left("sweep-1") == 0
    assert [e["event"] for e in ledger.query.audit_trail("daily", "second")] == ["archived"]


def test_a_driver_error_is_sqlalchemys_and_rolls_the_transition_back(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    row = archived(ledger, "j")
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE audit_events RENAME TO audit_hidden")
    try:
        with pytest.raises(sa.exc.DBAPIError):
            ledger.jobs.open_delete_gate(row, owner="w", now=NOW)
    finally:
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE audit_hidden RENAME TO audit_events")
    after = ledger.query.get("daily", "j")
    assert after is not None
    assert after.state == JobState.ARCHIVED
    # The connection that failed is fit to use, or was not kept.
    assert ledger.jobs.open_delete_gate(row, owner="w", now=NOW).state == JobState.DELETING


def test_a_naive_datetime_is_refused_before_anything_is_written(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        ledger.jobs.claim("daily", "j", owner="w", ttl=TTL, now=datetime(2026, 1, 1))
    assert ledger.query.get("daily", "j") is None


def test_an_audit_detail_stores_what_json_has_no_type_for_as_its_text(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    row = claimed(ledger, "j")
    ledger.jobs.audit_event(row, "custom", {"at": NOW, "state": row.state}, owner="w", now=NOW)
    (event,) = ledger.query.audit_trail("daily", "j")
    assert event["detail"] == {"at": str(NOW), "state": "pending"}
    assert event["at"] == NOW


def test_sqlite_datetimes_are_the_text_sqlalchemy_writes_and_reads() -> None:
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect)
    to_text, from_text = ours.bind_processor(dialect), ours.result_processor(dialect, None)
    plain = sa.DateTime().dialect_impl(dialect)
    plain_text, plain_datetime = (
        plain.bind_processor(dialect),
        plain.result_processor(dialect, None),
    )
    assert to_text is not None
    assert from_text is not None
    assert plain_text is not None
    assert plain_datetime is not None
    for value in (
        NOW,
        NOW.replace(microsecond=7),
        datetime(1, 1, 2, tzinfo=UTC),
        datetime(2026, 1, 1, 3, tzinfo=UTC).astimezone(timezone(timedelta(hours=5))),
    ):
        naive = value.astimezone(UTC).replace(tzinfo=None)
        assert to_text(value) == plain_text(naive)
        assert from_text(to_text(value)) == value
        assert from_text(to_text(value)) == value.astimezone(UTC)
        assert plain_datetime(plain_text(naive)) == naive
    with pytest.raises(ValueError, match="naive"):
        to_text(datetime(2026, 1, 1))


# -- the manifest's identity (schema 0005) ---------------------------------------------------


def test_a_job_records_the_manifest_it_was_archived_with_and_forgets_it_when_reopened(
    ledger_url: str,
) -> None:
    ledger = Ledger.open(ledger_url)
    row = archived(ledger, "j", manifest_etag='"abc"', manifest_version_id="v1")
    assert (row.manifest_etag, row.manifest_version_id) == ('"abc"', "v1")
    stored = ledger.query.get("daily", "j")
    assert stored is not None
    assert (stored.manifest_etag, stored.manifest_version_id) == ('"abc"', "v1")
    (event,) = ledger.query.audit_trail("daily", "j")
    assert event["detail"]["manifest_etag"] == '"abc"'

    reopened = ledger.jobs.reopen(row, ["k"], "lost", owner="w", now=NOW)
    assert (reopened.manifest_key, reopened.manifest_etag, reopened.manifest_version_id) == (
        None,
        None,
        None,
    )
    assert ledger.query.files(row.pk) == {}
    assert archived(ledger, "plain").manifest_etag is None


def _upgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option(
        "script_location", str(Path(__file__).parents[2] / "worker" / "migrations")
    )
    engine = make_engine(url)
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()
    engine.dispose()


def test_an_upgrade_to_0005_keeps_every_job_and_adds_an_empty_manifest_identity(
    ledger_url: str,
) -> None:
    _upgrade(ledger_url, "0004")
    engine = make_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO jobs (provider, job_id, state, tracked, held, first_seen_at, "
                "attempts, updated_at, manifest_key) VALUES ('daily', 'old', 'archived', "
                "false, false, '2026-11-01 00:00:00', 0, '2026-11-01 00:00:00', 'm')"
            )
        )
    engine.dispose()
    ledger = Ledger.open(ledger_url)
    assert ledger.schema_revision() == SCHEMA_REVISION
    old = ledger.query.get("daily", "old")
    assert old is not None
    assert (old.state, old.manifest_key) == (JobState.ARCHIVED, "m")
    assert (old.manifest_etag, old.manifest_version_id) == (None, None)


def test_an_upgrade_to_0006_counts_an_archived_job_as_archived_once_with_no_outputs_on_record(
    empty_ledger_url: str,
) -> None:
    # given: a ledger at 0005 with an archived job and a pending one
    _upgrade(empty_ledger_url, "0005")
    engine = make_engine(empty_ledger_url)
    with engine.begin() as conn:
        for job_id, state, key in (("old", "archived", "'m'"), ("new", "pending", "NULL")):
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (provider, job_id, state, tracked, held, first_seen_at, "
                    f"attempts, updated_at, manifest_key) VALUES ('daily', '{job_id}', "
                    f"'{state}', false, false, '2026-11-01 00:00:00', 0, "
                    f"'2026-11-01 00:00:00', {key})"
                )
            )
    engine.dispose()

    # when: the worker opens it
    ledger = Ledger.open(empty_ledger_url)

    # then: the archived job was archived once, and nothing proves its outputs yet (the read
    # before its delete archives it again); the pending one was never archived
    assert SCHEMA_REVISION == "0006"
    old, new = ledger.query.get("daily", "old"), ledger.query.get("daily", "new")
    assert old is not None
    assert new is not None
    assert (old.archive_revision, old.archived_outputs, old.kept_reason) == (1, None, None)
    assert new.archive_revision == 0
