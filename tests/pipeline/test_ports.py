"""One contract per port (``worker/ports.py``), run against the fake and the real thing.

A fake must pass the same contract tests as the real thing, or it lies: every fake-backed
test in this folder would then prove something about a world that does not exist. So each
case below runs twice, on the fake from ``tests/fakes.py`` and on the real implementation:

* the archive: ``FakeArchive`` and ``Archive`` on moto's S3 server;
* the ledger's job operations: ``FakeLedger`` and ``Ledger`` on SQLite (the ledger's own
  tests run its SQL on PostgreSQL too);
* the provider: ``FakeProvider`` and the Daily adapter over its simulator.

Each ``Side`` says how to arrange what a case needs on its implementation (lose an object,
open a budget, add a job), so the cases name no implementation.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import pytest
from pydantic import TypeAdapter

from tests.fakes import FakeArchive, FakeLedger, FakeProvider
from tests.helpers import settings_of
from worker.archive import Archive, Verified, make_s3_client
from worker.domain import (
    AlreadyGone,
    Artifact,
    Deleted,
    JobGone,
    JobRow,
    JobSnapshot,
    JobState,
    LinkOrigin,
    Phase,
    ProviderOrigin,
)
from worker.errors import ArchiveError, BrakeEngaged, DownloadError, LedgerError
from worker.ledger import Ledger
from worker.ledger.schema import FileRecord
from worker.ports import ArchiveStore, JobLedger
from worker.providers import build_provider
from worker.providers.base import Provider
from worker.settings import ProviderSettings
from worker.simulators.daily import DailySimulator
from worker.source_bucket import SourceBucket, SourceObject

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.simulators.s3server import S3Server

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=30)

# -- the archive -----------------------------------------------------------------------------


@dataclass
class ArchiveSide:
    archive: ArchiveStore
    lose: Callable[[str], None]
    # An object in one of the user's own buckets: (bucket, key, body) -> what a HEAD says.
    source: Callable[[str, bytes], SourceObject]


@pytest.fixture(params=["fake", pytest.param("moto", marks=pytest.mark.integration)])
def archive_side(request: pytest.FixtureRequest) -> ArchiveSide:
    if request.param == "fake":
        fake = FakeArchive()

        def fake_source(key: str, body: bytes) -> SourceObject:
            fake.sources[("own-bucket", key)] = body
            return SourceObject("own-bucket", key, len(body), "etag")

        return ArchiveSide(fake, fake.lose, fake_source)
    s3_server: S3Server = request.getfixturevalue("s3_server")
    s3: S3Client = request.getfixturevalue("s3")
    bucket: str = request.getfixturevalue("bucket")
    own: str = request.getfixturevalue("custom_bucket")
    settings = settings_of(
        {
            "archive": {"bucket": bucket, "endpoint_url": s3_server.endpoint_url},
            "ledger": {"url": "sqlite://"},
            "providers": {},
        }
    ).archive
    archive = Archive(make_s3_client(settings), settings)

    def real_source(key: str, body: bytes) -> SourceObject:
        s3.put_object(Bucket=own, Key=key, Body=body)
        return SourceBucket(s3, same_endpoint=True).head(own, key)

    def lose(key: str) -> None:
        s3.delete_object(Bucket=bucket, Key=key)

    return ArchiveSide(archive, lose, real_source)


def test_a_stored_stream_is_held_unchanged_until_it_is_lost(archive_side: ArchiveSide) -> None:
    archive = archive_side.archive
    stored = archive.store_stream("jobs/1/a.txt", iter([b"hello ", b"world"]), size_hint=11)
    assert (stored.key, stored.size) == ("jobs/1/a.txt", 11)
    assert stored.sha256 == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    held = Verified(stored.key, stored.size, stored.etag, stored.version_id)
    assert archive.exists_unchanged(
        stored.key, size=stored.size, etag=stored.etag, version_id=stored.version_id
    )
    assert archive.missing([held]) == []

    archive_side.lose(stored.key)

    assert not archive.exists_unchanged(stored.key, size=stored.size, etag=stored.etag)
    assert archive.missing([held]) == [stored.key]


def test_an_object_of_another_size_or_etag_is_not_the_one_verified(
    archive_side: ArchiveSide,
) -> None:
    archive = archive_side.archive
    stored = archive.store_stream("jobs/2/a.txt", iter([b"abc"]))
    assert not archive.exists_unchanged(stored.key, size=4, etag=stored.etag)
    assert not archive.exists_unchanged(stored.key, size=3, etag="0" * 32)
    assert archive.missing([Verified(stored.key, 3, "0" * 32)]) == [stored.key]
    assert archive.missing([Verified(stored.key, None, stored.etag)]) == []


def test_a_key_is_never_overwritten_with_other_bytes(archive_side: ArchiveSide) -> None:
    archive = archive_side.archive
    first = archive.store_stream("jobs/3/a.txt", iter([b"first"]))
    with pytest.raises(ArchiveError) as refused:
        archive.store_stream("jobs/3/a.txt", iter([b"second"]))
    assert refused.value.permanent
    assert archive.exists_unchanged(first.key, size=first.size, etag=first.etag)


def test_storing_the_same_bytes_again_finds_them_stored(archive_side: ArchiveSide) -> None:
    archive = archive_side.archive
    first = archive.store_stream("jobs/4/a.txt", iter([b"same"]))
    again = archive.store_stream("jobs/4/a.txt", iter([b"same"]))
    assert (again.size, again.sha256, again.etag) == (first.size, first.sha256, first.etag)


def test_a_stream_that_fails_part_way_stores_nothing(archive_side: ArchiveSide) -> None:
    def broken() -> Iterator[bytes]:
        yield b"part of it"
        raise DownloadError("the download broke off")

    with pytest.raises(DownloadError):
        archive_side.archive.store_stream("jobs/5/a.txt", broken())
    assert archive_side.archive.missing([Verified("jobs/5/a.txt", None, None)]) == ["jobs/5/a.txt"]


def test_a_json_document_is_written_once_and_read_back(archive_side: ArchiveSide) -> None:
    archive = archive_side.archive
    assert archive.get_json("jobs/6/manifest.json") is None
    stored = archive.put_json("jobs/6/manifest.json", {"job_id": "6", "files": [1]})
    assert archive.get_json("jobs/6/manifest.json") == {"job_id": "6", "files": [1]}
    assert archive.exists_unchanged(stored.key, size=stored.size, etag=stored.etag)


def test_a_taken_json_key_is_kept_when_it_records_the_same_thing_else_refused(
    archive_side: ArchiveSide,
) -> None:
    archive = archive_side.archive
    first = archive.put_json("jobs/7/manifest.json", {"job_id": "7", "at": 1})

    kept = archive.put_json(
        "jobs/7/manifest.json", {"job_id": "7", "at": 2}, same=lambda old: old["job_id"] == "7"
    )
    assert (kept.size, kept.etag) == (first.size, first.etag)
    with pytest.raises(ArchiveError) as refused:
        archive.put_json("jobs/7/manifest.json", {"job_id": "7", "at": 3}, same=lambda _: False)
    assert refused.value.permanent
    assert archive.get_json("jobs/7/manifest.json") == {"job_id": "7", "at": 1}


def test_a_copy_from_the_users_bucket_holds_its_bytes(archive_side: ArchiveSide) -> None:
    source = archive_side.source("in/a.txt", b"your own bytes")
    stored = archive_side.archive.copy_from(source, "jobs/8/a.txt")
    assert stored.size == len(b"your own bytes")
    assert stored.sha256 == hashlib.sha256(b"your own bytes").hexdigest()
    assert archive_side.archive.missing([Verified(stored.key, stored.size, stored.etag)]) == []


# -- the ledger ------------------------------------------------------------------------------


@dataclass
class LedgerSide:
    ledger: JobLedger
    # Open a sweep's delete budget of ``max_deletes``; its id.
    budget: Callable[[int], str]
    # Hold a job, as `retention hold` does.
    hold: Callable[[str, str], None]


@pytest.fixture(params=["fake", "sqlite"])
def ledger_side(request: pytest.FixtureRequest) -> Iterator[LedgerSide]:
    if request.param == "fake":
        fake = FakeLedger()

        def fake_hold(provider: str, job_id: str) -> None:
            fake.jobs.set(provider, job_id, held=True)

        yield LedgerSide(fake, lambda most: fake.budget(uuid.uuid4().hex, most), fake_hold)
        return
    real = Ledger.open(request.getfixturevalue("sqlite_url"))

    def real_budget(most: int) -> str:
        name = uuid.uuid4().hex
        real.coord.open_budget(name, "daily", most, now=NOW)
        return name

    def real_hold(provider: str, job_id: str) -> None:
        real.operator.set_hold(provider, job_id, held=True, now=NOW)

    yield LedgerSide(real, real_budget, real_hold)
    real.close()


def claimed(side: LedgerSide, job_id: str = "j", owner: str = "me") -> JobRow:
    row = side.ledger.jobs.claim("daily", job_id, owner=owner, ttl=TTL, now=NOW)
    assert row is not None
    return row


def finished(job_id: str = "j") -> JobSnapshot:
    return JobSnapshot(job_id, "finished", Phase.SUCCEEDED, None, {"id": job_id})


def archived(side: LedgerSide, job_id: str = "j", owner: str = "me") -> JobRow:
    jobs = side.ledger.jobs
    row = jobs.record_status(claimed(side, job_id, owner), finished(job_id), owner=owner, now=NOW)
    record = FileRecord(f"a/{job_id}/out.txt", 3, "ab" * 32, "src", "etag")
    jobs.record_file(row, record, owner=owner, now=NOW)
    return jobs.mark_archived(
        row, owner=owner, manifest_key=f"a/{job_id}/manifest.json", files=[record], now=NOW
    )


def test_a_claim_is_exclusive_until_released_or_expired(ledger_side: LedgerSide) -> None:
    jobs = ledger_side.ledger.jobs
    row = claimed(ledger_side)
    assert (row.state, row.lease_owner) == (JobState.PENDING, "me")
    assert jobs.claim("daily", "j", owner="you", ttl=TTL, now=NOW) is None
    assert jobs.renew(row.pk, owner="me", ttl=TTL, now=NOW)
    assert not jobs.renew(row.pk, owner="you", ttl=TTL, now=NOW)
    later = NOW + TTL + timedelta(seconds=1)
    assert jobs.claim("daily", "j", owner="you", ttl=TTL, now=later) is not None
    jobs.release(row.pk, owner="you")
    assert jobs.claim("daily", "j", owner="me", ttl=TTL, now=later) is not None


def test_a_transition_without_the_claim_changes_nothing(ledger_side: LedgerSide) -> None:
    ledger = ledger_side.ledger
    row = claimed(ledger_side)
    with pytest.raises(LedgerError):
        ledger.jobs.record_status(row, finished(), owner="you", now=NOW)
    assert ledger.query.get("daily", "j") == row


def test_an_event_from_a_state_it_does_not_leave_is_refused(ledger_side: LedgerSide) -> None:
    ledger = ledger_side.ledger
    row = claimed(ledger_side)
    with pytest.raises(LedgerError):
        ledger.jobs.mark_deleted(row, receipt_key="r", owner="me", now=NOW)
    with pytest.raises(LedgerError):
        ledger.jobs.open_delete_gate(row, owner="me", now=NOW)
    assert ledger.query.get("daily", "j") == row


def test_the_gate_opens_for_an_archived_job_nobody_holds(ledger_side: LedgerSide) -> None:
    jobs = ledger_side.ledger.jobs
    row = archived(ledger_side)
    assert (row.state, row.files_count, row.archive_revision) == (JobState.ARCHIVED, 1, 1)
    opened = jobs.open_delete_gate(row, owner="me", now=NOW)
    assert (opened.state, opened.delete_requested_at) == (JobState.DELETING, NOW)

    held = archived(ledger_side, "h")
    ledger_side.hold("daily", "h")
    with pytest.raises(LedgerError):
        jobs.open_delete_gate(held, owner="me", now=NOW)


def test_a_spent_budget_engages_the_brake_and_changes_nothing(ledger_side: LedgerSide) -> None:
    jobs, query = ledger_side.ledger.jobs, ledger_side.ledger.query
    budget = ledger_side.budget(1)
    first, second = archived(ledger_side, "one"), archived(ledger_side, "two")
    assert jobs.open_delete_gate(first, owner="me", now=NOW, budget=budget).state == (
        JobState.DELETING
    )
    with pytest.raises(BrakeEngaged):
        jobs.open_delete_gate(second, owner="me", now=NOW, budget=budget)
    assert query.get("daily", "two") == second


def test_reopening_forgets_the_lost_files_and_the_manifest(ledger_side: LedgerSide) -> None:
    ledger = ledger_side.ledger
    row = archived(ledger_side)
    assert set(ledger.query.files(row.pk)) == {"a/j/out.txt"}
    reopened = ledger.jobs.reopen(row, ["a/j/out.txt"], "it vanished", owner="me", now=NOW)
    assert (reopened.state, reopened.manifest_key) == (JobState.PENDING, None)
    assert reopened.archive_revision == 0
    assert ledger.query.files(row.pk) == {}


def test_a_job_done_with_ends_its_claim(ledger_side: LedgerSide) -> None:
    jobs = ledger_side.ledger.jobs
    gone = jobs.mark_gone(claimed(ledger_side), {"at": NOW}, owner="me", now=NOW)
    assert (gone.state, gone.lease_owner, gone.lease_expires_at) == (JobState.GONE, None, None)
    # What the ledger keeps as JSON comes back as JSON gives it.
    assert gone.delete_answer == {"at": str(NOW)}
    deleting = jobs.open_delete_gate(archived(ledger_side, "d"), owner="me", now=NOW)
    cleaning = jobs.record_provider_deleted(deleting, {"ok": True}, owner="me", now=NOW)
    done = jobs.mark_deleted(cleaning, receipt_key="r.json", owner="me", now=NOW)
    assert (done.state, done.lease_owner, done.receipt_key) == (JobState.DELETED, None, "r.json")


def test_deferring_failing_and_keeping_count_attempts_and_say_why(
    ledger_side: LedgerSide,
) -> None:
    jobs = ledger_side.ledger.jobs
    later = NOW + timedelta(hours=1)
    deferred = jobs.defer(claimed(ledger_side), "down", owner="me", now=NOW, retry_at=later)
    assert (deferred.attempts, deferred.last_error, deferred.next_attempt_at) == (1, "down", later)
    kept = jobs.keep(deferred, "unrecognised_output", "a field", owner="me", now=NOW)
    assert (kept.state, kept.attempts, kept.kept_reason) == (
        JobState.KEPT,
        2,
        "unrecognised_output",
    )
    assert kept.next_attempt_at is not None
    assert kept.next_attempt_at > NOW
    failed = jobs.fail(claimed(ledger_side, "f"), "broken", owner="me", now=NOW)
    assert (failed.state, failed.attempts, failed.lease_owner) == (JobState.FAILED, 1, None)


def test_the_audit_trail_names_each_event_in_order(ledger_side: LedgerSide) -> None:
    ledger = ledger_side.ledger
    row = archived(ledger_side)
    ledger.jobs.audit_event(row, "delete_incomplete", {"error": "x"}, owner="me", now=NOW)
    ledger.jobs.open_delete_gate(row, owner="me", now=NOW)
    trail = ledger.query.audit_trail("daily", "j")
    assert [e["event"] for e in trail] == ["archived", "delete_incomplete", "delete_requested"]
    assert trail[1]["detail"] == {"error": "x"}
    assert ledger.query.audit_trail("daily", "other") == []


# -- the provider ----------------------------------------------------------------------------


@dataclass
class ProviderSide:
    provider: Provider
    # A finished job with these files (name suffix -> bytes); its id.
    add_finished: Callable[[list[bytes]], str]
    add_running: Callable[[], str]


PROVIDER_SETTINGS: TypeAdapter[ProviderSettings] = TypeAdapter(ProviderSettings)


@pytest.fixture(scope="module")
def daily_account() -> Iterator[DailySimulator]:
    sim = DailySimulator("daily-ports-key-9e1d")
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(params=["fake", "daily"])
def provider_side(request: pytest.FixtureRequest) -> Iterator[ProviderSide]:
    if request.param == "fake":
        fake = FakeProvider()
        yield ProviderSide(
            fake,
            lambda bodies: fake.add_job(files={f"out-{i}.txt": b for i, b in enumerate(bodies)}),
            lambda: fake.add_job("running"),
        )
        return
    sim: DailySimulator = request.getfixturevalue("daily_account")
    sim.reset()
    adapter = build_provider("daily", PROVIDER_SETTINGS.validate_python(sim.provider_table()))
    yield ProviderSide(
        adapter,
        lambda bodies: sim.add_job("finished", transcription=[("txt", b) for b in bodies]),
        lambda: sim.add_job("processing"),
    )
    adapter.close()


def read(provider: Provider, artifact: Artifact) -> bytes:
    """An artifact's bytes, however the provider hands it out."""
    if isinstance(artifact.origin, LinkOrigin):
        return httpx.get(artifact.origin.url).content
    assert isinstance(artifact.origin, ProviderOrigin)
    with provider.open_artifact(artifact) as response:
        return response.read()


