"""A job's lifecycle through ``process_job``, on the fakes: each branch in milliseconds.

The archive, the ledger and the provider are the in-memory fakes of ``tests/fakes.py``,
which pass the same contracts as the real ones (``test_ports.py``); the decisions, the steps
and the delete gate are the real code. What only the real parts can show (HTTP faults and
retries, S3 servers, PostgreSQL, Redis, Celery) stays in tests/e2e, tests/archive and
tests/providers.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

import pytest
import structlog

from tests.fakes import FakeProvider, Fakes, fake_runtime
from worker import delete
from worker.domain import MAX_BACKOFF, JobState
from worker.errors import (
    ArchiveError,
    BadResponse,
    DeleteIncomplete,
    ProviderUnavailable,
    RateLimited,
    WorkerError,
)
from worker.job import process_job
from worker.outcomes import JobResult, Outcome

PREFIX = "archive/fake/"


@pytest.fixture
def fakes() -> Fakes:
    return fake_runtime()


def attempt(f: Fakes, job_id: str, **kw: Any) -> tuple[JobResult, list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        result = process_job(f.rt, "fake", job_id, **kw)
    return result, logs


def again(f: Fakes, job_id: str) -> JobResult:
    """A later attempt, once the job's backoff has passed."""
    f.ledger.jobs.set("fake", job_id, next_attempt_at=None)
    return process_job(f.rt, "fake", job_id)


def state(f: Fakes, job_id: str) -> JobState | None:
    row = f.ledger.query.get("fake", job_id)
    return None if row is None else row.state


def assert_deferred_with(
    f: Fakes, job_id: str, result: JobResult, logs: list[MutableMapping[str, Any]], words: str
) -> None:
    """Deferred, saying why in the result, the ledger and the log; nothing deleted."""
    assert result.outcome == Outcome.DEFERRED, result.error
    assert words in (result.error or ""), result.error
    row = f.ledger.query.get("fake", job_id)
    assert row is not None
    assert row.state in (JobState.PENDING, JobState.ARCHIVED)
    assert words in (row.last_error or "")
    assert row.next_attempt_at is not None
    assert row.next_attempt_at > f.rt.clock()
    finished = [e for e in logs if e["event"] == "job_finished"]
    assert finished[-1]["outcome"] == "deferred"
    assert words in finished[-1]["error"]
    assert f.provider.delete_requests == []


# -- the whole way -----------------------------------------------------------------------------


def test_a_finished_job_is_archived_verified_and_deleted_once_with_a_receipt(
    fakes: Fakes,
) -> None:
    # given: a finished job with two files, and a check at the provider that nothing is
    # deleted before its manifest lists every file
    files = {"a.txt": b"first\n", "b.json": b'{"b": 2}\n'}
    job_id = fakes.provider.add_job(files=files)
    folder = f"{PREFIX}{job_id}/"

    def manifest_first(deleted: str) -> None:
        manifest = fakes.archive.get_json(folder + "manifest.json")
        assert manifest is not None, "a delete before the manifest"
        assert {f["key"] for f in manifest["files"]} == {folder + n for n in files}

    fakes.provider.on_delete = manifest_first

    # when
    result = process_job(fakes.rt, "fake", job_id)

    # then: every file byte-identical, the manifest and the receipt written, one delete
    assert result.outcome == Outcome.DELETED, result.error
    assert (result.archived, result.deleted, result.files) == (True, True, 2)
    for name, body in files.items():
        assert fakes.archive.read(folder + name) == body
    receipt = json.loads(fakes.archive.read(folder + "deletion.json"))
    assert (receipt["job_id"], receipt["provider_answer"]["result"]) == (job_id, "deleted")
    assert fakes.provider.deletes_of(job_id) == 1
    assert state(fakes, job_id) == JobState.DELETED
    events = [e["event"] for e in fakes.ledger.query.audit_trail("fake", job_id)]
    assert events == ["archived", "delete_requested", "provider_deleted", "deleted"]


