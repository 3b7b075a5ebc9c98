"""The Daily adapter against the Daily simulator, over real HTTP."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.json_at import at
from worker.domain import (
    AlreadyGone,
    BucketOrigin,
    Deleted,
    JobGone,
    JobSnapshot,
    LinkOrigin,
    Phase,
)
from worker.errors import (
    BadResponse,
    DeleteIncomplete,
    Kept,
    ProviderRejected,
)
from worker.fetch import Fetcher, make_download_client
from worker.json_types import JSONValue
from worker.providers.base import RateLimiter
from worker.providers.daily import (
    KNOWN_SECTIONS,
    DailyProvider,
    outputs_of,
    phase_of,
    unrecognised_of,
)
from worker.providers.outputs import references, within
from worker.settings import DownloadSettings
from worker.simulators.contract import Call, Contract, Description, WrongKey
from worker.simulators.daily import DailySimulator, OutputAs, UnknownRoute
from worker.specs.daily import DailySettings


def adapter(sim: DailySimulator, **extra: object) -> DailyProvider:
    settings = DailySettings.model_validate(sim.provider_table(**extra))
    return DailyProvider.build("daily", settings)


def snapshot(provider: DailyProvider, job_id: str) -> JobSnapshot:
    snap = provider.get_job(job_id)
    assert isinstance(snap, JobSnapshot)
    return snap


# -- the contract every adapter keeps (worker/simulators/contract.py) ----------------------

CONTRACT_KEY = "daily-contract-key-8c41d2e7"


class TestDailyContract(Contract):
    description = Description[DailySimulator](
        name="daily",
        simulator=lambda: DailySimulator(CONTRACT_KEY),
        settings=lambda sim: sim.provider_table(),
        secrets=(CONTRACT_KEY,),
        wrong_keys=(
            WrongKey(
                "wrong key",
                {"api_key": "wrong-key-123456"},
                says=("401: authentication-error", "credentials"),
            ),
        ),
        add_finished_job=lambda sim: sim.add_job(
            "finished", transcription=[("txt", b"hello")], summary=("txt", b"sum")
        ),
        add_job_saying=lambda sim, word: sim.add_job(word, transcription=[("txt", b"x")]),
        read=Call("GET", "^/v1/batch-processor/[^/]+$"),
        delete=Call("DELETE", "^/v1/batch-processor/[^/]+$"),
        error_body=lambda code: {"error": code, "info": "simulated"},
        bare_404_says=r"^daily job {job}: .*not Daily's.*base_url",
        # Kong's answer for a route it does not know: JSON, but not Daily's shape.
        bare_404_bodies=({"message": "no Route matched with those values"},),
        downloads="^/files/",
    )


def test_the_listing_walks_every_page_newest_first(daily_sim: DailySimulator) -> None:
    ids = [
        daily_sim.add_job(status)
        for status in ("finished", "error", "processing", "submitted", "paused")
    ]
    pages = list(adapter(daily_sim, page_size=2).list_jobs())
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [job for page in pages for job in page]
    assert [j.job_id for j in listed] == list(reversed(ids))
    assert [j.phase for j in listed] == [
        Phase.UNKNOWN,
        Phase.RUNNING,
        Phase.RUNNING,
        Phase.FAILED,
        Phase.SUCCEEDED,
    ]
    assert all(s.authorization for s in daily_sim.seen("GET", "/v1/batch-processor$"))


def test_an_empty_account_lists_nothing(daily_sim: DailySimulator) -> None:
    assert list(adapter(daily_sim).list_jobs()) == []


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("finished", Phase.SUCCEEDED),
        ("error", Phase.FAILED),
        ("processing", Phase.RUNNING),
        ("submitted", Phase.RUNNING),
        ("archived", Phase.UNKNOWN),
        ("FINISHED", Phase.SUCCEEDED),
    ],
)
def test_statuses_translate_and_unknown_ones_stay_unknown(
    daily_sim: DailySimulator, status: str, phase: Phase
) -> None:
    job_id = daily_sim.add_job(status)
    snap = snapshot(adapter(daily_sim), job_id)
    assert (snap.status, snap.phase, snap.finished_at) == (status, phase, None)


def test_a_job_that_does_not_exist_is_gone(daily_sim: DailySimulator) -> None:
    assert isinstance(adapter(daily_sim).get_job("no-such-job"), JobGone)


def test_outputs_in_dailys_bucket_come_with_fresh_working_links(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job(
        transcription=[("json", b'{"t": 1}'), ("txt", b"hello")], summary=("txt", b"sum")
    )
    provider = adapter(daily_sim)
    artifacts = provider.artifacts(snapshot(provider, job_id))
    assert [a.name for a in artifacts] == [
        f"acme/{job_id}/transcript/out-0.json",
        f"acme/{job_id}/transcript/out-1.txt",
        f"acme/{job_id}/summary/summary.txt",
    ]
    assert all(isinstance(a.origin, LinkOrigin) for a in artifacts)
    assert all("?" not in a.source for a in artifacts)
    settings = DownloadSettings(allow_private_networks=True)
    fetcher = Fetcher(make_download_client(settings), settings)
    bodies = []
    for artifact in artifacts:
        assert isinstance(artifact.origin, LinkOrigin)
        with fetcher.open(artifact.origin.url) as download:
            bodies.append(b"".join(download.chunks()))
    assert bodies == [b'{"t": 1}', b"hello", b"sum"]
    assert not any(s.authorization for s in daily_sim.seen("GET", "^/files/"))


@pytest.mark.parametrize("links_for_custom", [False, True])
def test_outputs_in_a_custom_bucket_are_read_from_the_bucket(
    daily_sim: DailySimulator, custom_bucket: str, links_for_custom: bool
) -> None:
    daily_sim.links_for_custom_buckets = links_for_custom
    job_id = daily_sim.add_job(transcription=[("txt", b"mine")], bucket=custom_bucket)
    provider = adapter(daily_sim, custom_buckets=[custom_bucket])
    (artifact,) = provider.artifacts(snapshot(provider, job_id))
    assert artifact.origin == BucketOrigin(
        custom_bucket, f"acme/{job_id}/transcript/out-0.txt", "us-west-2"
    )
    assert daily_sim.seen("GET", "access-link") == []


def test_an_errored_job_with_outputs_at_daily_is_refused_not_guessed(
    daily_sim: DailySimulator,
) -> None:
    job_id = daily_sim.add_job("error", transcription=[("txt", b"partial")])
    provider = adapter(daily_sim)
    with pytest.raises(ProviderRejected, match=r"refuses download links.*by hand"):
        provider.artifacts(snapshot(provider, job_id))


@pytest.mark.parametrize("output_as", ["object", "null", "absent"])
def test_an_errored_job_without_outputs_has_nothing_to_archive(
    daily_sim: DailySimulator, output_as: OutputAs
) -> None:
    job_id = daily_sim.add_job("error", error="Error: Failed to transcribe", output_as=output_as)
    provider = adapter(daily_sim)
    assert provider.artifacts(snapshot(provider, job_id)) == []


# -- the whole record: what the delete would destroy must be known ------------------------


def test_a_daily_output_without_s3config_keeps_the_job(daily_sim: DailySimulator) -> None:
    # given a finished job whose second transcription item carries only a link
    job_id = daily_sim.add_job(
        transcription=[("txt", b"hello")], linked={"transcription": [("vtt", b"WEBVTT")]}
    )
    provider = adapter(daily_sim)

    # when its outputs are asked for
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, job_id))

    # then the job is kept, naming the item by its path, and nothing was fetched or deleted
    assert caught.value.reason == "unrecognised_output"
    assert not caught.value.permanent
    message = str(caught.value)
    assert message.startswith(f"daily job {job_id}: unrecognised output ")
    assert "`output.transcription[1]`: nothing deleted" in message
    assert "ignore_outputs" in message
    assert not any(sig in message for sig in daily_sim.issued_signatures)
    assert daily_sim.seen("GET", "access-link") == []
    assert daily_sim.deleted == []


@pytest.mark.parametrize(
    ("arrange", "path"),
    [
        ({"extra": {"recording": ("mp4", b"video")}}, "output.recording"),
        ({"linked": {"recording": [("mp4", b"video")]}}, "output.recording[0]"),
    ],
)
def test_an_output_section_daily_does_not_document_keeps_the_job(
    daily_sim: DailySimulator, arrange: dict[str, object], path: str
) -> None:
    # given a finished job with a section Daily does not document, with or without s3Config
    job_id = daily_sim.add_job(transcription=[("txt", b"hello")], **arrange)  # type: ignore[arg-type]
    provider = adapter(daily_sim)

    # when its outputs are asked for, then it is kept, naming the section's item
    with pytest.raises(Kept, match=re.escape(f"unrecognised output `{path}`")) as caught:
        provider.artifacts(snapshot(provider, job_id))
    assert '"recording" to ignore_outputs' in str(caught.value)


def test_a_section_named_in_ignore_outputs_is_neither_archived_nor_a_reason_to_keep(
    daily_sim: DailySimulator,
) -> None:
    # given a job with a transcript and a recording the operator accepts losing
    job_id = daily_sim.add_job(
        transcription=[("txt", b"hello")],
        linked={"recording": [("mp4", b"video"), ("mp4", b"video 2")]},
        extra={"soap": ("json", b"{}")},
    )
    provider = adapter(daily_sim, ignore_outputs=["recording", "soap"])

    # when its outputs are asked for
    artifacts = provider.artifacts(snapshot(provider, job_id))

    # then only the transcript is archived
    assert [a.name for a in artifacts] == [f"acme/{job_id}/transcript/out-0.txt"]


def test_the_documented_soap_section_is_archived_like_the_others(
    daily_sim: DailySimulator,
) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"t")], extra={"soap": ("json", b"{}")})
    provider = adapter(daily_sim)
    names = [a.name for a in provider.artifacts(snapshot(provider, job_id))]
    assert names == [f"acme/{job_id}/transcript/out-0.txt", f"acme/{job_id}/transcript/soap.json"]


def test_a_link_anywhere_else_in_a_daily_record_keeps_the_job(daily_sim: DailySimulator) -> None:
    # given Daily's record of a finished job gains a top-level download link
    job_id = daily_sim.add_job(transcription=[("txt", b"hello")])
    record = daily_sim._job_json(daily_sim.jobs[job_id])
    record["recording_url"] = "https://daily.example/rec.mp4?token=secret-token-1"
    daily_sim.inject(method="GET", path=f"/{job_id}$", status=200, body=record)
    provider = adapter(daily_sim)

    # when its outputs are asked for, then the link keeps the job, without its token
    with pytest.raises(Kept, match="unrecognised output `recording_url`") as caught:
        provider.artifacts(snapshot(provider, job_id))
    assert "secret-token-1" not in str(caught.value)


def test_the_input_the_user_supplied_is_not_a_reason_to_keep(daily_sim: DailySimulator) -> None:
    # Daily's delete destroys the job and its outputs; the input URL is the user's own.
    job_id = daily_sim.add_job(transcription=[("txt", b"hello")])
    provider = adapter(daily_sim)
    snap = snapshot(provider, job_id)
    assert str(at(snap.record, "input", "uri")).startswith("https://")
    assert len(provider.artifacts(snap)) == 1


def test_a_link_beside_an_s3config_names_the_same_file(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"hello")])
    record = daily_sim._job_json(daily_sim.jobs[job_id])
    record["output"]["transcription"][0]["link"] = "https://daily.example/out-0.txt"
    daily_sim.inject(method="GET", path=f"/{job_id}$", status=200, body=record)
    provider = adapter(daily_sim)
    assert len(provider.artifacts(snapshot(provider, job_id))) == 1


def test_an_access_link_answer_naming_a_section_the_record_does_not_keeps_the_job(
    daily_sim: DailySimulator,
) -> None:
    # given the access-link answer also hands out a link for a recording the record omits
    job_id = daily_sim.add_job(transcription=[("txt", b"hello")])
    links = {
        "id": job_id,
        "preset": "transcript",
        "status": "finished",
        "transcription": [{"format": "txt", "link": f"{daily_sim.origin}/files/x"}],
        "recording": [{"format": "mp4", "link": f"{daily_sim.origin}/files/y?sig=1"}],
    }
    daily_sim.inject(path="/access-link$", status=200, body=links)
    provider = adapter(daily_sim)

    # when its outputs are asked for, then the job is kept
    with pytest.raises(Kept, match=r"`access-link\.recording\[0\]\.link`"):
        provider.artifacts(snapshot(provider, job_id))


@pytest.mark.parametrize("output_as", ["object", "null", "absent"])
def test_a_finished_daily_job_with_no_output_keeps_the_job(
    daily_sim: DailySimulator, output_as: OutputAs
) -> None:
    # given a job Daily calls finished whose output is {}, null or missing
    job_id = daily_sim.add_job("finished", output_as=output_as)
    provider = adapter(daily_sim)

    # when its outputs are asked for, then it is kept as suspicious, not deleted as empty
    with pytest.raises(Kept, match="lists no output at all: nothing deleted") as caught:
        provider.artifacts(snapshot(provider, job_id))
    assert caught.value.reason == "no_output"
    assert caught.value.job_id == job_id


def test_a_finished_job_whose_output_sections_are_all_empty_has_no_output(
    daily_sim: DailySimulator,
) -> None:
    job_id = daily_sim.add_job("finished")
    record = daily_sim._job_json(daily_sim.jobs[job_id])
    record["output"] = {"transcription": [], "summary": None}
    daily_sim.inject(method="GET", path=f"/{job_id}$", status=200, body=record)
    provider = adapter(daily_sim)
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, job_id))
    assert caught.value.reason == "no_output"


def test_delete_answers_with_the_job_then_gone(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"x")])
    provider = adapter(daily_sim)
    first = provider.delete(job_id)
    assert isinstance(first, Deleted)
    assert at(first.body, "id") == job_id
    assert isinstance(provider.delete(job_id), AlreadyGone)


@pytest.mark.parametrize("keeps_job", [False, True])
def test_a_daily_delete_that_reports_an_error_is_incomplete_not_deleted(
    daily_sim: DailySimulator, keeps_job: bool
) -> None:
    # given Daily's storage cleanup fails for the job's transcriptions
    job_id = daily_sim.add_job(transcription=[("txt", b"x")])
    daily_sim.fail_next_delete(job_id, keeps_job=keeps_job)
    provider = adapter(daily_sim)

    # when the job is deleted
    with pytest.raises(DeleteIncomplete) as caught:
        provider.delete(job_id)

    # then the delete is not taken as done: a transient error naming Daily's words
    assert not caught.value.permanent
    message = str(caught.value)
    assert message.startswith(f"daily job {job_id}: ")
    assert "'Failed to delete transcriptions'" in message
    assert "sent again" in message
    # and the next attempt ends the job either way
    again = provider.delete(job_id)
    assert isinstance(again, Deleted if keeps_job else AlreadyGone)


@pytest.mark.parametrize("keeps_job", [False, True])
def test_a_failed_jobs_own_error_in_the_delete_answer_is_told_apart_by_a_read(
    daily_sim: DailySimulator, keeps_job: bool
) -> None:
    # given: a job that failed processing; Daily's delete answers with its record, whose
    # `error` is the processing error (the field a failed cleanup also uses)
    reason = "Error: Failed to transcribe. May be invalid audio"
    job_id = daily_sim.add_job("error", error=reason)
    if keeps_job:
        daily_sim.fail_next_delete(job_id, reason, keeps_job=True)
    provider = adapter(daily_sim)

    # when / then: gone afterwards is a delete; still described is not
    if keeps_job:
        with pytest.raises(DeleteIncomplete):
            provider.delete(job_id)
    else:
        answer = provider.delete(job_id)
        assert isinstance(answer, Deleted)
        assert at(answer.body, "error") == reason


def test_a_daily_delete_error_that_is_not_text_is_still_incomplete(
    daily_sim: DailySimulator,
) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"x")])
    body = {**daily_sim._job_json(daily_sim.jobs[job_id]), "error": {"code": 7}}
    daily_sim.inject(method="DELETE", path=f"/{job_id}$", status=200, body=body)
    with pytest.raises(DeleteIncomplete, match="did not put in words"):
        adapter(daily_sim).delete(job_id)


def test_a_daily_404_on_delete_is_confirmed_by_reading_the_job(daily_sim: DailySimulator) -> None:
    # given the delete route answers Daily's 404 although the job is there
    job_id = daily_sim.add_job(transcription=[("txt", b"x")])
    daily_sim.inject(
        method="DELETE",
        path=f"/{job_id}$",
        status=404,
        body={"error": "not-found", "info": "route not found"},
    )

    # when the job is deleted, then the read that follows contradicts the 404
    with pytest.raises(BadResponse, match="still describes the job") as caught:
        adapter(daily_sim).delete(job_id)
    assert not caught.value.permanent
    assert job_id in daily_sim.jobs
    assert len(daily_sim.seen("GET", f"/{job_id}$")) == 1


@pytest.mark.parametrize("unknown_route", ["html", "empty"])
def test_a_wrong_base_url_never_marks_a_daily_job_gone(
    daily_sim: DailySimulator, unknown_route: UnknownRoute
) -> None:
    # given a base URL that reaches a server, but not Daily's API
    daily_sim.unknown_route = unknown_route
    job_id = daily_sim.add_job(transcription=[("txt", b"x")])
    provider = adapter(daily_sim, base_url=f"{daily_sim.origin}/v2")

    # when the job is read and deleted, then neither answer is taken for "gone"
    with pytest.raises(BadResponse, match="base_url"):
        provider.get_job(job_id)
    with pytest.raises(BadResponse, match="base_url"):
        provider.delete(job_id)
    assert job_id in daily_sim.jobs


def test_an_answer_about_another_job_is_a_bad_response(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job()
    daily_sim.inject(path=f"/{job_id}$", status=200, body={"id": "someone-else"})
    with pytest.raises(BadResponse, match="answered with job someone-else"):
        adapter(daily_sim).get_job(job_id)


def test_the_simulator_enforces_its_rate_limit_and_the_limiter_keeps_under_it(
    daily_sim: DailySimulator,
) -> None:
    # The limiter measures when a request leaves, the provider when it arrives: configure a
    # little under the provider's limit, as the configuration reference advises.
    daily_sim.rate_limit = (10, 1.0)
    provider = adapter(daily_sim)
    provider.api.limiter = RateLimiter("8/second", "daily")
    started = time.monotonic()
    for _ in range(20):
        provider.check_credentials()
    assert all(s.status == 200 for s in daily_sim.requests)
    assert time.monotonic() - started >= 2.0


def test_a_cursor_that_does_not_advance_is_refused(daily_sim: DailySimulator) -> None:
    for _ in range(2):
        daily_sim.add_job()
    page = {
        "total_count": 9,
        "data": [{"id": "a", "status": "finished"}, {"id": "a", "status": "finished"}],
    }
    daily_sim.inject(path="/v1/batch-processor$", status=200, body=page, times=5)
    with pytest.raises(BadResponse, match="cursor did not advance"):
        for _ in adapter(daily_sim, page_size=2).list_jobs():
            pass


@pytest.mark.parametrize(
    "status",
    ["finished", "error", "", "processing"],
)
def test_phase_of_never_raises(status: str) -> None:
    assert isinstance(phase_of(status), Phase)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.just("https://daily.example/x"),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "output",
                    "s3Config",
                    "key",
                    "bucket",
                    "format",
                    "transcription",
                    "summary",
                    "recording",
                    "input",
                    "uri",
                    "link",
                    "url",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(record=json_values)
def test_any_job_record_either_parses_or_is_a_bad_response(record: JSONValue) -> None:
    try:
        outputs = outputs_of(record)
        unknown = unrecognised_of(record)
    except BadResponse:
        return
    for output in outputs:
        assert isinstance(output.key, str)
        assert output.key
        assert output.format is None or isinstance(output.format, str)
    # and a record the walk accepts has no reference outside the input and the s3Configs of
    # documented sections (or their same-file links)
    if not unknown:
        for path, _value in references(record):
            assert within(path, ("input",)) or (
                path[0] == "output"
                and path[1] in KNOWN_SECTIONS
                and path[-1] in ("s3Config", "link", "url")
            )
