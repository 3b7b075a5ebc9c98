"""The DatoCMS adapter against the DatoCMS simulator, over real HTTP.

The last tests run the adapter through the pipeline (real S3 API server, SQLite ledger) to
show the issue's definition of done: non-terminal and untracked tracks are untouched, and a
delete is requested once and polled to completion, across a crash too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.helpers import config_data, process_again, settings_of
from tests.json_at import at
from worker import delete as delete_path
from worker.bootstrap import Runtime, build_runtime
from worker.domain import (
    AlreadyGone,
    Artifact,
    DeleteAnswer,
    Deleted,
    DeletePending,
    JobGone,
    JobSnapshot,
    JobState,
    LinkOrigin,
    Phase,
)
from worker.errors import (
    BadResponse,
    DeleteFailed,
    Kept,
    ProviderRejected,
    ProviderUnavailable,
    UnsafeInput,
)
from worker.job import process_job
from worker.json_types import JSONValue
from worker.outcomes import Outcome
from worker.providers import datocms
from worker.providers.datocms import (
    SUBTITLES,
    DatoCmsProvider,
    api_errors,
    job_of,
    job_result_of,
    phase_of,
    status_of,
    track_label,
    tracks_of,
    webvtt_problem,
)
from worker.simulators.contract import Call, Contract, Description, WrongKey
from worker.simulators.datocms import DatoCmsSimulator, Failure, error_document
from worker.simulators.http import Request
from worker.simulators.s3server import S3Server
from worker.specs.datocms import DatoCmsSettings
from worker.sweep import sweep_provider

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

TOKEN = "dato-test-token-4e8a1c77b2"
# What every request to DatoCMS carries.
API_HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Accept": "application/json",
    "X-Api-Version": "3",
}


@pytest.fixture
def dato_sim() -> Iterator[DatoCmsSimulator]:
    sim = DatoCmsSimulator(TOKEN, sandboxes=("staging",))
    sim.start()
    yield sim
    sim.stop()


def adapter(sim: DatoCmsSimulator, **extra: object) -> DatoCmsProvider:
    settings = DatoCmsSettings.model_validate(sim.provider_table(**extra))
    return DatoCmsProvider.build("dato", settings)


def snapshot(provider: DatoCmsProvider, job_id: str) -> JobSnapshot:
    snap = provider.get_job(job_id)
    assert isinstance(snap, JobSnapshot)
    return snap


# -- the contract every adapter keeps (worker/simulators/contract.py) ----------------------


def _ready_track(sim: DatoCmsSimulator, status: str = "ready") -> str:
    return sim.add_track(sim.add_upload(), status)


class TestDatoCmsContract(Contract):
    description = Description[DatoCmsSimulator](
        name="dato",
        # A window the cases cannot spend: DatoCMS's pacing has tests of its own below, and
        # the contract counts requests.
        simulator=lambda: DatoCmsSimulator(TOKEN, rate_limit=(1_000_000, 3.0)),
        settings=lambda sim: sim.provider_table(),
        secrets=(TOKEN,),
        wrong_keys=(
            WrongKey(
                "wrong token",
                {"api_token": "wrong-token-5150aa"},
                says=("401: INVALID_AUTHORIZATION_HEADER", "api_token"),
            ),
        ),
        add_finished_job=_ready_track,
        add_job_saying=_ready_track,
        read=Call("GET", "/tracks$"),
        delete=Call("DELETE", "/tracks/[^/]+$"),
        error_body=error_document,
        bare_404_says=r"answered 404 without DatoCMS's NOT_FOUND error.*base_url",
        downloads="^/stream/",
    )


def track_id(job_id: str) -> str:
    return job_id.split("/")[1]


def delete_and_follow(provider: DatoCmsProvider, job_id: str) -> DeleteAnswer:
    """What the pipeline does, minus the pauses: delete, then poll until an answer."""
    answer = provider.delete(job_id)
    for _ in range(10):
        if not isinstance(answer, DeletePending):
            break
        answer = provider.poll_delete(job_id, answer.handle)
    return answer


# -- discovery -------------------------------------------------------------------------------


def test_the_listing_covers_the_tracks_of_the_configured_uploads_only(
    dato_sim: DatoCmsSimulator,
) -> None:
    first, second, other = (dato_sim.add_upload() for _ in range(3))
    ids = [dato_sim.add_track(first, s) for s in ("ready", "preparing", "errored", "archived")]
    ids.append(dato_sim.add_track(second, "ready", kind="audio", name=None))
    dato_sim.add_track(other, "ready")

    pages = list(adapter(dato_sim, upload_ids=[first, second]).list_jobs())

    assert [len(p) for p in pages] == [4, 1]
    listed = [job for page in pages for job in page]
    assert [j.job_id for j in listed] == ids
    assert [j.phase for j in listed] == [
        Phase.SUCCEEDED,
        Phase.RUNNING,
        Phase.FAILED,
        Phase.UNKNOWN,
        Phase.SUCCEEDED,
    ]
    assert dato_sim.seen(path=other) == []


def test_an_upload_that_no_longer_exists_is_skipped_not_fatal(dato_sim: DatoCmsSimulator) -> None:
    upload = dato_sim.add_upload()
    job_id = dato_sim.add_track(upload)
    pages = list(adapter(dato_sim, upload_ids=["vanished-upload", upload]).list_jobs())
    assert [[j.job_id for j in page] for page in pages] == [[job_id]]
    assert [s.status for s in dato_sim.seen("GET", "/tracks$")] == [404, 200]


def test_without_upload_ids_nothing_is_listed_or_asked(dato_sim: DatoCmsSimulator) -> None:
    dato_sim.add_track(dato_sim.add_upload())
    assert list(adapter(dato_sim).list_jobs()) == []
    assert dato_sim.requests == []


# -- status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("ready", Phase.SUCCEEDED),
        ("errored", Phase.FAILED),
        ("preparing", Phase.RUNNING),
        ("archived", Phase.UNKNOWN),
        ("", Phase.UNKNOWN),
    ],
)
def test_statuses_translate_and_unknown_ones_are_never_terminal(
    dato_sim: DatoCmsSimulator, status: str, phase: Phase
) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload(), status)
    snap = snapshot(adapter(dato_sim), job_id)
    assert (snap.job_id, snap.status, snap.phase, snap.finished_at) == (job_id, status, phase, None)
    assert snap.record["type"] == "upload_track"
    assert snap.record["id"] == track_id(job_id)
    assert at(snap.record, "attributes", "status") == status


def test_a_track_that_does_not_exist_is_gone(dato_sim: DatoCmsSimulator) -> None:
    upload = dato_sim.add_upload()
    dato_sim.add_track(upload)
    assert isinstance(adapter(dato_sim).get_job(f"{upload}/no-such-track"), JobGone)


def test_a_track_of_an_upload_that_does_not_exist_is_gone(dato_sim: DatoCmsSimulator) -> None:
    gone = adapter(dato_sim).get_job("no-such-upload/some-track")
    assert isinstance(gone, JobGone)
    assert gone.answer["status_code"] == 404


@pytest.mark.parametrize("job_id", ["no-slash", "a/b/c", "/track", "upload/", "../track", "u/.."])
def test_a_job_id_not_of_the_form_upload_slash_track_is_refused(
    dato_sim: DatoCmsSimulator, job_id: str
) -> None:
    provider = adapter(dato_sim)
    for call in (provider.get_job, provider.delete):
        with pytest.raises(UnsafeInput, match="UPLOAD_ID/TRACK_ID") as caught:
            call(job_id)
        assert caught.value.permanent
    assert dato_sim.requests == []


def test_each_part_of_a_job_id_is_url_quoted(dato_sim: DatoCmsSimulator) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload("up load?"), track_id="tr#ack%")
    provider = adapter(dato_sim)
    assert snapshot(provider, job_id).record["id"] == "tr#ack%"
    assert isinstance(provider.delete(job_id), DeletePending)
    assert dato_sim.seen("DELETE")[0].path == "/uploads/up%20load%3F/tracks/tr%23ack%25"


def serve_track(sim: DatoCmsSimulator, job_id: str, **changes: Any) -> None:
    """The next listing of the track's upload shows the track with ``changes`` merged in:
    ``attributes`` entries into its attributes, anything else at the top level."""
    upload_id, track = job_id.split("/")
    resource = sim._track_json(sim.uploads[upload_id].tracks[track])
    resource["attributes"].update(changes.pop("attributes", {}))
    resource.update(changes)
    sim.inject(method="GET", path="/tracks$", status=200, body={"data": [resource]})


def test_a_track_that_names_a_file_keeps_the_job(dato_sim: DatoCmsSimulator) -> None:
    # given DatoCMS starts describing a track with a link to its media
    job_id = dato_sim.add_track(dato_sim.add_upload())
    media = "https://stream.mux.example/text/abc.vtt?token=mux-t0k3n"
    serve_track(dato_sim, job_id, attributes={"url": media})
    provider = adapter(dato_sim)

    # when its outputs are asked for
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, job_id))

    # then it is kept, naming the attribute, without the link
    assert caught.value.reason == "unrecognised_output"
    message = str(caught.value)
    assert message.startswith(f"dato job {job_id}: unrecognised output `attributes.url`")
    assert '"url" to ignore_outputs' in message
    assert "mux-t0k3n" not in message


def test_a_track_attribute_named_in_ignore_outputs_is_not_a_reason_to_keep(
    dato_sim: DatoCmsSimulator,
) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload())
    serve_track(dato_sim, job_id, attributes={"url": "https://stream.mux.example/a.vtt"})
    provider = adapter(dato_sim, ignore_outputs=["url"])
    assert names(provider.artifacts(snapshot(provider, job_id))) == [SUBTITLES]


def test_json_api_links_and_relationships_are_not_files(dato_sim: DatoCmsSimulator) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload())
    upload_id = job_id.split("/")[0]
    serve_track(
        dato_sim,
        job_id,
        links={"self": f"https://site-api.datocms.com/uploads/{upload_id}/tracks/x"},
        relationships={
            "upload": {
                "data": {"type": "upload", "id": upload_id},
                "links": {"related": f"https://site-api.datocms.com/uploads/{upload_id}"},
            }
        },
    )
    provider = adapter(dato_sim)
    assert names(provider.artifacts(snapshot(provider, job_id))) == [SUBTITLES]


# -- the track's media -----------------------------------------------------------------------


def names(artifacts: list[Artifact]) -> list[str]:
    return [a.name for a in artifacts]


def test_a_subtitle_track_is_archived_as_its_webvtt_from_the_stream_host(
    dato_sim: DatoCmsSimulator,
) -> None:
    provider = adapter(dato_sim)
    job_id = dato_sim.add_track(dato_sim.add_upload())

    [vtt] = provider.artifacts(snapshot(provider, job_id))

    url = dato_sim.webvtt_url(job_id)
    assert (vtt.name, vtt.source, vtt.origin) == (SUBTITLES, url, LinkOrigin(url))
    assert vtt.check is not None
    # DatoCMS was asked for the upload's playback id; the stream host is the pipeline's to read
    assert len(dato_sim.seen("GET", f"^/uploads/{job_id.split('/')[0]}$")) == 1
    assert dato_sim.stream_fetches() == []


def test_the_stream_host_is_a_setting_whose_default_is_muxs(dato_sim: DatoCmsSimulator) -> None:
    table = {k: v for k, v in dato_sim.provider_table().items() if k != "stream_base_url"}
    settings = DatoCmsSettings.model_validate(table)
    assert settings.stream_base_url == "https://stream.mux.com"
    provider = DatoCmsProvider.build("dato", settings)
    job_id = dato_sim.add_track(dato_sim.add_upload())
    [vtt] = provider.artifacts(snapshot(provider, job_id))
    playback_id = dato_sim.uploads[job_id.split("/")[0]].mux_playback_id
    assert vtt.source == f"https://stream.mux.com/{playback_id}/text/{track_id(job_id)}.vtt"


@pytest.mark.parametrize("url", ["ftp://stream.mux.com", "https://u:p@stream.mux.com", "mux"])
def test_a_stream_base_url_that_is_no_plain_http_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="stream_base_url"):
        DatoCmsSettings.model_validate(
            {"type": "datocms", "api_token": TOKEN, "stream_base_url": url}
        )


def test_an_audio_track_is_kept_naming_the_value_that_accepts_losing_it(
    dato_sim: DatoCmsSimulator,
) -> None:
    # given an audio track, whose media Mux serves only inside the video's stream
    job_id = dato_sim.add_track(dato_sim.add_upload(), kind="audio", name="English")
    provider = adapter(dato_sim)

    # when its outputs are asked for
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, job_id))

    # then it is kept, saying which track and what accepts its loss
    assert caught.value.reason == "audio_track"
    message = str(caught.value)
    assert message.startswith(f"dato job {job_id}: audio track {track_id(job_id)}")
    assert "'English'" in message
    assert '"audio_media" to ignore_outputs' in message
    assert dato_sim.stream_fetches() == []


def test_with_audio_media_in_ignore_outputs_an_audio_track_is_its_record_only(
    dato_sim: DatoCmsSimulator,
) -> None:
    audio = dato_sim.add_track(dato_sim.add_upload(), kind="audio")
    subtitles = dato_sim.add_track(dato_sim.add_upload())
    provider = adapter(dato_sim, ignore_outputs=["audio_media"])
    assert provider.artifacts(snapshot(provider, audio)) == []
    # and subtitles are still archived
    assert names(provider.artifacts(snapshot(provider, subtitles))) == [SUBTITLES]


def test_a_subtitle_track_of_an_upload_without_a_playback_id_is_kept(
    dato_sim: DatoCmsSimulator,
) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload(video=False))
    provider = adapter(dato_sim)
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, job_id))
    assert caught.value.reason == "subtitles_unfetchable"
    message = str(caught.value)
    assert f"subtitle track {track_id(job_id)}" in message
    assert "mux_playback_id" in message
    assert '"subtitles_media" to ignore_outputs' in message
    # with the loss accepted, the track is its record
    accepting = adapter(dato_sim, ignore_outputs=["subtitles_media"])
    assert accepting.artifacts(snapshot(accepting, job_id)) == []


@pytest.mark.parametrize("kind", ["subtitles", "audio"])
def test_an_errored_track_has_no_media_so_its_record_is_all(
    dato_sim: DatoCmsSimulator, kind: str
) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload(), "errored", kind=kind, error="MUX_ERROR")
    provider = adapter(dato_sim)
    assert provider.artifacts(snapshot(provider, job_id)) == []
    assert dato_sim.seen("GET", "^/uploads/[^/]+$") == []


def test_a_track_type_datocms_does_not_document_is_kept(dato_sim: DatoCmsSimulator) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload(), kind="video")
    provider = adapter(dato_sim)
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, job_id))
    assert caught.value.reason == "unrecognised_output"
    assert "'video'" in str(caught.value)
    assert '"video_media" to ignore_outputs' in str(caught.value)
    accepting = adapter(dato_sim, ignore_outputs=["video_media"])
    assert accepting.artifacts(snapshot(accepting, job_id)) == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"WEBVTT\n\n00:01.000 --> 00:02.000\nHi\n", None),
        (b"\xef\xbb\xbfWEBVTT - Italiano\r\n\r\n1\r\n00:00:01.000 --> 00:00:02.000\r\nCiao", None),
        (b"WEBVTT\rKind: captions\r\r101:00:00.000 --> 101:00:01.500 align:start\rHi\r", None),
        (
            b"WEBVTT\n\nNOTE a note\n\nSTYLE\n::cue { color: red }\n\n00:00.000 --> 00:01.000\n",
            None,
        ),
        (b"", "is empty"),
        (b" \n\t\n", "does not start with WEBVTT"),
        (b"<html><body>Access denied</body></html>", "does not start with WEBVTT"),
        (b"WEBVTTX\n\n00:01.000 --> 00:02.000\nHi\n", "does not start with WEBVTT"),
        (b"1\n00:00:01,000 --> 00:00:02,000\nHi\n", "does not start with WEBVTT"),
        (b"WEBVTT\n", "has no cue"),
        (b"WEBVTT\n\nNOTE nothing here\n", "has no cue"),
        (b"WEBVTT\n\n00:01 --> 00:02\nHi\n", "has no cue"),
        (b"WEBVTT\n\n00:61.000 --> 00:62.000\nHi\n", "has no cue"),
    ],
)
def test_a_webvtt_body_must_be_non_empty_start_with_the_signature_and_hold_a_cue(
    body: bytes, problem: str | None
) -> None:
    assert webvtt_problem(body) == problem


@settings(max_examples=300)
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_body_either_is_webvtt_or_says_what_it_lacks(body: bytes) -> None:
    assert webvtt_problem(body) in (None, "is empty", "does not start with WEBVTT", "has no cue")
    assert webvtt_problem(b"WEBVTT\n\n00:00.000 --> 00:01.000\n" + body) is None


# -- delete ----------------------------------------------------------------------------------


def test_a_delete_is_accepted_polled_to_completion_and_then_already_gone(
    dato_sim: DatoCmsSimulator,
) -> None:
    dato_sim.pending_polls = 2
    job_id = dato_sim.add_track(dato_sim.add_upload())
    provider = adapter(dato_sim)

    accepted = provider.delete(job_id)
    assert isinstance(accepted, DeletePending)
    polls = [provider.poll_delete(job_id, accepted.handle) for _ in range(3)]

    assert (accepted.handle, accepted.status_code) == (dato_sim.handles_of(job_id)[0], 202)
    assert [type(p) for p in polls] == [DeletePending, DeletePending, Deleted]
    assert all(p.handle == accepted.handle for p in polls[:2] if isinstance(p, DeletePending))
    done = polls[2]
    assert isinstance(done, Deleted)
    assert (done.status_code, at(done.body, "data", "id")) == (200, track_id(job_id))
    assert dato_sim.deleted == [job_id]
    assert not dato_sim.has_track(job_id)
    assert isinstance(provider.delete(job_id), AlreadyGone)


def test_a_track_someone_else_deleted_while_the_job_ran_is_already_gone(
    dato_sim: DatoCmsSimulator,
) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload())
    provider = adapter(dato_sim)
    accepted = provider.delete(job_id)
    assert isinstance(accepted, DeletePending)
    dato_sim.remove_track(job_id)
    for _ in range(dato_sim.pending_polls):
        assert isinstance(provider.poll_delete(job_id, accepted.handle), DeletePending)
    assert isinstance(provider.poll_delete(job_id, accepted.handle), AlreadyGone)
    assert dato_sim.deleted == []


@pytest.mark.parametrize("where", ["delete", "job"])
def test_a_sandbox_environment_refuses_deletes_with_advice(
    dato_sim: DatoCmsSimulator, where: str
) -> None:
    # Given a sandbox that refuses on the DELETE itself, or inside the job result
    dato_sim.sandbox_refusal = "delete" if where == "delete" else "job"
    dato_sim.pending_polls = 0
    job_id = dato_sim.add_track(dato_sim.add_upload())
    provider = adapter(dato_sim, environment="staging")
    assert snapshot(provider, job_id).phase == Phase.SUCCEEDED

    # When the delete is requested (and followed): refused outright, or by a failed job
    with pytest.raises((ProviderRejected, DeleteFailed)) as caught:
        delete_and_follow(provider, job_id)

    # Then it is refused for good, with the code and what to do
    assert "IMMUTABLE_UPLOAD_TRACKS_IN_SANDBOX_ENVIRONMENT" in str(caught.value)
    assert "primary" in str(caught.value)
    assert caught.value.permanent
    assert dato_sim.has_track(job_id)
    assert isinstance(adapter(dato_sim).delete(job_id), DeletePending)


def test_an_unknown_environment_is_rejected_with_advice(dato_sim: DatoCmsSimulator) -> None:
    with pytest.raises(ProviderRejected, match=r"INVALID_ENVIRONMENT.*`environment`"):
        adapter(dato_sim, environment="no-such-env").check_credentials()


@pytest.mark.parametrize(
    ("failure", "permanent"),
    [
        (Failure(422, "MUX_ERROR", transient=True), False),
        (Failure(500, "INTERNAL_ERROR"), False),
        (Failure(422, "MUX_ERROR"), True),
    ],
)
def test_a_failed_delete_job_spends_its_handle_and_carries_its_code(
    dato_sim: DatoCmsSimulator, failure: Failure, permanent: bool
) -> None:
    dato_sim.pending_polls = 0
    dato_sim.delete_failure = failure
    job_id = dato_sim.add_track(dato_sim.add_upload())
    provider = adapter(dato_sim)
    answer = provider.delete(job_id)
    assert isinstance(answer, DeletePending)
    with pytest.raises(DeleteFailed, match=failure.code) as caught:
        provider.poll_delete(job_id, answer.handle)
    assert caught.value.permanent is permanent
    assert dato_sim.has_track(job_id)


def test_a_transient_error_is_transient_even_on_a_4xx(dato_sim: DatoCmsSimulator) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload())
    dato_sim.inject(
        path="/tracks$",
        status=422,
        body=error_document("ENVIRONMENT_NOT_READY", transient=True),
    )
    with pytest.raises(ProviderUnavailable, match="422: ENVIRONMENT_NOT_READY") as caught:
        adapter(dato_sim).get_job(job_id)
    assert not caught.value.permanent


# -- credentials and headers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Authorization": "Bearer nope"}, "INVALID_AUTHORIZATION_HEADER"),
        ({"X-Api-Version": "2"}, "INVALID_API_VERSION"),
        ({"Accept": "text/html"}, "INVALID_ACCEPT_HEADER"),
        ({"X-Environment": "nope"}, "INVALID_ENVIRONMENT"),
    ],
)
def test_the_simulator_enforces_every_header_the_adapter_sends(
    dato_sim: DatoCmsSimulator, headers: dict[str, str], code: str
) -> None:
    with httpx.Client(base_url=dato_sim.base_url) as client:
        good = client.get("/uploads", headers=API_HEADERS)
        bad = client.get("/uploads", headers={**API_HEADERS, **headers})
    assert good.status_code == 200
    assert [e.code for e in api_errors(bad.json())] == [code]
    for answer in (good, bad):
        assert {"x-ratelimit-limit", "x-ratelimit-remaining"} <= set(answer.headers)


# -- rate limits and transient failures ------------------------------------------------------


def test_an_answer_with_no_requests_remaining_paces_the_next_request(
    dato_sim: DatoCmsSimulator,
) -> None:
    dato_sim.rate_limit = (3, 1.0)
    job_id = dato_sim.add_track(dato_sim.add_upload())
    provider = adapter(dato_sim)
    started = time.monotonic()
    for _ in range(4):
        snapshot(provider, job_id)
    assert time.monotonic() - started >= 0.9
    assert [s.status for s in dato_sim.requests] == [200] * 4


def test_a_429_is_retried_after_x_ratelimit_reset(dato_sim: DatoCmsSimulator) -> None:
    # Given another client of the same token has spent the window
    dato_sim.rate_limit = (2, 1.0)
    job_id = dato_sim.add_track(dato_sim.add_upload())
    with httpx.Client(base_url=dato_sim.base_url) as client:
        spent = [client.get("/uploads", headers=API_HEADERS) for _ in range(2)]
    assert spent[-1].headers["X-RateLimit-Remaining"] == "0"

    # When the adapter reads the track
    started = time.monotonic()
    snap = snapshot(adapter(dato_sim), job_id)

    # Then it waited out the 429 and got its answer
    assert snap.phase == Phase.SUCCEEDED
    assert time.monotonic() - started >= 0.9
    assert [s.status for s in dato_sim.seen("GET", "/tracks$")] == [429, 200]


def test_a_reset_connection_while_polling_a_delete_is_retried(dato_sim: DatoCmsSimulator) -> None:
    # (the contract retries resets on a read and a delete; the poll is a request of its own)
    dato_sim.pending_polls = 0
    job_id = dato_sim.add_track(dato_sim.add_upload())
    provider = adapter(dato_sim)
    dato_sim.inject("reset", path="^/job-results/")
    accepted = provider.delete(job_id)
    assert isinstance(accepted, DeletePending)
    assert isinstance(provider.poll_delete(job_id, accepted.handle), Deleted)
    assert [s.fault for s in dato_sim.seen(path="^/job-results/")] == ["reset", None]


# -- malformed answers -----------------------------------------------------------------------

TRACK = {"type": "upload_track", "id": "T", "attributes": {"status": "ready"}}


@pytest.mark.parametrize(
    ("path", "method", "body", "message"),
    [
        ("/tracks$", "GET", {"data": {"id": "T"}}, "has no list field 'data'"),
        ("/tracks$", "GET", {"data": [{"id": 5}]}, "has no str field 'id'"),
        ("/tracks$", "GET", {"data": [{**TRACK, "type": "upload"}]}, "not a track"),
        ("/tracks$", "GET", {"data": [{**TRACK, "attributes": None}]}, "field 'attributes'"),
        ("/tracks$", "GET", {"data": [TRACK, TRACK]}, "lists track T twice"),
        (
            "/tracks$",
            "GET",
            {"data": [{**TRACK, "relationships": {"upload": {"data": {"id": "other"}}}}]},
            "belongs to upload other",
        ),
        ("/tracks/", "DELETE", {"data": {"type": "item", "id": "1"}}, "not a job"),
        ("/tracks/", "DELETE", {"data": {"type": "job", "id": ""}}, "job id is empty"),
    ],
)
def test_malformed_answers_are_bad_responses(
    dato_sim: DatoCmsSimulator, path: str, method: str, body: Any, message: str
) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload(), track_id="T")
    status = 202 if method == "DELETE" else 200
    dato_sim.inject(path=path, method=method, status=status, body=body)
    call = adapter(dato_sim).delete if method == "DELETE" else adapter(dato_sim).get_job
    with pytest.raises(BadResponse, match=message):
        call(job_id)
    assert dato_sim.has_track(job_id)


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"data": {"type": "job", "id": "1"}}, "not a job_result"),
        ({"data": {"type": "job_result", "attributes": {"status": "200"}}}, "int field 'status'"),
        ({"data": {"type": "job_result", "attributes": {"status": 999}}}, "not an HTTP status"),
        (
            {
                "data": {
                    "type": "job_result",
                    "attributes": {"status": 200, "payload": {"data": TRACK}},
                }
            },
            "deleting track T, not",
        ),
    ],
)
def test_malformed_job_results_are_bad_responses(
    dato_sim: DatoCmsSimulator, result: Any, message: str
) -> None:
    job_id = dato_sim.add_track(dato_sim.add_upload())
    dato_sim.inject(path="^/job-results/", status=200, body=result)
    with pytest.raises(BadResponse, match=message):
        adapter(dato_sim).poll_delete(job_id, "4235")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-5, max_value=700)
    | st.sampled_from(["upload_track", "job", "job_result", "ready", "U", "T", "NOT_FOUND", ""])
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "data",
                    "id",
                    "type",
                    "attributes",
                    "status",
                    "payload",
                    "relationships",
                    "upload",
                    "code",
                    "transient",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(answer=json_values)
def test_any_answer_shape_either_parses_or_is_a_bad_response(answer: JSONValue) -> None:
    assert all(isinstance(e.code, str) for e in api_errors(answer))
    try:
        tracks = tracks_of(answer, "U")
    except BadResponse:
        tracks = []
    for track in tracks:
        assert isinstance(track["id"], str)
        assert isinstance(phase_of(status_of(track)), Phase)
        assert track_label(track).split()[1:2] in (["track"], [track["id"]])
    with contextlib.suppress(BadResponse):
        assert isinstance(job_of(answer), str)
    try:
        status, _payload = job_result_of(answer)
    except BadResponse:
        return
    assert 100 <= status <= 599


# -- through the pipeline ---------------------------------------------------------------------

RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def runtime_of(
    dato_sim: DatoCmsSimulator, s3_server: S3Server, bucket: str, sqlite_url: str
) -> Iterator[RuntimeFactory]:
    """Runtimes over one ledger and bucket, as separate worker processes would build them."""
    made: list[Runtime] = []

    def make(**provider: Any) -> Runtime:
        data = config_data(
            bucket=bucket,
            endpoint_url=s3_server.endpoint_url,
            ledger_url=sqlite_url,
            providers={"dato": dato_sim.provider_table(**provider)},
        )
        made.append(build_runtime(settings_of(data)))
        return made[-1]

    yield make
    for rt in made:
        rt.close()


def test_a_sweep_deletes_due_tracks_once_and_leaves_the_rest_untouched(
    dato_sim: DatoCmsSimulator, runtime_of: RuntimeFactory, s3: S3Client, bucket: str
) -> None:
    # Given a listed upload, and another upload with one tracked track and one not
    # Each poll answered 404 costs the pipeline a growing pause; the last tests cover those.
    dato_sim.pending_polls = 0
    listed = dato_sim.add_upload()
    ready = dato_sim.add_track(listed, "ready")
    errored = dato_sim.add_track(listed, "errored", error="NO_PRIMARY_AUDIO_TRACK")
    untouched = [dato_sim.add_track(listed, s) for s in ("preparing", "archived")]
    other = dato_sim.add_upload()
    tracked = dato_sim.add_track(other, "ready")
    untouched.append(dato_sim.add_track(other, "ready"))
    rt = runtime_of(upload_ids=[listed])
    rt.ledger.operator.track("dato", [tracked], now=rt.clock())

    # When the provider is swept
    report = sweep_provider(rt, "dato")

    # Then each due track was deleted by one request, polled to completion
    summary = report.summary()
    assert (summary.archived, summary.deleted, summary.failed) == (3, 3, 0)
    assert sorted(dato_sim.deleted) == sorted([ready, errored, tracked])
    for job_id in (ready, errored, tracked):
        assert dato_sim.deletes_of(job_id) == 1
        assert dato_sim.polls_of(job_id) == 1
        row = rt.ledger.query.get("dato", job_id)
        assert row is not None
        assert (row.state, row.delete_handle) == (JobState.DELETED, dato_sim.handles_of(job_id)[0])
    # and the manifest keeps the track record and its WebVTT; an errored track has no media
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=f"archive/dato/{ready}/manifest.json")["Body"].read()
    )
    assert manifest["job"]["id"] == track_id(ready)
    assert [f["key"] for f in manifest["files"]] == [f"archive/dato/{ready}/{SUBTITLES}"]
    assert manifest["job"]["attributes"]["status"] == "ready"
    errored_manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=f"archive/dato/{errored}/manifest.json")["Body"].read()
    )
    assert errored_manifest["files"] == []
    receipt = json.loads(
        s3.get_object(Bucket=bucket, Key=f"archive/dato/{ready}/deletion.json")["Body"].read()
    )
    assert receipt["provider_answer"]["result"] == "deleted"
    assert receipt["provider_answer"]["body"]["data"]["id"] == track_id(ready)
    # and nothing else was deleted; the untracked track was never even recorded
    for job_id in untouched:
        assert dato_sim.deletes_of(job_id) == 0
        assert dato_sim.has_track(job_id)
    assert rt.ledger.query.get("dato", untouched[-1]) is None


def stored_under(s3: S3Client, bucket: str, folder: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=folder)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_a_subtitle_tracks_webvtt_is_in_the_bucket_and_the_manifest_before_the_delete(
    dato_sim: DatoCmsSimulator, runtime_of: RuntimeFactory, s3: S3Client, bucket: str
) -> None:
    # given a ready subtitle track, and a look at the archive when its DELETE arrives
    dato_sim.pending_polls = 0
    job_id = dato_sim.add_track(
        dato_sim.add_upload(), vtt=b"WEBVTT\n\n00:01.000 --> 00:02.000\nCiao\n"
    )
    served, url = dato_sim.webvtt_of(job_id), dato_sim.webvtt_url(job_id)
    rt = runtime_of()
    rt.ledger.operator.track("dato", [job_id], now=rt.clock())
    folder = f"archive/dato/{job_id}/"
    at_delete: list[tuple[Any, bytes] | None] = []

    def look(request: Request) -> None:
        if request.method != "DELETE":
            return
        try:
            manifest = s3.get_object(Bucket=bucket, Key=f"{folder}manifest.json")["Body"].read()
            text = s3.get_object(Bucket=bucket, Key=f"{folder}{SUBTITLES}")["Body"].read()
        except ClientError:  # an object not there yet is what this records
            at_delete.append(None)
            return
        at_delete.append((json.loads(manifest), text))

    dato_sim.on_request = look

    # when the job is processed
    result = process_job(rt, "dato", job_id)

    # then the delete found the WebVTT stored, byte for byte, and listed in the manifest
    assert result.outcome == Outcome.DELETED
    assert result.files == 1
    [seen] = at_delete
    assert seen is not None
    manifest, text = seen
    assert text == served
    assert manifest["files"] == [
        {
            "key": f"{folder}{SUBTITLES}",
            "size": len(served),
            "sha256": hashlib.sha256(served).hexdigest(),
            "source": url,
        }
    ]
    # and the stream host was asked once, without a credential
    assert [(s.status, s.authorization) for s in dato_sim.stream_fetches()] == [(200, False)]
    assert dato_sim.deleted == [job_id]


def test_an_audio_track_is_kept_and_never_deleted_until_its_loss_is_accepted(
    dato_sim: DatoCmsSimulator, runtime_of: RuntimeFactory, s3: S3Client, bucket: str
) -> None:
    # given an audio track
    dato_sim.pending_polls = 0
    job_id = dato_sim.add_track(dato_sim.add_upload(), kind="audio", name="English")
    rt = runtime_of()
    rt.ledger.operator.track("dato", [job_id], now=rt.clock())

    # when it is processed, it is kept with its reason, and nothing is deleted
    kept = process_job(rt, "dato", job_id)
    assert (kept.outcome, kept.kept_reason) == (Outcome.KEPT, "audio_track")
    assert '"audio_media"' in (kept.error or "")
    assert dato_sim.deletes_of(job_id) == 0
    assert stored_under(s3, bucket, f"archive/dato/{job_id}/") == []

    # when the operator accepts losing audio, the track is deleted with its record archived
    done = process_again(runtime_of(ignore_outputs=["audio_media"]), "dato", job_id)
    assert done.outcome == Outcome.DELETED
    assert dato_sim.deleted == [job_id]
    assert stored_under(s3, bucket, f"archive/dato/{job_id}/") == [
        f"archive/dato/{job_id}/deletion.json",
        f"archive/dato/{job_id}/manifest.json",
    ]


@pytest.mark.parametrize("refusal", ["signed playback policy", "no such text track"])
def test_a_subtitle_track_whose_webvtt_is_refused_is_kept_with_nothing_stored(
    dato_sim: DatoCmsSimulator,
    runtime_of: RuntimeFactory,
    s3: S3Client,
    bucket: str,
    refusal: str,
) -> None:
    # given a subtitle track whose text the stream host will not serve
    dato_sim.pending_polls = 0
    signed = refusal == "signed playback policy"
    upload = dato_sim.add_upload(playback_policy="signed" if signed else "public")
    job_id = dato_sim.add_track(upload)
    if not signed:
        dato_sim.inject(path="^/stream/", status=404, body=b"Not Found")
    rt = runtime_of()
    rt.ledger.operator.track("dato", [job_id], now=rt.clock())

    # when it is processed
    result = process_job(rt, "dato", job_id)

    # then it is kept, naming the track, the answer and what accepts the loss
    assert (result.outcome, result.kept_reason) == (Outcome.KEPT, "subtitles_unfetchable")
    error = result.error or ""
    assert f"subtitle track {track_id(job_id)}" in error
    assert f"HTTP {403 if signed else 404}" in error
    assert '"subtitles_media"' in error
    assert dato_sim.deletes_of(job_id) == 0
    assert stored_under(s3, bucket, f"archive/dato/{job_id}/") == []
    row = rt.ledger.query.get("dato", job_id)
    assert row is not None
    assert row.state == JobState.KEPT

    # and once the operator accepts losing subtitle text, the track goes with its record only
    done = process_again(runtime_of(ignore_outputs=["subtitles_media"]), "dato", job_id)
    assert done.outcome == Outcome.DELETED
    assert done.files == 0


@pytest.mark.parametrize(
    ("vtt", "problem"),
    [
        (b"", "is empty"),
        (b"<html><body>Access denied</body></html>", "does not start with WEBVTT"),
        (b"WEBVTT\n\n", "has no cue"),
    ],
)
def test_a_webvtt_that_is_empty_or_not_webvtt_keeps_the_track_with_nothing_stored(
    dato_sim: DatoCmsSimulator,
    runtime_of: RuntimeFactory,
    s3: S3Client,
    bucket: str,
    vtt: bytes,
    problem: str,
) -> None:
    dato_sim.pending_polls = 0
    job_id = dato_sim.add_track(dato_sim.add_upload(), name="Italiano", vtt=vtt)
    rt = runtime_of()
    rt.ledger.operator.track("dato", [job_id], now=rt.clock())

    result = process_job(rt, "dato", job_id)

    assert (result.outcome, result.kept_reason) == (Outcome.KEPT, "subtitles_invalid")
    error = result.error or ""
    assert f"subtitle track {track_id(job_id)} ('Italiano', it-IT)" in error
    assert problem in error
    assert dato_sim.deletes_of(job_id) == 0
    assert stored_under(s3, bucket, f"archive/dato/{job_id}/") == []


def test_a_webvtt_larger_than_any_subtitles_is_refused_with_nothing_stored(
    dato_sim: DatoCmsSimulator,
    runtime_of: RuntimeFactory,
    s3: S3Client,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(datocms, "MAX_WEBVTT_BYTES", 64)
    job_id = dato_sim.add_track(dato_sim.add_upload(), vtt=b"WEBVTT\n\n" + b"x" * 100)
    rt = runtime_of()
    rt.ledger.operator.track("dato", [job_id], now=rt.clock())

    result = process_job(rt, "dato", job_id)

    assert result.outcome == Outcome.FAILED
    assert "larger than" in (result.error or "")
    assert dato_sim.deletes_of(job_id) == 0
    assert stored_under(s3, bucket, f"archive/dato/{job_id}/") == []


class Crash(BaseException):
    """The worker process dies."""


def test_a_crash_while_polling_resumes_the_polling_without_a_second_delete(
    dato_sim: DatoCmsSimulator, runtime_of: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker that dies in the pause before its first poll
    dato_sim.pending_polls = 0
    job_id = dato_sim.add_track(dato_sim.add_upload())
    first = runtime_of()
    first.ledger.operator.track("dato", [job_id], now=first.clock())

    def die(_seconds: float) -> None:
        raise Crash

    monkeypatch.setattr(delete_path, "time", SimpleNamespace(monotonic=time.monotonic, sleep=die))
    with pytest.raises(Crash):
        process_job(first, "dato", job_id)
    monkeypatch.undo()
    row = first.ledger.query.get("dato", job_id)
    assert row is not None
    assert (row.state, row.delete_handle) == (JobState.DELETING, dato_sim.handles_of(job_id)[0])
    assert (dato_sim.deletes_of(job_id), dato_sim.polls_of(job_id)) == (1, 0)

    # When another worker picks the job up
    result = process_job(runtime_of(), "dato", job_id)

    # Then it polls the stored job and never sends a second delete
    assert result.outcome == Outcome.DELETED
    assert (dato_sim.deletes_of(job_id), dato_sim.polls_of(job_id)) == (1, 1)
    assert dato_sim.deleted == [job_id]


def test_a_delete_still_running_when_the_run_ends_is_polled_by_later_runs(
    dato_sim: DatoCmsSimulator, runtime_of: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delete_path, "ASYNC_DELETE_POLL_SECONDS", 0.0)
    dato_sim.pending_polls = 1
    job_id = dato_sim.add_track(dato_sim.add_upload())
    rt = runtime_of()
    rt.ledger.operator.track("dato", [job_id], now=rt.clock())

    outcomes = [process_again(rt, "dato", job_id).outcome for _ in range(3)]

    assert outcomes == [Outcome.DEFERRED, Outcome.DEFERRED, Outcome.DELETED]
    assert (dato_sim.deletes_of(job_id), dato_sim.polls_of(job_id)) == (1, 2)
    assert dato_sim.deleted == [job_id]


def test_a_delete_job_that_failed_is_dropped_and_a_new_delete_sent(
    dato_sim: DatoCmsSimulator, runtime_of: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: DatoCMS finishes the first delete job with a failure
    monkeypatch.setattr(delete_path, "ASYNC_DELETE_POLL_SECONDS", 0.0)
    dato_sim.pending_polls = 0
    dato_sim.delete_failure = Failure(422, "MUX_ERROR")
    job_id = dato_sim.add_track(dato_sim.add_upload())
    rt = runtime_of()
    rt.ledger.operator.track("dato", [job_id], now=rt.clock())

    # when: runs follow one another, and the failure clears after the first delete
    first = process_again(rt, "dato", job_id)
    failed = process_again(rt, "dato", job_id)
    dato_sim.delete_failure = None
    resent = process_again(rt, "dato", job_id)
    done = process_again(rt, "dato", job_id)

    # then: the spent handle was dropped and one new delete sent, which completed
    assert [r.outcome for r in (first, failed, resent, done)] == [
        Outcome.DEFERRED,
        Outcome.DEFERRED,
        Outcome.DEFERRED,
        Outcome.DELETED,
    ]
    assert "MUX_ERROR" in (failed.error or "")
    assert dato_sim.deletes_of(job_id) == 2
    events = [e["event"] for e in rt.ledger.query.audit_trail("dato", job_id)]
    assert events.count("delete_handle_dropped") == 1
    assert events[-1] == "deleted"


def test_a_delete_pending_too_long_is_checked_against_the_track_itself(
    dato_sim: DatoCmsSimulator, runtime_of: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a delete job that never finishes (its result expired, say)
    monkeypatch.setattr(delete_path, "ASYNC_DELETE_POLL_SECONDS", 0.0)
    monkeypatch.setattr(delete_path, "ASYNC_DELETE_STALE", timedelta(0))
    dato_sim.pending_polls = 1_000_000
    job_id = dato_sim.add_track(dato_sim.add_upload())
    rt = runtime_of()
    rt.ledger.operator.track("dato", [job_id], now=rt.clock())
    assert process_again(rt, "dato", job_id).outcome == Outcome.DEFERRED

    # when the track is still there: the handle is dropped and the delete sent again
    stale = process_again(rt, "dato", job_id)
    assert stale.outcome == Outcome.DEFERRED
    assert "still pending" in (stale.error or "")
    process_again(rt, "dato", job_id)
    assert dato_sim.deletes_of(job_id) == 2

    # when the track is gone: the job is recorded as deleted
    dato_sim.remove_track(job_id)
    assert process_again(rt, "dato", job_id).outcome == Outcome.DELETED
    row = rt.ledger.query.get("dato", job_id)
    assert row is not None
    assert at(row.delete_answer, "result") == "already_gone"