def test_a_job_done_with_is_not_touched_again(fakes: Fakes) -> None:
    job_id = fakes.provider.add_job()
    assert process_job(fakes.rt, "fake", job_id).outcome == Outcome.DELETED
    reads = len(fakes.provider.reads)
    assert process_job(fakes.rt, "fake", job_id).outcome == Outcome.DONE
    assert len(fakes.provider.reads) == reads


def test_a_running_job_is_read_and_left_alone(fakes: Fakes) -> None:
    job_id = fakes.provider.add_job("running")
    result = process_job(fakes.rt, "fake", job_id)
    assert result.outcome == Outcome.NOT_TERMINAL
    assert fakes.archive.keys() == []
    assert fakes.provider.delete_requests == []
    assert state(fakes, job_id) == JobState.PENDING


def test_a_job_not_due_yet_is_left_at_the_provider() -> None:
    f = fake_runtime(retain_days=3)
    job_id = f.provider.add_job()
    assert process_job(f.rt, "fake", job_id).outcome == Outcome.NOT_DUE
    assert f.archive.keys() == []
    assert f.provider.delete_requests == []


def test_a_job_the_provider_no_longer_has_is_closed_as_gone(fakes: Fakes) -> None:
    result = process_job(fakes.rt, "fake", "never-there")
    assert result.outcome == Outcome.GONE
    assert state(fakes, "never-there") == JobState.GONE
    assert fakes.provider.delete_requests == []


def test_a_held_job_is_neither_archived_nor_deleted(fakes: Fakes) -> None:
    job_id = fakes.provider.add_job()
    fakes.ledger.jobs.add("fake", job_id, now=fakes.rt.clock(), held=True)
    assert process_job(fakes.rt, "fake", job_id).outcome == Outcome.HELD
    assert fakes.provider.delete_requests == []


def test_a_read_only_provider_is_archived_and_never_deleted() -> None:
    f = fake_runtime(read_only=True)
    job_id = f.provider.add_job()
    result = process_job(f.rt, "fake", job_id)
    assert result.outcome == Outcome.ARCHIVED
    assert f.archive.keys(f"{PREFIX}{job_id}/") != []
    assert f.provider.delete_requests == []
    assert state(f, job_id) == JobState.ARCHIVED


def test_a_job_another_worker_holds_is_busy(fakes: Fakes) -> None:
    job_id = fakes.provider.add_job()
    later = fakes.rt.clock() + timedelta(seconds=30)
    fakes.ledger.jobs.add("fake", job_id, now=fakes.rt.clock())
    fakes.ledger.jobs.set("fake", job_id, lease_owner="elsewhere", lease_expires_at=later)
    assert process_job(fakes.rt, "fake", job_id).outcome == Outcome.BUSY
    assert fakes.provider.reads == []


# -- kept, failed and deferred -------------------------------------------------------------------


def test_an_output_the_worker_does_not_recognise_keeps_the_job_with_nothing_stored(
    fakes: Fakes,
) -> None:
    job_id = fakes.provider.add_job(kept="a field named `recording.Key`")
    result = process_job(fakes.rt, "fake", job_id)
    assert result.outcome == Outcome.KEPT
    assert result.kept_reason == "unrecognised_output"
    assert "recording.Key" in (result.error or "")
    assert fakes.archive.keys() == []
    assert fakes.provider.delete_requests == []
    row = fakes.ledger.query.get("fake", job_id)
    assert row is not None
    assert (row.state, row.kept_reason) == (JobState.KEPT, "unrecognised_output")


# Moved from tests/e2e/test_faults.py: the provider's answers that the adapters turn into
# these errors are each proven there and in tests/providers (over HTTP); what the pipeline
# does with the error is the same whatever answer it came from.
PROVIDER_ERRORS = [
    pytest.param(RateLimited("daily answered 429", retry_after=None), "429", id="429-backoff"),
    pytest.param(
        RateLimited("daily answered 429 (X-RateLimit-Reset)", retry_after=3600.0),
        "429",
        id="429-ratelimit-reset",
    ),
    pytest.param(
        ProviderUnavailable("RemoteProtocolError: peer closed connection"),
        "RemoteProtocolError",
        id="truncated-json",
    ),
    pytest.param(
        BadResponse("the answer is not valid JSON"), "not valid JSON", id="malformed-json"
    ),
    pytest.param(
        BadResponse("the job record has no str field 'status'"),
        "no str field 'status'",
        id="missing-field",
    ),
]


