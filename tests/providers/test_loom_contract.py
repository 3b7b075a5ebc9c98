"""The Loom adapter against the Loom simulator, over real HTTP."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import config_data, objects, settings_of
from tests.json_at import at
from worker.bootstrap import Runtime, build_runtime
from worker.domain import (
    AlreadyGone,
    Deleted,
    JobGone,
    JobSnapshot,
    LinkOrigin,
    Phase,
)
from worker.errors import (
    BadResponse,
    DeleteIncomplete,
    DownloadError,
    Kept,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    UnsafeInput,
)
from worker.fetch import Fetcher, make_download_client
from worker.job import process_job
from worker.json_types import JSONValue
from worker.keys import archive_keys, job_folder
from worker.outcomes import Outcome
from worker.providers.loom import (
    GONE_CODE,
    LoomProvider,
    files_of,
    finished_at_of,
    read_delete,
    read_details,
    unrecognised_of,
)
from worker.providers.outputs import dotted, references
from worker.settings import DownloadSettings
from worker.simulators.blobs import Blob
from worker.simulators.contract import Call, Contract, Description, WrongKey
from worker.simulators.loom import (
    ALREADY_DELETED_MSG,
    DELETE_PARTS,
    DELETED_MSG,
    LoomSimulator,
    delete_message,
)
from worker.specs.loom import LoomSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.simulators.s3server import S3Server

KEY = "loom-test-key-3f9a1c77"
SECRET = "loom-test-secret-b81e55d2c4"

Adapter = Callable[..., LoomProvider]


@pytest.fixture
def loom_sim() -> Iterator[LoomSimulator]:
    sim = LoomSimulator(KEY, SECRET)
    sim.start()
    yield sim
    sim.stop()


@contextlib.contextmanager
def running(**options: Any) -> Iterator[LoomSimulator]:
    """A second simulator with options the default fixture does not use."""
    sim = LoomSimulator(KEY, SECRET, **options)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def adapter(loom_sim: LoomSimulator) -> Iterator[Adapter]:
    """Builds adapters for the simulator (settings overridable) and closes them afterwards."""
    built: list[LoomProvider] = []

    def build(**extra: Any) -> LoomProvider:
        data = {
            "type": "loom",
            "base_url": loom_sim.base_url,
            "key": KEY,
            "secret": SECRET,
            **extra,
        }
        provider = LoomProvider.build("loom", LoomSettings.model_validate(data))
        built.append(provider)
        return provider

    yield build
    for provider in built:
        provider.close()


@pytest.fixture(scope="module")
def fetcher() -> Iterator[Fetcher]:
    download_settings = DownloadSettings(allow_private_networks=True)
    client = make_download_client(download_settings)
    yield Fetcher(client, download_settings)
    client.close()


def snapshot(provider: LoomProvider, ref: str) -> JobSnapshot:
    snap = provider.get_job(ref)
    assert isinstance(snap, JobSnapshot)
    return snap


def download(fetcher: Fetcher, origin: object, size: int | None = None) -> bytes:
    assert isinstance(origin, LinkOrigin)
    with fetcher.open(origin.url, expected_size=size) as body:
        return b"".join(body.chunks())


# -- the contract every adapter keeps (worker/simulators/contract.py) ----------------------


def _job_saying(sim: LoomSimulator, word: str) -> str:
    # Loom's status word is the prefix of its message; outputs present, so only the word
    # stands between the job and "succeeded".
    return sim.add_job("completed", msg=f"{word}: Job is on hold.", transcripts=[("t", b"t")])


class TestLoomContract(Contract):
    description = Description[LoomSimulator](
        name="loom",
        simulator=lambda: LoomSimulator(KEY, SECRET),
        settings=lambda sim: sim.provider_table(),
        secrets=(KEY, SECRET),
        wrong_keys=(
            WrongKey(
                "wrong key",
                {"key": "wrong-key-0042"},
                says=("401: ERROR: User not authorized", "credentials"),
            ),
            WrongKey(
                "wrong secret",
                {"secret": "wrong-secret-0042"},
                says=("401: ERROR: User not authorized", "credentials"),
            ),
        ),
        add_finished_job=lambda sim: sim.add_job(
            "completed", inputs=[("a.mp3", "audio", b"abc")], transcripts=[("t.txt", b"x")]
        ),
        add_job_saying=_job_saying,
        read=Call("POST", "/details$"),
        delete=Call("POST", "/delete$"),
        error_body=lambda code: {"msg": f"ERROR: {code}. "},
        bare_404_says=r"job {job} answered 404.*base_url",
        downloads="^/files/",
    )


# -- discovery -----------------------------------------------------------------------------


def test_loom_lists_nothing_so_its_jobs_come_from_tracking(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    loom_sim.add_job()
    provider = adapter()
    assert (provider.lists_jobs, provider.lookup_batch_size) == (False, 0)
    assert list(provider.list_jobs()) == []
    assert provider.lookup(["R1"]) == []
    assert loom_sim.requests == []


# -- status --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "msg", "success", "status", "phase"),
    [
        ("completed", None, None, "success", Phase.SUCCEEDED),
        ("error", None, None, "error", Phase.FAILED),
        ("in_progress", None, None, "notice", Phase.RUNNING),
        # SUCCESS while output_files is still null: not done yet.
        ("in_progress", "SUCCESS: Job completed successfully.", None, "success", Phase.RUNNING),
        # A word Loom may add later, even with outputs present: never terminal.
        ("completed", "PAUSED: Job is on hold.", None, "paused", Phase.UNKNOWN),
        ("completed", "Job completed successfully.", None, "unrecognised", Phase.UNKNOWN),
        # A success flag that contradicts the message is not trusted either way.
        ("completed", None, False, "success", Phase.UNKNOWN),
        ("error", None, True, "error", Phase.UNKNOWN),
    ],
)
def test_statuses_translate_from_the_message_and_unknown_ones_are_never_terminal(
    loom_sim: LoomSimulator,
    adapter: Adapter,
    state: str,
    msg: str | None,
    success: bool | None,
    status: str,
    phase: Phase,
) -> None:
    ref = loom_sim.add_job(
        state,
        msg=msg,
        success=success,
        inputs=[("a.mp3", "audio", b"audio")],
        transcripts=[("t.txt", b"text")],
    )
    snap = snapshot(adapter(), ref)
    assert (snap.status, snap.phase) == (status, phase)
    assert at(snap.record, "job_data", "job_info", "status") == "completed"  # the doc bug, kept


@pytest.mark.parametrize(
    ("state", "info_status", "phase"),
    [
        ("in_progress", "completed", Phase.RUNNING),
        ("completed", "in_progress", Phase.SUCCEEDED),
    ],
)
def test_job_info_status_is_ignored_whatever_literal_loom_uses(
    adapter: Adapter, state: str, info_status: str, phase: Phase
) -> None:
    with running(info_status={state: info_status}) as sim:
        ref = sim.add_job(state, transcripts=[("t.txt", b"x")])
        snap = snapshot(adapter(base_url=sim.base_url), ref)
    assert at(snap.record, "job_data", "job_info", "status") == info_status
    assert snap.phase == phase


@pytest.mark.parametrize(
    ("completed_at", "expected"),
    [
        ("2024-05-01 12:30:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("submission timestamp", None),
        (None, None),
    ],
)
def test_the_retention_clock_starts_at_completed_at_when_it_parses(
    loom_sim: LoomSimulator, adapter: Adapter, completed_at: str | None, expected: datetime | None
) -> None:
    ref = loom_sim.add_job("completed", completed_at=completed_at, transcripts=[("t", b"x")])
    assert snapshot(adapter(), ref).finished_at == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01 12:30:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T12:30:00Z", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T14:30:00+02:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T07:30:00-0500", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T12:30:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T12:30:00.250000Z", datetime(2024, 5, 1, 12, 30, 0, 250000, tzinfo=UTC)),
        ("2024-05-01T12:30:00.123456789Z", datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=UTC)),
        (" 2024-05-01 12:30:00 ", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("submission timestamp", None),
        ("2024-05-01", None),  # a bare date could start the clock up to a day early
        ("2024-13-01 12:30:00", None),
        ("01/05/2024 12:30", None),
        ("", None),
        (12, None),
        (1714566600.0, None),
        (["2024-05-01 12:30:00"], None),
        ({"at": 1}, None),
    ],
)
def test_completed_at_is_read_as_iso_8601_or_loom_s_plain_form_and_nothing_else(
    value: JSONValue, expected: datetime | None
) -> None:
    assert finished_at_of(value) == expected


def test_a_running_job_has_no_finish_time_even_if_completed_at_is_filled(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job("in_progress", completed_at="2024-05-01 12:30:00")
    assert snapshot(adapter(), ref).finished_at is None


def test_a_failed_job_is_timed_from_completed_at_too(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job("error", completed_at="2024-05-01T12:30:00Z")
    snap = snapshot(adapter(), ref)
    assert (snap.phase, snap.finished_at) == (
        Phase.FAILED,
        datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    )


def test_a_failed_job_answered_with_a_400_is_still_read_as_failed(adapter: Adapter) -> None:
    with running(failed_status=400) as sim:
        ref = sim.add_job("error", inputs=[("a.mp3", "audio", b"abc")])
        assert snapshot(adapter(base_url=sim.base_url), ref).phase == Phase.FAILED


def test_lookups_go_through_the_jobs_url_with_credentials_only_in_the_body(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    # given a job, when the adapter reads it, checks its credentials and deletes the job
    ref = loom_sim.add_job(transcripts=[("t.txt", b"x")])
    provider = adapter()
    provider.get_job(ref)
    provider.check_credentials()
    provider.delete(ref)

    # then every call was a POST to the documented path, with the credentials in its body
    api_calls = loom_sim.seen(path="^/api/")
    assert [(s.method, s.path.split("/")[-1]) for s in api_calls] == [
        ("POST", "details"),
        ("POST", "details"),
        ("POST", "delete"),
    ]
    assert all(s.authorization for s in api_calls)
    assert loom_sim.urls_with_credentials == []


# -- gone ----------------------------------------------------------------------------------


@pytest.mark.parametrize("not_found_status", [400, 200])
def test_a_job_that_does_not_exist_is_gone_whether_loom_says_so_with_400_or_200(
    adapter: Adapter, not_found_status: int
) -> None:
    with running(not_found_status=not_found_status) as sim:
        gone = adapter(base_url=sim.base_url).get_job("R-no-such-job")
        assert isinstance(gone, JobGone)
        assert gone.answer["status_code"] == not_found_status
        assert at(gone.answer, "body", "err_code") == GONE_CODE


def test_loom_s_generic_400_is_a_refusal_not_a_gone_job(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job()
    loom_sim.inject(
        path="/details$", status=400, body={"msg": "ERROR: Unexpected error occurred. "}
    )
    with pytest.raises(ProviderRejected, match="400: ERROR: Unexpected error occurred") as caught:
        adapter().get_job(ref)
    assert caught.value.permanent


# -- artifacts -----------------------------------------------------------------------------


def test_every_file_the_delete_destroys_is_archived_byte_identical_from_fresh_links(
    loom_sim: LoomSimulator, adapter: Adapter, fetcher: Fetcher
) -> None:
    # given a completed job with media, a document, transcripts, processed media and fields
    big = Blob(3 * 1024 * 1024 + 5, seed=7)
    document = b"%PDF-1.7 supporting document"
    transcript, loi = b"final transcript\n", b"PK\x03\x04 loi"
    merged, fields = b"ID3 merged audio", b'{"claimant": "J. Doe"}'
    ref = loom_sim.add_job(
        "completed",
        inputs=[("interview.mp3", "audio", big), ("document name ", "attachment", document)],
        transcripts=[
            ("IME Doc Extraction.txt", transcript),
            ("IME Doc Extraction_LOI.docx", loi),
        ],
        processed=[("merged.mp3", merged)],
        extracted_fields=fields,
    )
    provider = adapter()
    snap = snapshot(provider, ref)
    first_read = list(loom_sim.issued_signatures)

    # when the adapter lists the artifacts and each is downloaded
    artifacts = provider.artifacts(snap)
    bodies = {a.name: download(fetcher, a.origin, a.size) for a in artifacts}

    # then every file came through a fresh details read, intact, and without credentials
    assert bodies == {
        "inputs/interview.mp3": big.read(),
        "inputs/document name ": document,
        "transcripts/IME Doc Extraction.txt": transcript,
        "transcripts/IME Doc Extraction_LOI.docx": loi,
        "processed_input_media/merged.mp3": merged,
        "extracted_fields.json": fields,
    }
    assert [a.name for a in artifacts] == list(bodies)
    assert [a.size for a in artifacts] == [big.size, 28, None, None, None, None]
    assert all("?" not in a.source and "Signature" not in a.source for a in artifacts)
    assert len(loom_sim.seen("POST", "/details$")) == 2
    fresh = loom_sim.issued_signatures[len(first_read) :]
    for artifact in artifacts:
        assert isinstance(artifact.origin, LinkOrigin)
        assert any(sig in artifact.origin.url for sig in fresh)
    names = archive_keys(job_folder("archive/", "loom", ref), [a.name for a in artifacts])
    assert names[0] == f"archive/loom/{ref}/inputs/interview.mp3"


def test_the_simulator_counts_a_stray_credential_on_a_download(loom_sim: LoomSimulator) -> None:
    # The contract's download check would be vacuous if the log could not see credentials on
    # a download, in a header or in the body.
    ref = loom_sim.add_job(inputs=[("a.mp3", "audio", b"abc")])
    url = read_details_url(loom_sim, ref)
    httpx.get(url, headers={"Authorization": "Bearer x"})
    httpx.request("GET", url, content=json.dumps({"key": KEY}))
    assert [s.authorization for s in loom_sim.seen("GET", "^/files/")] == [True, True]


def read_details_url(sim: LoomSimulator, ref: str) -> str:
    answer = httpx.post(f"{sim.base_url}/jobs/{ref}/details", json={"key": KEY, "secret": SECRET})
    url = answer.json()["job_data"]["job_files"]["input_files"][0]["download_url"]
    assert isinstance(url, str)
    return url


def test_a_completed_job_without_extracted_fields_archives_no_fields_file(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job(inputs=[("a.mp3", "audio", b"a")], transcripts=[("t.txt", b"t")])
    provider = adapter()
    names = [a.name for a in provider.artifacts(snapshot(provider, ref))]
    assert names == ["inputs/a.mp3", "transcripts/t.txt"]


def test_a_failed_job_s_inputs_are_archived_because_the_delete_destroys_them(
    loom_sim: LoomSimulator, adapter: Adapter, fetcher: Fetcher
) -> None:
    ref = loom_sim.add_job("error", inputs=[("call.wav", "audio", b"RIFF....WAVE")])
    provider = adapter()
    (artifact,) = provider.artifacts(snapshot(provider, ref))
    assert (artifact.name, artifact.size) == ("inputs/call.wav", 12)
    assert download(fetcher, artifact.origin, artifact.size) == b"RIFF....WAVE"


def test_an_input_that_does_not_match_its_file_size_is_not_accepted(
    loom_sim: LoomSimulator, adapter: Adapter, fetcher: Fetcher
) -> None:
    ref = loom_sim.add_job(inputs=[("a.mp3", "audio", b"0123456789")])
    loom_sim.declare_size(ref, "a.mp3", 4)
    provider = adapter()
    (artifact,) = provider.artifacts(snapshot(provider, ref))
    assert artifact.size == 4
    with pytest.raises(DownloadError, match="declared 4"):
        download(fetcher, artifact.origin, artifact.size)


def test_a_file_size_that_is_not_a_byte_count_is_a_bad_response(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job(inputs=[("a.mp3", "audio", b"0123456789")])
    provider = adapter()
    for declared in ("10", 10.0, None, True, -1, [10]):
        loom_sim.declare_size(ref, "a.mp3", declared)
        with pytest.raises(BadResponse, match="file_size"):
            provider.get_job(ref)


def test_expired_links_fail_and_the_next_read_hands_out_working_ones(
    adapter: Adapter, fetcher: Fetcher
) -> None:
    with running(link_ttl=0.2) as sim:
        ref = sim.add_job(transcripts=[("t.txt", b"transcript")])
        provider = adapter(base_url=sim.base_url)
        snap = snapshot(provider, ref)
        (stale,) = provider.artifacts(snap)
        time.sleep(0.3)
        with pytest.raises(DownloadError, match="403"):
            download(fetcher, stale.origin)
        (fresh,) = provider.artifacts(snap)
        assert download(fetcher, fresh.origin) == b"transcript"


def test_a_job_that_vanishes_before_the_fresh_read_defers_instead_of_going(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    # given a finished job, read once
    ref = loom_sim.add_job(transcripts=[("t.txt", b"x")])
    provider = adapter()
    snap = snapshot(provider, ref)

    # when Loom says "Job data not found" on the re-read for fresh links
    loom_sim.inject(
        path="/details$",
        status=400,
        body={"msg": "ERROR: Job data not found. ", "err_code": GONE_CODE},
    )

    # then the job is deferred, not failed and not declared gone
    with pytest.raises(ProviderError, match="fresh download links") as caught:
        provider.artifacts(snap)
    assert not caught.value.permanent
    assert not isinstance(caught.value, ProviderRejected)


def test_a_job_that_is_no_longer_finished_on_the_fresh_read_defers(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job(transcripts=[("t.txt", b"x")])
    provider = adapter()
    snap = snapshot(provider, ref)
    loom_sim.set_state(ref, "in_progress")
    with pytest.raises(ProviderError, match="no longer finished") as caught:
        provider.artifacts(snap)
    assert not caught.value.permanent


def test_a_hostile_filename_is_kept_as_given_and_refused_by_the_archive(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job(transcripts=[("../../escape.txt", b"x")])
    provider = adapter()
    artifacts = provider.artifacts(snapshot(provider, ref))
    assert [a.name for a in artifacts] == ["transcripts/../../escape.txt"]
    with pytest.raises(UnsafeInput, match=r"'\.\.' segment"):
        archive_keys(job_folder("archive/", "loom", ref), [a.name for a in artifacts])


# -- delete --------------------------------------------------------------------------------


def test_delete_removes_the_job_then_a_second_delete_is_already_gone(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    # given a job, when it is deleted twice
    ref = loom_sim.add_job(inputs=[("a.mp3", "audio", b"a")], transcripts=[("t.txt", b"t")])
    provider = adapter()
    first = provider.delete(ref)
    again = provider.delete(ref)

    # then the first answer is a delete, the second Loom's "not deleted" notice
    assert isinstance(first, Deleted)
    assert (first.status_code, at(first.body, "msg")) == (200, DELETED_MSG)
    assert isinstance(again, AlreadyGone)
    assert at(again.body, "msg") == ALREADY_DELETED_MSG
    assert loom_sim.deleted == [ref]
    assert loom_sim.deletes_of(ref) == 2
    assert isinstance(provider.get_job(ref), JobGone)


def test_the_already_deleted_answer_is_gone_only_once_loom_confirms_the_job_is_not_found(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    # given a job deleted once already
    ref = loom_sim.add_job(inputs=[("a.mp3", "audio", b"a")])
    provider = adapter()
    assert isinstance(provider.delete(ref), Deleted)
    reads_before = len(loom_sim.seen("POST", "/details$"))

    # when it is deleted again and Loom says every part was "not deleted"
    again = provider.delete(ref)

    # then the adapter read the job's details, and only their "not found" made it gone
    assert isinstance(again, AlreadyGone)
    (confirm,) = loom_sim.seen("POST", "/details$")[reads_before:]
    assert confirm.status == 400
    delete_at = loom_sim.seen("POST", "/delete$")[-1].at
    assert confirm.at >= delete_at


@pytest.mark.parametrize("not_found_status", [400, 200])
def test_deleting_an_unknown_job_is_already_gone(adapter: Adapter, not_found_status: int) -> None:
    with running(not_found_status=not_found_status) as sim:
        answer = adapter(base_url=sim.base_url).delete("R-never-existed")
        assert isinstance(answer, AlreadyGone)
        assert (answer.status_code, at(answer.body, "err_code")) == (not_found_status, GONE_CODE)
        assert sim.deleted == []


def test_a_loom_delete_that_left_some_parts_is_incomplete_not_deleted(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    # given Loom deletes the transcripts but reports an error for the audio
    # (this used to count as deleted, with a warning: a partial delete is not a delete)
    ref = loom_sim.add_job(inputs=[("a.mp3", "audio", b"a")], transcripts=[("t.txt", b"t")])
    loom_sim.fail_next_delete(ref, ["Audio file"])
    provider = adapter()

    # when the job is deleted
    with pytest.raises(DeleteIncomplete) as caught:
        provider.delete(ref)

    # then the delete is not taken as done: transient, naming what was not deleted
    assert not caught.value.permanent
    message = str(caught.value)
    assert message.startswith(f"loom job {ref}: Loom deleted only part of job {ref}")
    assert "did not delete: Audio file" in message
    assert "Finished Transcript" not in message
    assert "sent again" in message
    assert ref in loom_sim.jobs
    # and the delete sent again ends the job
    assert isinstance(provider.delete(ref), Deleted)
    assert loom_sim.deleted == [ref]


def test_a_loom_delete_that_deleted_nothing_while_the_job_is_there_is_incomplete(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    # given a delete that fails for every part: it reads like "already deleted"
    ref = loom_sim.add_job(inputs=[("a.mp3", "audio", b"a")], transcripts=[("t.txt", b"t")])
    loom_sim.fail_next_delete(ref, DELETE_PARTS)
    provider = adapter()

    # when the job is deleted
    with pytest.raises(DeleteIncomplete) as caught:
        provider.delete(ref)

    # then the details read after it still show the job, so it is not gone
    assert not caught.value.permanent
    assert "every part not deleted" in str(caught.value)
    assert "still describes the job" in str(caught.value)
    assert ref in loom_sim.jobs
    assert loom_sim.deleted == []


def test_a_partial_delete_answer_is_incomplete_as_a_pure_read() -> None:
    with pytest.raises(DeleteIncomplete, match="not delete: Formatted Transcript, Audio file"):
        read_delete("R1", 200, {"msg": delete_message(["Formatted Transcript", "Audio file"])})
    assert isinstance(read_delete("R1", 200, {"msg": delete_message(DELETE_PARTS)}), AlreadyGone)
    assert isinstance(read_delete("R1", 200, {"msg": delete_message(())}), Deleted)


def test_a_delete_loom_refuses_is_rejected_with_its_message(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job()
    loom_sim.inject(
        path="/delete$", status=200, body={"msg": "ERROR: Job is locked. ", "err_code": "ERR_X_9"}
    )
    with pytest.raises(ProviderRejected, match=r"ERROR: Job is locked \(ERR_X_9\)") as caught:
        adapter().delete(ref)
    assert caught.value.permanent
    assert loom_sim.deleted == []


def test_an_undocumented_delete_answer_is_a_bad_response(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    # given answers to a delete that Loom does not document
    ref = loom_sim.add_job()
    provider = adapter()
    bodies: list[object] = [
        {"msg": "NOTICE: The job is in progress."},
        {"msg": "Deleted."},
        {"message": "SUCCESS"},
        ["SUCCESS: deleted"],
    ]
    # when each answers a delete, then each is a (transient) bad response
    for body in bodies:
        loom_sim.inject(path="/delete$", status=200, body=json.dumps(body))
        with pytest.raises(BadResponse):
            provider.delete(ref)
    assert loom_sim.deleted == []


# -- credentials ---------------------------------------------------------------------------


def test_a_refusal_that_echoes_a_credential_is_blanked_from_the_error() -> None:
    echo: JSONValue = {
        "msg": f"ERROR: secret {SECRET} is not allowed to delete. ",
        "err_code": "E_1",
    }
    for status in (200, 400):
        with pytest.raises(ProviderRejected) as caught:
            read_delete("R1", status, echo, secrets=(KEY, SECRET))
        assert SECRET not in str(caught.value)
    with pytest.raises(BadResponse) as bad:
        read_details("R1", 200, {"msg": f"ERROR: key {KEY}"}, secrets=(KEY, SECRET))
    assert KEY not in str(bad.value)


def test_good_credentials_pass_the_check_without_touching_any_job(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job()
    adapter().check_credentials()
    (seen,) = loom_sim.requests
    assert (seen.method, seen.status) == ("POST", 400)
    assert ref not in seen.path
    assert loom_sim.deleted == []


def test_an_echoed_credential_is_blanked_from_the_error(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    loom_sim.inject(path="/details$", status=401, body={"msg": f"ERROR: bad key {KEY}"})
    with pytest.raises(ProviderRejected) as caught:
        adapter().check_credentials()
    assert KEY not in str(caught.value)
    assert "[redacted]" in str(caught.value)


def test_the_simulator_refuses_calls_without_both_credentials(loom_sim: LoomSimulator) -> None:
    # given a job, when each endpoint is called with missing or partial credentials
    ref = loom_sim.add_job()
    bodies: list[object] = [None, {}, {"key": KEY}, {"secret": SECRET}, {"key": KEY, "secret": 5}]
    # then each answers 401 "User not authorized" (400 for a body that is not JSON)
    with httpx.Client(base_url=loom_sim.base_url) as client:
        for body in bodies:
            for action in ("details", "poll", "delete"):
                content = b"" if body is None else json.dumps(body).encode()
                answer = client.post(f"/jobs/{ref}/{action}", content=content)
                assert answer.status_code == 401
                assert answer.json() == {"msg": "ERROR: User not authorized. "}
        assert client.post(f"/jobs/{ref}/details", content=b"{not json").status_code == 400
    assert loom_sim.deleted == []
    assert ref in loom_sim.jobs


def test_the_simulator_polls_like_loom(loom_sim: LoomSimulator) -> None:
    # given a finished and a running job, when each is polled, then the answers are Loom's
    done = loom_sim.add_job(transcripts=[("t.txt", b"t")], processed=[("m.mp3", b"m")])
    in_progress = loom_sim.add_job("in_progress")
    creds = {"key": KEY, "secret": SECRET}
    with httpx.Client(base_url=loom_sim.base_url) as client:
        answer = client.post(f"/jobs/{done}/poll", json=creds).json()
        assert answer["msg"] == "SUCCESS: Job completed. "
        assert (len(answer["transcript_url"]), len(answer["media_files"])) == (1, 1)
        answer = client.post(f"/jobs/{in_progress}/poll", json=creds).json()
        assert answer["msg"].startswith("NOTICE:")
        answer = client.post("/jobs/R-none/poll", json=creds).json()
        assert answer["err_code"] == GONE_CODE


# -- transient failures --------------------------------------------------------------------


def test_the_simulator_s_own_rate_limit_answers_429(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    loom_sim.rate_limit = (1, 60.0)
    provider = adapter()
    provider.api.attempts = 1
    provider.check_credentials()
    with pytest.raises(RateLimited, match=r"\(429\): ERROR: Too many requests"):
        provider.check_credentials()


def test_a_slow_answer_within_the_timeout_is_waited_for(adapter: Adapter) -> None:
    with running(latency=0.3) as sim:
        ref = sim.add_job()
        started = time.monotonic()
        assert isinstance(adapter(base_url=sim.base_url).get_job(ref), JobSnapshot)
        assert time.monotonic() - started >= 0.3
        slow = adapter(base_url=sim.base_url, timeout=0.1)
        slow.api.attempts = 1
        with pytest.raises(ProviderUnavailable, match="timed out"):
            slow.get_job(ref)


# -- malformed answers ---------------------------------------------------------------------


def test_malformed_answers_are_bad_responses(loom_sim: LoomSimulator, adapter: Adapter) -> None:
    # given answers to a details call that are not what Loom documents
    ref = loom_sim.add_job()
    provider = adapter()
    answers: list[tuple[object, str]] = [
        ({"success": True}, "'msg'"),
        ({"success": "yes", "msg": "SUCCESS: ok", "job_data": {}}, "non-boolean"),
        ({"success": True, "msg": "SUCCESS: ok"}, "no job_data"),
        ({"success": True, "msg": "SUCCESS: ok", "job_data": {"job_info": {}}}, "job_reference_id"),
    ]
    # when each answers a read, then each is a bad response naming what is wrong
    for body, match in answers:
        payload = body if isinstance(body, str) else json.dumps(body)
        loom_sim.inject(path="/details$", status=200, body=payload)
        with pytest.raises(BadResponse, match=match):
            provider.get_job(ref)


def details(ref: str = "R1", **files: Any) -> dict[str, Any]:
    job_files: dict[str, Any] = {"input_files": [], "output_files": None, **files}
    return {
        "success": True,
        "msg": "SUCCESS: Job completed successfully.",
        "job_data": {"job_info": {"job_reference_id": ref}, "job_files": job_files},
    }


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (details("R2"), "Loom answered with job R2"),
        (details(input_files=None), "input_files"),
        (details(input_files=[{"filename": "a", "file_size": 1}]), "download_url"),
        (details(input_files=[{"filename": "", "file_size": 1, "download_url": "u"}]), "empty"),
        (details(output_files=[]), "neither null nor an object"),
        (details(output_files={"transcripts": {"filename": "t"}}), "transcripts"),
        (details(output_files={"transcripts": [{"filename": "t", "download_url": ""}]}), "empty"),
        (details(output_files={"processed_input_media": [{"download_url": "u"}]}), "filename"),
        (details(output_files={"extracted_fields_url": 5}), "extracted_fields_url"),
    ],
)
def test_a_malformed_file_list_is_a_bad_response_before_anything_is_decided(
    record: dict[str, Any], match: str
) -> None:
    with pytest.raises(BadResponse, match=match):
        read_details("R1", 200, record)


# -- the whole record: what the delete would destroy must be known ------------------------


def test_an_output_files_key_loom_does_not_document_keeps_the_job(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    # given a completed job whose output_files gains a "captions" list
    ref = loom_sim.add_job(
        transcripts=[("t.txt", b"t")],
        extra_outputs={"captions": [("a.vtt", b"WEBVTT"), ("b.vtt", b"WEBVTT")]},
    )
    provider = adapter()

    # when its outputs are asked for
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, ref))

    # then it is kept, naming both captions by path, and no signed link
    assert caught.value.reason == "unrecognised_output"
    message = str(caught.value)
    assert message.startswith(f"loom job {ref}: unrecognised outputs ")
    assert "`job_data.job_files.output_files.captions[1].download_url`" in message
    assert '"captions" to ignore_outputs' in message
    assert not any(sig in message for sig in loom_sim.issued_signatures)
    assert loom_sim.deleted == []


def test_an_output_files_key_named_in_ignore_outputs_is_not_archived_nor_a_reason_to_keep(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job(
        transcripts=[("t.txt", b"t")], extra_outputs={"captions": [("a.vtt", b"WEBVTT")]}
    )
    provider = adapter(ignore_outputs=["captions"])
    artifacts = provider.artifacts(snapshot(provider, ref))
    assert [a.name for a in artifacts] == ["transcripts/t.txt"]


def test_a_documented_section_named_in_ignore_outputs_is_not_archived(
    loom_sim: LoomSimulator, adapter: Adapter
) -> None:
    ref = loom_sim.add_job(
        inputs=[("a.mp3", "audio", b"a")],
        transcripts=[("t.txt", b"t")],
        processed=[("m.mp3", b"m")],
    )
    provider = adapter(ignore_outputs=["processed_input_media"])
    artifacts = provider.artifacts(snapshot(provider, ref))
    assert [a.name for a in artifacts] == ["inputs/a.mp3", "transcripts/t.txt"]


@pytest.mark.parametrize(
    ("record", "paths"),
    [
        # an undocumented key without a link is still an output nobody archived
        (
            details(output_files={"captions": [{"filename": "a.vtt"}]}),
            ["job_data.job_files.output_files.captions"],
        ),
        (
            details(output_files={"summary": {"text": "no file"}}),
            ["job_data.job_files.output_files.summary"],
        ),
        # a second link in a documented item
        (
            details(
                output_files={
                    "transcripts": [
                        {"filename": "t.txt", "download_url": "u", "docx_url": "https://d/x"}
                    ]
                }
            ),
            ["job_data.job_files.output_files.transcripts[0].docx_url"],
        ),
        # a link outside job_files, and a job_files list Loom does not document
        (
            details(
                attachments=[{"filename": "x.pdf", "download_url": "https://d/x"}],
            )
            | {"audio_url": "https://loom.example/a.mp3"},
            ["job_data.job_files.attachments[0].download_url", "audio_url"],
        ),
    ],
)
def test_every_file_reference_loom_does_not_document_is_unrecognised(
    record: dict[str, Any], paths: list[str]
) -> None:
    assert [dotted(p) for p in unrecognised_of(record)] == paths


def test_empty_or_null_undocumented_keys_are_not_outputs() -> None:
    record = details(output_files={"captions": [], "summary": None, "transcripts": []})
    assert unrecognised_of(record) == []


# -- through the pipeline ------------------------------------------------------------------


def loom_runtime(sim: LoomSimulator, bucket: str, s3_server: S3Server, tmp_path: Path) -> Runtime:
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=f"sqlite:///{tmp_path}/ledger.db",
        providers={"loom": sim.provider_table()},
    )
    return build_runtime(settings_of(data))


def test_a_tracked_loom_job_is_archived_verified_then_deleted_once(
    loom_sim: LoomSimulator, bucket: str, s3: S3Client, s3_server: S3Server, tmp_path: Path
) -> None:
    # given a tracked, completed job and a worker configured for Loom
    ref = loom_sim.add_job(
        inputs=[("call.mp3", "audio", b"ID3 call audio")],
        transcripts=[("General Transcription.txt", b"hello\n")],
        extracted_fields=b'{"a": 1}',
    )
    rt = loom_runtime(loom_sim, bucket, s3_server, tmp_path)
    try:
        rt.ledger.operator.track("loom", [ref], now=rt.clock())

        # when the job is processed
        result = process_job(rt, "loom", ref)

        # then every file is in the bucket, the manifest holds no secret, and one delete went
        assert (result.outcome, result.error) == (Outcome.DELETED, None)
    finally:
        rt.close()
    stored = objects(s3, bucket, f"archive/loom/{ref}/")
    folder = f"archive/loom/{ref}/"
    assert stored[folder + "inputs/call.mp3"] == b"ID3 call audio"
    assert stored[folder + "transcripts/General Transcription.txt"] == b"hello\n"
    assert stored[folder + "extracted_fields.json"] == b'{"a": 1}'
    manifest = stored[folder + "manifest.json"].decode()
    assert all(sig not in manifest for sig in loom_sim.issued_signatures)
    assert KEY not in manifest
    assert SECRET not in manifest
    assert loom_sim.deleted == [ref]
    assert loom_sim.deletes_of(ref) == 1
    last_download = max(s.at for s in loom_sim.seen("GET", "^/files/"))
    (delete,) = loom_sim.seen("POST", "/delete$")
    assert delete.at >= last_download


def test_a_loom_job_whose_download_breaks_is_never_deleted(
    loom_sim: LoomSimulator, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    # given a tracked job whose audio download breaks off half way
    ref = loom_sim.add_job(
        inputs=[("call.mp3", "audio", b"0123456789" * 100)], transcripts=[("t.txt", b"t")]
    )
    loom_sim.inject("truncate", path="^/files/.*call.mp3")
    rt = loom_runtime(loom_sim, bucket, s3_server, tmp_path)
    try:
        rt.ledger.operator.track("loom", [ref], now=rt.clock())

        # when the job is processed
        result = process_job(rt, "loom", ref)
    finally:
        rt.close()

    # then it waits for another try, and Loom was never asked to delete it
    assert result.outcome == Outcome.DEFERRED
    assert loom_sim.deletes_of(ref) == 0
    assert loom_sim.deleted == []


# -- any shape -----------------------------------------------------------------------------

_junk = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**12)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
)


def _mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, valid, _junk)


_messages = st.sampled_from(
    [
        "SUCCESS: Job completed successfully.",
        "NOTICE: Job is currently being processed.",
        "ERROR: Job processing failed.",
        DELETED_MSG,
        ALREADY_DELETED_MSG,
        "SUCCESS: NOTICE: Unexpected error during delete.\nAudio file not deleted. Docs deleted.",
        "PAUSED: later",
    ]
) | st.text(max_size=30)
_file = st.fixed_dictionaries(
    {
        "filename": _mostly(st.text(min_size=1, max_size=10)),
        "file_size": _mostly(st.integers(0, 10**9)),
        "download_url": _mostly(st.just("http://127.0.0.1:1/files/x?X-Amz-Signature=1")),
    }
)
_outputs = st.fixed_dictionaries(
    {},
    optional={
        "transcripts": _mostly(st.lists(_mostly(_file), max_size=2)),
        "processed_input_media": _mostly(st.lists(_mostly(_file), max_size=2)),
        "extracted_fields_url": _mostly(st.none() | st.just("http://127.0.0.1:1/f.json")),
    },
)
_structured = st.fixed_dictionaries(
    {
        "msg": _mostly(_messages),
        "job_data": _mostly(
            st.fixed_dictionaries(
                {
                    "job_info": _mostly(
                        st.fixed_dictionaries(
                            {
                                "job_reference_id": _mostly(st.just("R1")),
                                "completed_at": _mostly(
                                    st.sampled_from(["2024-05-01 12:30:00", "2024-05-01Z"])
                                ),
                            }
                        )
                    ),
                    "job_files": _mostly(
                        st.fixed_dictionaries(
                            {
                                "input_files": _mostly(st.lists(_mostly(_file), max_size=3)),
                                "output_files": st.none() | _mostly(_outputs),
                            }
                        )
                    ),
                }
            )
        ),
    },
    optional={"success": _mostly(st.booleans()), "err_code": _mostly(st.just(GONE_CODE))},
)
_shapeless = st.recursive(
    _junk,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["msg", "success", "err_code", "job_data", "job_info", "job_files"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(record=st.one_of(_structured, _shapeless), status=st.sampled_from([200, 400]))
def test_any_record_either_parses_or_is_a_bad_response(record: JSONValue, status: int) -> None:
    # given any answer shape, when it is read as details, then it parses or is BadResponse
    try:
        read = read_details("R1", status, record)
    except BadResponse:
        pass
    else:
        if isinstance(read, JobSnapshot):
            for file in files_of(read.record):
                assert file.name.split("/")[0] in (
                    "inputs",
                    "transcripts",
                    "processed_input_media",
                    "extracted_fields.json",
                )
                assert isinstance(file.url, str)
                assert file.size is None or file.size >= 0
            if read.finished_at is not None:
                assert read.terminal
                assert read.finished_at.tzinfo is not None
            # and a record the walk accepts has no reference the files do not account for
            if not unrecognised_of(read.record):
                claimed = {file.path for file in files_of(read.record)}
                assert {path for path, _value in references(read.record)} <= claimed
    # and as a delete answer, it parses, is a BadResponse, is Loom refusing the delete, or
    # is a partial delete
    with contextlib.suppress(BadResponse, ProviderRejected, DeleteIncomplete):
        read_delete("R1", status, record)
