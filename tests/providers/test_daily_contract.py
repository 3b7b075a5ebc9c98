"""The Daily adapter against the Daily simulator, over real HTTP."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from worker.domain import (
    AlreadyGone,
    BucketOrigin,
    Deleted,
    JobGone,
    JobSnapshot,
    LinkOrigin,
    Phase,
)
from worker.errors import BadResponse, ProviderRejected, ProviderUnavailable, RateLimited
from worker.fetch import Fetcher, make_download_client
from worker.providers.base import RateLimiter
from worker.providers.daily import DailyProvider, outputs_of, phase_of
from worker.settings import DailySettings, DownloadSettings
from worker.simulators.daily import DailySimulator


def adapter(sim: DailySimulator, **extra: object) -> DailyProvider:
    settings = DailySettings.model_validate(
        {"type": "daily", "base_url": sim.base_url, "api_key": sim.api_key, **extra}
    )
    return DailyProvider.build("daily", settings)


def snapshot(provider: DailyProvider, job_id: str) -> JobSnapshot:
    snap = provider.get_job(job_id)
    assert isinstance(snap, JobSnapshot)
    return snap


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


def test_an_errored_job_without_outputs_has_nothing_to_archive(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job("error", error="Error: Failed to transcribe")
    provider = adapter(daily_sim)
    assert provider.artifacts(snapshot(provider, job_id)) == []


def test_delete_answers_with_the_job_then_gone(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job(transcription=[("txt", b"x")])
    provider = adapter(daily_sim)
    first = provider.delete(job_id)
    assert isinstance(first, Deleted)
    assert first.body["id"] == job_id
    assert first.warning is None
    assert isinstance(provider.delete(job_id), AlreadyGone)


def test_a_wrong_key_is_rejected_with_advice_and_without_the_key(daily_sim: DailySimulator) -> None:
    settings = DailySettings(
        type="daily", base_url=daily_sim.base_url, api_key=SecretStr("wrong-key-123456")
    )
    with pytest.raises(ProviderRejected, match="401: authentication-error") as caught:
        DailyProvider.build("daily", settings).check_credentials()
    assert "wrong-key-123456" not in str(caught.value)
    assert "credentials" in str(caught.value)


def test_a_429_is_retried_after_the_wait_it_asks_for(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job()
    daily_sim.inject(
        path=f"/{job_id}$",
        status=429,
        headers={"Retry-After": "1"},
        body={"error": "rate-limit-error"},
    )
    started = time.monotonic()
    assert isinstance(adapter(daily_sim).get_job(job_id), JobSnapshot)
    assert time.monotonic() - started >= 0.9


def test_a_long_429_wait_defers_instead_of_holding_a_worker(daily_sim: DailySimulator) -> None:
    daily_sim.inject(
        path="/v1/batch-processor",
        status=429,
        headers={"Retry-After": "3600"},
        body={"error": "rate-limit-error"},
    )
    with pytest.raises(RateLimited) as caught:
        adapter(daily_sim).check_credentials()
    assert caught.value.retry_after == 3600


def test_transient_5xx_answers_are_retried(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job()
    daily_sim.inject(path=f"/{job_id}$", status=503, times=2, body={"error": "server-error"})
    assert isinstance(adapter(daily_sim).get_job(job_id), JobSnapshot)


def test_a_provider_that_keeps_failing_is_unavailable_not_fatal(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job()
    daily_sim.inject(path=f"/{job_id}$", status=500, times=10, body={"error": "server-error"})
    with pytest.raises(ProviderUnavailable) as caught:
        adapter(daily_sim).get_job(job_id)
    assert not caught.value.permanent


def test_a_dropped_connection_is_retried(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job()
    daily_sim.inject("reset", path=f"/{job_id}$")
    assert isinstance(adapter(daily_sim).get_job(job_id), JobSnapshot)


def test_malformed_answers_are_bad_responses(daily_sim: DailySimulator) -> None:
    job_id = daily_sim.add_job()
    daily_sim.inject(path=f"/{job_id}$", status=200, body="{not json")
    with pytest.raises(BadResponse, match="not valid JSON"):
        adapter(daily_sim).get_job(job_id)
    daily_sim.inject(path=f"/{job_id}$", status=200, body={"id": "someone-else"})
    with pytest.raises(BadResponse, match="answered with job someone-else"):
        adapter(daily_sim).get_job(job_id)


def test_the_simulator_enforces_its_rate_limit_and_the_limiter_keeps_under_it(
    daily_sim: DailySimulator,
) -> None:
    # The limiter measures when a request leaves, the provider when it arrives: configure a
    # little under the provider's limit, as the README advises.
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
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["output", "s3Config", "key", "bucket", "format", "transcription", "summary", "x"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(record=json_values)
def test_any_job_record_either_parses_or_is_a_bad_response(record: object) -> None:
    try:
        outputs = outputs_of(record)
    except BadResponse:
        return
    for _section, _pos, fmt, config in outputs:
        assert isinstance(config["key"], str)
        assert config["key"]
        assert fmt is None or isinstance(fmt, str)