@pytest.mark.parametrize(("error", "words"), PROVIDER_ERRORS)
def test_a_provider_error_defers_the_job_and_deletes_nothing(
    fakes: Fakes, error: WorkerError, words: str
) -> None:
    # given: a due job, and an error from the provider when it is read
    job_id = fakes.provider.add_job()
    fakes.provider.fail("get_job", error)

    # when
    result, logs = attempt(fakes, job_id)

    # then: deferred, recorded, nothing deleted; a long wait asked for is honoured
    assert_deferred_with(fakes, job_id, result, logs, words)
    if isinstance(error, RateLimited) and error.retry_after:
        row = fakes.ledger.query.get("fake", job_id)
        assert row is not None
        assert row.next_attempt_at is not None
        assert row.next_attempt_at >= fakes.rt.clock() + timedelta(minutes=59)

    # and once the fault is gone, a later attempt succeeds
    assert again(fakes, job_id).outcome == Outcome.DELETED
    assert fakes.provider.deletes_of(job_id) == 1


def test_a_huge_retry_after_defers_the_job_no_longer_than_the_longest_backoff(
    fakes: Fakes,
) -> None:
    job_id = fakes.provider.add_job()
    fakes.provider.fail("get_job", RateLimited("429", retry_after=1e20))
    before = fakes.rt.clock()
    assert process_job(fakes.rt, "fake", job_id).outcome == Outcome.DEFERRED
    row = fakes.ledger.query.get("fake", job_id)
    assert row is not None
    assert row.next_attempt_at is not None
    assert row.next_attempt_at <= before + MAX_BACKOFF + timedelta(seconds=5)


@pytest.mark.parametrize("operation", ["store_stream", "put_json"])
def test_an_archive_error_defers_the_job_and_deletes_nothing(fakes: Fakes, operation: str) -> None:
    job_id = fakes.provider.add_job(files={"a.txt": b"a", "b.txt": b"b"})
    fakes.archive.fail(operation, ArchiveError("S3 answered InternalError"))
    result, logs = attempt(fakes, job_id)
    assert_deferred_with(fakes, job_id, result, logs, "InternalError")
    assert again(fakes, job_id).outcome == Outcome.DELETED


def test_a_delete_that_fails_after_the_archive_reports_what_was_archived(fakes: Fakes) -> None:
    job_id = fakes.provider.add_job(files={"a.txt": b"a", "b.txt": b"b"})
    fakes.provider.fail("delete", ProviderUnavailable("daily answered 503"))
    result, logs = attempt(fakes, job_id)
    assert result.outcome == Outcome.DEFERRED
    assert (result.archived, result.files) == (True, 2)
    assert [e for e in logs if e["event"] == "job_finished"][-1]["archived"] is True
    assert again(fakes, job_id).outcome == Outcome.DELETED


def test_a_partial_delete_stays_deleting_and_is_sent_again(fakes: Fakes) -> None:
    job_id = fakes.provider.add_job()
    fakes.provider.fail("delete", DeleteIncomplete("the transcript was not deleted"))
    result = process_job(fakes.rt, "fake", job_id)
    assert result.outcome == Outcome.DEFERRED
    assert state(fakes, job_id) == JobState.DELETING
    trail = [e["event"] for e in fakes.ledger.query.audit_trail("fake", job_id)]
    assert "delete_incomplete" in trail
    assert again(fakes, job_id).outcome == Outcome.DELETED
    assert fakes.provider.deletes_of(job_id) == 2


# -- the gate ---------------------------------------------------------------------------------


def test_an_archived_file_that_vanished_sends_the_job_back_to_be_archived() -> None:
    # given: an archived job (read-only then), one of whose files is lost from the bucket
    f = fake_runtime(read_only=True)
    job_id = f.provider.add_job(files={"a.txt": b"a", "b.txt": b"b"})
    assert process_job(f.rt, "fake", job_id).outcome == Outcome.ARCHIVED
    f.archive.lose(f"{PREFIX}{job_id}/a.txt")

    # when: the delete is due
    f = fake_runtime(same=f)
    result = process_job(f.rt, "fake", job_id)

    # then: no delete; the job is archived again on its next attempt, then deleted
    assert result.outcome == Outcome.DEFERRED
    assert "vanished" in (result.error or "")
    assert f.provider.delete_requests == []
    assert state(f, job_id) == JobState.PENDING
    assert again(f, job_id).outcome == Outcome.DELETED
    assert f.archive.read(f"{PREFIX}{job_id}/a.txt") == b"a"