def test_a_finished_job_reads_as_terminal_and_a_running_one_not(
    provider_side: ProviderSide,
) -> None:
    provider = provider_side.provider
    done = provider.get_job(provider_side.add_finished([b"x"]))
    running = provider.get_job(provider_side.add_running())
    assert isinstance(done, JobSnapshot)
    assert (done.terminal, done.phase) == (True, Phase.SUCCEEDED)
    assert isinstance(running, JobSnapshot)
    assert not running.terminal


def test_a_job_the_provider_does_not_have_is_gone(provider_side: ProviderSide) -> None:
    answer = provider_side.provider.get_job(str(uuid.uuid4()))
    assert isinstance(answer, JobGone)


def test_every_output_is_listed_and_can_be_read(provider_side: ProviderSide) -> None:
    provider = provider_side.provider
    snapshot = provider.get_job(provider_side.add_finished([b"first\n", b"second\n"]))
    assert isinstance(snapshot, JobSnapshot)
    artifacts = provider.artifacts(snapshot)
    assert len({a.name for a in artifacts}) == len(artifacts) == 2
    assert sorted(read(provider, a) for a in artifacts) == [b"first\n", b"second\n"]
    assert all("?" not in a.source for a in artifacts)


def test_a_deleted_job_is_gone_and_a_second_delete_finds_it_gone(
    provider_side: ProviderSide,
) -> None:
    provider = provider_side.provider
    job_id = provider_side.add_finished([b"x"])
    assert isinstance(provider.delete(job_id), Deleted)
    assert isinstance(provider.get_job(job_id), JobGone)
    assert isinstance(provider.delete(job_id), AlreadyGone)


def test_the_listing_names_each_job_with_its_phase(provider_side: ProviderSide) -> None:
    provider = provider_side.provider
    done, running = provider_side.add_finished([b"x"]), provider_side.add_running()
    listed = {job.job_id: job for page in provider.list_jobs() for job in page}
    assert listed[done].phase == Phase.SUCCEEDED
    assert listed[running].phase != Phase.SUCCEEDED