def test_a_manifest_that_lists_fewer_files_than_the_ledger_keeps_the_gate_shut() -> None:
    # given: an archived job whose manifest someone replaced with one listing fewer files
    f = fake_runtime(read_only=True)
    job_id = f.provider.add_job(files={"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"})
    assert process_job(f.rt, "fake", job_id).outcome == Outcome.ARCHIVED
    key = f"{PREFIX}{job_id}/manifest.json"
    manifest = f.archive.get_json(key)
    manifest["files"] = manifest["files"][:1]
    f.archive.replace(key, json.dumps(manifest).encode())

    # when: the delete is due
    f = fake_runtime(same=f)
    result = process_job(f.rt, "fake", job_id)

    # then: nothing is deleted, and the job waits for a person
    assert f.provider.deletes_of(job_id) == 0
    assert result.outcome == Outcome.FAILED
    assert "lists 1 file(s), but the ledger verified 3" in (result.error or "")
    assert state(f, job_id) == JobState.FAILED


def test_a_spent_delete_budget_stops_the_job_archived_and_first_in_line(fakes: Fakes) -> None:
    budget = fakes.ledger.budget("sweep-1", 0)
    job_id = fakes.provider.add_job()
    result = process_job(fakes.rt, "fake", job_id, budget=budget)
    assert result.outcome == Outcome.STOPPED
    assert state(fakes, job_id) == JobState.ARCHIVED
    assert fakes.provider.delete_requests == []


def test_an_output_added_after_the_archive_is_archived_before_the_delete() -> None:
    # given: a job archived while read-only, which then lists one more output
    f = fake_runtime(read_only=True)
    job_id = f.provider.add_job(files={"a.txt": b"a"})
    assert process_job(f.rt, "fake", job_id).outcome == Outcome.ARCHIVED
    f.provider.jobs[job_id].files["late.txt"] = b"added later"

    # when: the delete is due
    f = fake_runtime(same=f)
    result = process_job(f.rt, "fake", job_id)

    # then: the new output is archived under a new manifest before the one delete
    assert result.outcome == Outcome.DELETED, result.error
    assert f.archive.read(f"{PREFIX}{job_id}/late.txt") == b"added later"
    manifests = f.archive.keys(f"{PREFIX}{job_id}/manifest")
    assert len(manifests) == 2  # the first one stays, the new one beside it
    newest = max((f.archive.get_json(key) for key in manifests), key=lambda m: m["revision"])
    assert f"{PREFIX}{job_id}/late.txt" in {entry["key"] for entry in newest["files"]}
    assert f.provider.deletes_of(job_id) == 1


def test_an_asynchronous_delete_still_running_is_deferred_and_followed_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: a provider that carries deletes out asynchronously, and no time to wait for one
    monkeypatch.setattr(delete, "ASYNC_DELETE_POLL_SECONDS", 0.0)
    provider = FakeProvider()
    provider.async_polls = 1
    f = fake_runtime(provider)
    job_id = provider.add_job()

    # when: the delete is accepted, then the job is tried again
    first = process_job(f.rt, "fake", job_id)
    row = f.ledger.query.get("fake", job_id)
    second = again(f, job_id)

    # then: the first run left it deleting with its handle; the second followed it, with no
    # second delete sent
    assert first.outcome == Outcome.DEFERRED
    assert row is not None
    assert (row.state, row.delete_handle) == (JobState.DELETING, f"handle-{job_id}")
    assert second.outcome == Outcome.DELETED, second.error
    assert provider.deletes_of(job_id) == 1
    receipt = json.loads(f.archive.read(f"{PREFIX}{job_id}/deletion.json"))
    assert receipt["provider_answer"]["result"] == "deleted"
