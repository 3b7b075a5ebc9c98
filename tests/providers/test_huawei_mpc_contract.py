"""The Huawei MPC adapter against the MPC simulator, over real HTTP, in both auth modes."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import config_data, objects, process_again, settings_of, write_to_bucket
from tests.json_at import at
from worker.bootstrap import Runtime, build_runtime
from worker.domain import (
    AlreadyGone,
    Artifact,
    Deleted,
    JobGone,
    JobSnapshot,
    Phase,
    ProviderOrigin,
    utcnow,
)
from worker.errors import (
    BadResponse,
    Kept,
    ProviderError,
    ProviderRejected,
    RateLimited,
    WorkerError,
)
from worker.json_types import JSONValue
from worker.outcomes import Outcome
from worker.providers import build_provider
from worker.providers.huawei_mpc import (
    HuaweiMpcProvider,
    SdkHmacSha256Auth,
    canonical_request,
    finished_at_of,
    signature,
    string_to_sign,
    tasks_of,
)
from worker.simulators.contract import Call, Contract, Description, WrongKey
from worker.simulators.huawei_mpc import (
    HuaweiMpcSimulator,
    gateway_canonical_request,
    gateway_signature,
)
from worker.simulators.s3server import S3Server
from worker.specs.huawei_mpc import HuaweiMpcSettings
from worker.sweep import sweep_provider

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PROJECT = "0b1c2d3e4f5a46b7a8d9e0f1a2b3c4d5"
TOKEN = "MIIT-iam-token-5e7a9c1b3d"
ACCESS_KEY = "HPUAK7Q2M4ZT3XW9EXAMPLE"
SECRET_KEY = "sk-mpc-8f6d4b2a0e9c7a5b3d1f"
MODES = ("token", "aksk")

# The signing example of shared/providers.md section 3 (Huawei's API signing guide).
DOC_PATH = "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs"
DOC_QUERY = [("limit", "2"), ("marker", "13551d6b-755d-4757-b956-536f674975c0")]
DOC_HEADERS = {
    "content-type": "application/json",
    "host": "service.region.example.com",
    "x-sdk-date": "20191115T033655Z",
}
DOC_AK = "QTWAOYTTINDUT2QVKYUC"
DOC_SK = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
DOC_HASH = "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
DOC_SIGNATURE = "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
NOT_FINAL_BODY = {
    "error_code": "MPC.10213",
    "error_msg": "Operation failed. The task is not in the final state.",
}
THROTTLED_BODY = {
    "error_code": "APIGW.0308",
    "error_msg": "The throttling threshold has been reached",
    "request_id": "4f1d0c",
}


@pytest.fixture(scope="module")
def mpc_server() -> Iterator[HuaweiMpcSimulator]:
    sim = HuaweiMpcSimulator(PROJECT, token=TOKEN, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def mpc_sim(mpc_server: HuaweiMpcSimulator) -> HuaweiMpcSimulator:
    """The module's simulator, emptied: no tasks, faults, requests or rate limit."""
    mpc_server.reset()
    return mpc_server


@pytest.fixture
def obs_sim(s3: S3Client, custom_bucket: str) -> Iterator[HuaweiMpcSimulator]:
    """MPC writing its outputs into the user's "OBS" bucket (the S3 test server)."""
    sim = HuaweiMpcSimulator(
        PROJECT,
        token=TOKEN,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        output_bucket=custom_bucket,
        bucket_writer=write_to_bucket(s3),
    )
    sim.start()
    yield sim
    sim.stop()


def provider_config(sim: HuaweiMpcSimulator, mode: str = "token", **extra: Any) -> dict[str, Any]:
    keys: dict[str, Any] = (
        {"token": TOKEN}
        if mode == "token"
        else {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
    )
    return {
        "type": "huawei_mpc",
        "base_url": sim.base_url,
        "project_id": PROJECT,
        **keys,
        **extra,
    }


def adapter(sim: HuaweiMpcSimulator, mode: str = "token", **extra: Any) -> HuaweiMpcProvider:
    settings = HuaweiMpcSettings.model_validate(provider_config(sim, mode, **extra))
    return HuaweiMpcProvider.build("mpc", settings)


def snapshot(provider: HuaweiMpcProvider, job_id: str) -> JobSnapshot:
    snap = provider.get_job(job_id)
    assert isinstance(snap, JobSnapshot)
    return snap


# -- the contract every adapter keeps (worker/simulators/contract.py) ----------------------


class TestHuaweiMpcContract(Contract):
    description = Description[HuaweiMpcSimulator](
        name="mpc",
        simulator=lambda: HuaweiMpcSimulator(
            PROJECT, token=TOKEN, access_key=ACCESS_KEY, secret_key=SECRET_KEY
        ),
        settings=provider_config,
        secrets=(TOKEN,),
        wrong_keys=(
            WrongKey(
                "wrong token",
                {"token": "MIIT-wrong-token-0000aaaa"},
                says=(r"401: APIGW\.0301", "credentials", "24 hours"),
            ),
            WrongKey(
                "wrong secret key",
                {"token": None, "access_key": ACCESS_KEY, "secret_key": "sk-wrong-secret-1234"},
                says=(r"401: APIGW\.0303", "verify signature fail", "credentials"),
                never_says=(SECRET_KEY, "canonicalRequest", "Signature="),
            ),
        ),
        add_finished_job=lambda sim: sim.add_task("SUCCEEDED"),
        add_job_saying=lambda sim, word: sim.add_task(word),
        read=Call("GET", "/transcodings$"),
        delete=Call("DELETE", "/transcodings/task$"),
        error_body=lambda code: {"error_code": code, "error_msg": "Simulated."},
        # MPC says "no such task" with an empty task_array: a 404 is never gone.
        bare_404_says=r"task {job} answered 404.*base_url",
    )


# -- signing -------------------------------------------------------------------------------


def test_the_documented_signing_example_is_reproduced_exactly() -> None:
    canonical = canonical_request("GET", DOC_PATH, DOC_QUERY, DOC_HEADERS, b"")

    assert hashlib.sha256(canonical.encode()).hexdigest() == DOC_HASH
    assert signature(DOC_SK, string_to_sign(canonical, "20191115T033655Z")) == DOC_SIGNATURE


def test_the_signer_puts_the_documented_signature_on_an_httpx_request() -> None:
    auth = SdkHmacSha256Auth(
        DOC_AK, DOC_SK, clock=lambda: datetime(2019, 11, 15, 3, 36, 55, tzinfo=UTC)
    )
    request = httpx.Request(
        "GET",
        "https://service.region.example.com" + DOC_PATH,
        params=dict(DOC_QUERY),
        headers={"Content-Type": "application/json"},
    )

    signed = next(auth.auth_flow(request))

    assert signed.headers["X-Sdk-Date"] == "20191115T033655Z"
    assert signed.headers["Authorization"] == (
        f"SDK-HMAC-SHA256 Access={DOC_AK}, SignedHeaders=content-type;host;x-sdk-date, "
        f"Signature={DOC_SIGNATURE}"
    )
    assert DOC_SK not in repr(auth)


def test_the_simulators_own_verifier_agrees_with_the_documented_example() -> None:
    query = {k: [v] for k, v in DOC_QUERY}
    canonical = gateway_canonical_request(
        "GET", DOC_PATH, query, DOC_HEADERS, sorted(DOC_HEADERS), b""
    )

    assert hashlib.sha256(canonical.encode()).hexdigest() == DOC_HASH
    assert gateway_signature(DOC_SK, "20191115T033655Z", canonical) == DOC_SIGNATURE


def test_the_signer_adds_the_project_header_and_signs_it() -> None:
    auth = SdkHmacSha256Auth(ACCESS_KEY, SECRET_KEY, PROJECT)
    request = httpx.Request("GET", f"https://mpc.example.com/v1/{PROJECT}/transcodings")

    signed = next(auth.auth_flow(request))

    assert signed.headers["X-Project_Id"] == PROJECT
    assert "SignedHeaders=host;x-project_id;x-sdk-date," in signed.headers["Authorization"]
    assert SECRET_KEY not in signed.headers["Authorization"]


def test_blank_values_and_reserved_characters_are_signed_as_the_gateway_checks_them(
    mpc_sim: HuaweiMpcSimulator,
) -> None:
    provider = adapter(mpc_sim, "aksk")
    params = [("status", ""), ("start_time", "2024 04+01/~é"), ("page", "0")]

    answer = provider.api.request("GET", provider.tasks_path, params=params)

    assert answer.status == 200
    assert len(mpc_sim.seen_signatures) == 1


# -- both auth modes, end to end ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_both_auth_modes_list_look_up_and_delete(mpc_sim: HuaweiMpcSimulator, mode: str) -> None:
    # given
    done = mpc_sim.add_task("SUCCEEDED")
    running = mpc_sim.add_task("TRANSCODING")
    provider = adapter(mpc_sim, mode)

    # when
    listed = [job for page in provider.list_jobs() for job in page]
    looked_up = provider.lookup([done, running, "9999999"])
    answer = provider.delete(done)

    # then
    assert {(j.job_id, j.phase) for j in listed} == {
        (done, Phase.SUCCEEDED),
        (running, Phase.RUNNING),
    }
    assert sorted(j.job_id for j in looked_up) == sorted([done, running])
    assert answer == Deleted(status_code=204, body=None)
    assert mpc_sim.deleted == [done]
    assert all(s.authorization and s.status < 400 for s in mpc_sim.requests)
    assert bool(mpc_sim.seen_signatures) == (mode == "aksk")


@pytest.mark.parametrize("mode", MODES)
def test_the_registry_builds_the_adapter_for_either_mode(
    mpc_sim: HuaweiMpcSimulator, mode: str
) -> None:
    settings = HuaweiMpcSettings.model_validate(provider_config(mpc_sim, mode))

    provider = build_provider("mpc", settings)

    assert isinstance(provider, HuaweiMpcProvider)
    provider.check_credentials()
    assert (provider.lists_jobs, provider.lookup_batch_size) == (True, 10)
    assert isinstance(provider.api.client.auth, SdkHmacSha256Auth) == (mode == "aksk")
    assert ("x-auth-token" in provider.api.client.headers) == (mode == "token")


# -- discovery -----------------------------------------------------------------------------


def test_the_listing_walks_every_page_until_is_truncated_is_zero(
    mpc_sim: HuaweiMpcSimulator,
) -> None:
    # given
    base = utcnow()
    ids = [
        mpc_sim.add_task(status, create_time=base - timedelta(minutes=10 - i))
        for i, status in enumerate(
            ("SUCCEEDED", "FAILED", "CANCELED", "WAITING", "NEED_TO_BE_AUDIT")
        )
    ]

    # when
    pages = list(adapter(mpc_sim, page_size=2).list_jobs())

    # then
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [job for page in pages for job in page]
    assert [j.job_id for j in listed] == list(reversed(ids))
    assert [j.phase for j in listed] == [
        Phase.RUNNING,
        Phase.RUNNING,
        Phase.FAILED,
        Phase.FAILED,
        Phase.SUCCEEDED,
    ]
    assert len(mpc_sim.seen("GET", "/transcodings$")) == 3


def test_an_empty_project_lists_nothing(mpc_sim: HuaweiMpcSimulator) -> None:
    assert list(adapter(mpc_sim).list_jobs()) == []


def test_a_lookup_asks_for_at_most_ten_ids_at_a_time(mpc_sim: HuaweiMpcSimulator) -> None:
    ids = [mpc_sim.add_task("SUCCEEDED") for _ in range(13)]
    unknown = [str(int(ids[-1]) + n) for n in range(1, 9)]

    found = adapter(mpc_sim).lookup([*ids, *unknown, "not-a-task"])

    assert sorted(j.job_id for j in found) == sorted(ids)
    assert len(mpc_sim.seen("GET", "/transcodings$")) == 3  # 21 numeric ids: 10 + 10 + 1


def test_the_simulator_refuses_more_than_ten_task_ids(mpc_sim: HuaweiMpcSimulator) -> None:
    provider = adapter(mpc_sim)
    with pytest.raises(ProviderRejected, match=r"400: MPC\.10202"):
        provider.api.request(
            "GET", provider.tasks_path, params=[("task_id", str(n)) for n in range(1, 12)]
        )


def test_a_listing_that_repeats_a_page_or_promises_more_than_it_has_is_refused(
    mpc_sim: HuaweiMpcSimulator,
) -> None:
    task = mpc_sim.add_task("SUCCEEDED")
    page = {"task_array": [{"task_id": task, "status": "SUCCEEDED"}], "is_truncated": 1}
    mpc_sim.inject(path="/transcodings$", status=200, body=page, times=2)
    with pytest.raises(BadResponse, match="page 1 with the page before"):
        list(adapter(mpc_sim).list_jobs())

    mpc_sim.inject(path="/transcodings$", status=200, body={"task_array": [], "is_truncated": 1})
    with pytest.raises(BadResponse, match="more follow, but page 0 is empty"):
        list(adapter(mpc_sim).list_jobs())


# -- status --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("SUCCEEDED", Phase.SUCCEEDED),
        ("FAILED", Phase.FAILED),
        ("CANCELED", Phase.FAILED),
        ("WAITING", Phase.RUNNING),
        ("TRANSCODING", Phase.RUNNING),
        ("NEED_TO_BE_AUDIT", Phase.RUNNING),
        ("PAUSED", Phase.UNKNOWN),
        ("", Phase.UNKNOWN),
    ],
)
def test_statuses_translate_and_unknown_ones_are_never_terminal(
    mpc_sim: HuaweiMpcSimulator, status: str, phase: Phase
) -> None:
    task = mpc_sim.add_task(status)

    snap = snapshot(adapter(mpc_sim), task)

    assert (snap.job_id, snap.status, snap.phase) == (task, status, phase)
    assert snap.terminal == (phase in (Phase.SUCCEEDED, Phase.FAILED))


def test_the_retention_clock_starts_at_end_time_read_as_utc(mpc_sim: HuaweiMpcSimulator) -> None:
    task = mpc_sim.add_task("SUCCEEDED", end_time="20240401002011")

    snap = snapshot(adapter(mpc_sim), task)

    assert snap.finished_at == datetime(2024, 4, 1, 0, 20, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    ("end_time", "expected"),
    [
        ("", None),
        ("2024-04-01 00:20:11", None),
        ("20241301002011", None),
        ("2024040100201", None),
        (None, None),
        (20240401002011, datetime(2024, 4, 1, 0, 20, 11, tzinfo=UTC)),
    ],
)
def test_an_empty_or_odd_end_time_gives_no_finish_time(end_time: object, expected: object) -> None:
    assert finished_at_of(end_time) == expected


def test_a_running_task_has_no_finish_time(mpc_sim: HuaweiMpcSimulator) -> None:
    task = mpc_sim.add_task("TRANSCODING")
    assert snapshot(adapter(mpc_sim), task).finished_at is None


def test_a_task_that_does_not_exist_is_gone(mpc_sim: HuaweiMpcSimulator) -> None:
    gone = adapter(mpc_sim).get_job("31415926")

    assert isinstance(gone, JobGone)
    assert at(gone.answer, "body", "task_array") == []


def test_an_id_that_cannot_be_a_task_is_refused_without_asking_mpc(
    mpc_sim: HuaweiMpcSimulator,
) -> None:
    provider = adapter(mpc_sim)
    for call in (provider.get_job, provider.delete):
        with pytest.raises(ProviderRejected, match="whole numbers") as caught:
            call("../1")
        assert caught.value.permanent
    assert mpc_sim.requests == []


# -- archive -------------------------------------------------------------------------------


def test_the_task_record_is_what_is_archived_and_nothing_is_downloaded(
    mpc_sim: HuaweiMpcSimulator,
) -> None:
    task = mpc_sim.add_task("SUCCEEDED", output_file_name=["ok_7000523.mp4"])
    provider = adapter(mpc_sim)

    snap = snapshot(provider, task)

    assert provider.artifacts(snap) == []
    with pytest.raises(WorkerError, match="no provider-hosted artifacts"):
        provider.open_artifact(Artifact("x", "x", ProviderOrigin("/x")))
    assert snap.record["task_id"] == task
    assert at(snap.record, "output", "object") == f"out/{task}"
    assert snap.record["output_file_name"] == ["ok_7000523.mp4"]
    assert len(mpc_sim.requests) == 1


OBS = {"bucket": "out-bkt", "location": "cn-north-4", "object": "out/thumbs"}


def test_every_field_naming_the_users_obs_objects_is_known_not_to_be_destroyed(
    mpc_sim: HuaweiMpcSimulator,
) -> None:
    # given a task whose record names files in every documented OBS field
    task = mpc_sim.add_task(
        "SUCCEEDED",
        output_file_name=["ok_7000523.mp4", "ok_thumb.jpg"],
        extra={
            "thumbnail_output": OBS,
            "thumbnail_outputname": "thumbs.zip",
            "output_url": "https://out-bkt.obs.cn-north-4.myhuaweicloud.com/out/qc.json",
            "pic_info": [{"pic_name": "out/thumbs/1.jpg"}],
            "transcode_detail": {
                "multitask_info": [
                    {
                        "template_id": 7000523,
                        "error": {"error_code": "", "error_msg": ""},
                        "output_file": {"format": "MP4", "size": 1024, "duration": 12},
                    }
                ],
                "input_file": {"format": "MP4", "size": 2048, "duration": 12},
            },
            "user_data": "callback https://acme.example/hook",
        },
    )
    provider = adapter(mpc_sim)

    # when its outputs are asked for, then there is nothing to archive and nothing kept
    assert provider.artifacts(snapshot(provider, task)) == []


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"download_url": "https://mpc.example/dl/3273178.mp4?token=t0k3n"}, "download_url"),
        ({"audit_report": {"report_url": "https://mpc.example/audit/1.json"}}, "audit_report"),
        ({"preview": "https://mpc-cdn.example/preview.mp4"}, "preview"),
    ],
)
def test_a_task_that_names_a_file_outside_its_obs_fields_keeps_the_task(
    mpc_sim: HuaweiMpcSimulator, extra: dict[str, Any], path: str
) -> None:
    # given a task whose record carries a link to data MPC might host
    task = mpc_sim.add_task("SUCCEEDED", output_file_name=["ok.mp4"], extra=extra)
    provider = adapter(mpc_sim)

    # when its outputs are asked for
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, task))

    # then the task is kept, naming the field, without the link itself
    assert caught.value.reason == "unrecognised_output"
    message = str(caught.value)
    assert message.startswith(f"mpc job {task}: unrecognised output `{path}")
    assert "t0k3n" not in message
    assert "https://" not in message

    # and once the operator accepts losing that field, the record alone is archived
    accepted = adapter(mpc_sim, ignore_outputs=[path])
    assert accepted.artifacts(snapshot(accepted, task)) == []


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"output": {**OBS, "Key": "out/ok/copy.mp4"}}, "output.Key"),
        (
            {"pic_info": [{"pic_name": "1.jpg", "pic_url": "https://mpc.example/1.jpg"}]},
            "pic_info[0].pic_url",
        ),
        (
            {"transcode_detail": {"preview_url": "https://mpc.example/p.mp4"}},
            "transcode_detail.preview_url",
        ),
    ],
)
def test_a_field_the_sdk_does_not_document_inside_an_obs_field_keeps_the_task(
    mpc_sim: HuaweiMpcSimulator, extra: dict[str, Any], path: str
) -> None:
    # given a task whose OBS fields gain a field Huawei's SDK does not document: whether it
    # names an object in the user's bucket or one MPC hosts, nobody can tell
    task = mpc_sim.add_task("SUCCEEDED", output_file_name=["ok.mp4"], extra=extra)
    provider = adapter(mpc_sim)

    # when its outputs are asked for, then the task is kept, naming the field
    with pytest.raises(Kept, match=re.escape(f"unrecognised output `{path}`")):
        provider.artifacts(snapshot(provider, task))


def test_the_outputs_in_the_users_obs_bucket_outlive_the_delete(
    obs_sim: HuaweiMpcSimulator, s3: S3Client, custom_bucket: str
) -> None:
    video = bytes(range(256)) * 64
    task = obs_sim.add_task("SUCCEEDED", outputs=[("ok_7000523.mp4", video)])

    assert isinstance(adapter(obs_sim, "aksk").delete(task), Deleted)

    assert objects(s3, custom_bucket) == {f"out/{task}/ok_7000523.mp4": video}


# -- delete --------------------------------------------------------------------------------


@pytest.mark.parametrize("unknown_answer", [400, 404])
def test_delete_answers_204_then_the_task_is_already_gone(
    mpc_sim: HuaweiMpcSimulator, unknown_answer: Any
) -> None:
    # given
    mpc_sim.unknown_task_delete = unknown_answer
    task = mpc_sim.add_task("FAILED", description="Transcoding failed.")
    provider = adapter(mpc_sim)

    # when
    first = provider.delete(task)
    second = provider.delete(task)

    # then
    assert first == Deleted(status_code=204, body=None)
    assert isinstance(second, AlreadyGone)
    assert second.status_code == unknown_answer
    assert mpc_sim.deleted == [task]
    assert mpc_sim.deletes_of(task) == 2


def test_a_task_not_in_a_final_state_defers_the_delete_until_it_is(
    mpc_sim: HuaweiMpcSimulator,
) -> None:
    # given
    task = mpc_sim.add_task("TRANSCODING")
    provider = adapter(mpc_sim, "aksk")

    # when
    with pytest.raises(ProviderError, match=r"not in a final state \(MPC\.10213\)") as caught:
        provider.delete(task)

    # then
    assert not caught.value.permanent
    assert "tried again" in str(caught.value)
    assert mpc_sim.deleted == []

    # when it is final, the next attempt deletes it
    mpc_sim.set_status(task, "SUCCEEDED")
    assert provider.delete(task) == Deleted(status_code=204, body=None)
    assert mpc_sim.deleted == [task]


def test_another_refusal_of_a_task_that_still_exists_names_its_code(
    mpc_sim: HuaweiMpcSimulator,
) -> None:
    # given
    task = mpc_sim.add_task("SUCCEEDED")
    mpc_sim.inject(
        method="DELETE",
        path="/transcodings/task$",
        status=400,
        body={"error_code": "MPC.10205", "error_msg": "Incorrect content type."},
    )

    # when
    with pytest.raises(ProviderRejected, match=r"400: MPC\.10205") as caught:
        adapter(mpc_sim).delete(task)

    # then
    assert caught.value.permanent
    assert mpc_sim.deleted == []


def test_a_404_from_the_gateway_is_not_taken_for_a_deleted_task(
    mpc_sim: HuaweiMpcSimulator,
) -> None:
    task = mpc_sim.add_task("SUCCEEDED")
    mpc_sim.inject(
        method="DELETE",
        path="/transcodings/task$",
        status=404,
        body={"error_code": "APIGW.0101", "error_msg": "The API does not exist", "request_id": "1"},
    )

    with pytest.raises(ProviderRejected, match=r"404: APIGW\.0101"):
        adapter(mpc_sim).delete(task)


# -- credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize(("minutes", "accepted"), [(14, True), (16, False)])
def test_a_signature_more_than_15_minutes_off_is_expired(
    mpc_sim: HuaweiMpcSimulator, minutes: int, accepted: bool
) -> None:
    provider = adapter(mpc_sim, "aksk")
    provider.api.client.auth = SdkHmacSha256Auth(
        ACCESS_KEY, SECRET_KEY, PROJECT, clock=lambda: utcnow() - timedelta(minutes=minutes)
    )

    if accepted:
        provider.check_credentials()
        return
    with pytest.raises(ProviderRejected, match=r"signature expired.*clock") as caught:
        provider.check_credentials()
    assert SECRET_KEY not in str(caught.value)


def test_a_signature_made_for_another_project_is_refused(mpc_sim: HuaweiMpcSimulator) -> None:
    provider = adapter(mpc_sim, "aksk")
    provider.api.client.auth = SdkHmacSha256Auth(ACCESS_KEY, SECRET_KEY, "another-project")

    with pytest.raises(ProviderRejected, match=r"403: MPC\.10208"):
        provider.check_credentials()


# -- transient failures --------------------------------------------------------------------


def test_a_429_is_retried_and_the_retry_is_signed_afresh(mpc_sim: HuaweiMpcSimulator) -> None:
    task = mpc_sim.add_task("SUCCEEDED")
    mpc_sim.inject(path="/transcodings$", status=429, body=THROTTLED_BODY)

    assert isinstance(adapter(mpc_sim, "aksk").get_job(task), JobSnapshot)

    assert [s.status for s in mpc_sim.requests] == [429, 200]
    assert len(set(mpc_sim.seen_signatures)) == 1  # only the retry reached the verifier


# -- malformed answers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tasks": []}, "no list field 'task_array'"),
        ({"task_array": [{"status": "SUCCEEDED"}]}, "no task_id made of digits"),
        ({"task_array": [{"task_id": "12a", "status": "FAILED"}]}, "no task_id made of digits"),
        ({"task_array": ["12"]}, "not a JSON object"),
        ({"task_array": [{"task_id": "1", "status": "SUCCEEDED"}]}, "answered with task"),
    ],
)
def test_malformed_answers_are_bad_responses(
    mpc_sim: HuaweiMpcSimulator, body: object, message: str
) -> None:
    task = mpc_sim.add_task("SUCCEEDED")
    mpc_sim.inject(path="/transcodings$", status=200, body=body)

    with pytest.raises(BadResponse, match=message):
        adapter(mpc_sim).get_job(task)


@pytest.mark.parametrize(
    "body",
    [
        {"task_array": []},
        {"task_array": [], "is_truncated": 2},
        {"task_array": [], "is_truncated": True},
        {"task_array": [], "is_truncated": "0"},
    ],
)
def test_a_listing_without_a_clear_is_truncated_is_a_bad_response(
    mpc_sim: HuaweiMpcSimulator, body: object
) -> None:
    mpc_sim.inject(path="/transcodings$", status=200, body=body)

    with pytest.raises(BadResponse, match="is_truncated"):
        list(adapter(mpc_sim).list_jobs())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=16),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["task_array", "is_truncated", "total", "task_id", "status", "end_time", "x"]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(answer=json_values, paged=st.booleans())
def test_any_answer_shape_either_parses_or_is_a_bad_response(
    answer: JSONValue, paged: bool
) -> None:
    try:
        tasks, more = tasks_of(answer, what="an answer", paged=paged)
    except BadResponse:
        return
    assert isinstance(more, bool)
    for task in tasks:
        assert task.task_id.isdigit()
        assert isinstance(task.phase, Phase)
        assert task.finished_at is None or task.finished_at.tzinfo is UTC


# -- through the pipeline ------------------------------------------------------------------


def runtime(
    sim: HuaweiMpcSimulator, mode: str, bucket: str, s3_server: S3Server, db: Path
) -> Runtime:
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=f"sqlite:///{db}",
        providers={"mpc": provider_config(sim, mode)},
    )
    return build_runtime(settings_of(data))


@pytest.mark.parametrize("mode", MODES)
def test_a_sweep_archives_each_final_task_record_then_deletes_it_in_either_mode(
    mpc_sim: HuaweiMpcSimulator,
    mode: str,
    bucket: str,
    s3: S3Client,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    # given
    final = {s: mpc_sim.add_task(s) for s in ("SUCCEEDED", "FAILED", "CANCELED")}
    kept = [mpc_sim.add_task(s) for s in ("WAITING", "TRANSCODING", "NEED_TO_BE_AUDIT", "PAUSED")]
    rt = runtime(mpc_sim, mode, bucket, s3_server, tmp_path / "ledger.db")

    # when
    try:
        report = sweep_provider(rt, "mpc")
    finally:
        rt.close()

    # then
    assert (report.counts["deleted_now"], report.counts[Outcome.FAILED]) == (3, 0)
    assert sorted(mpc_sim.deleted) == sorted(final.values())
    assert sorted(mpc_sim.tasks) == sorted(kept)
    stored = objects(s3, bucket)
    for status, task in final.items():
        manifest = json.loads(stored[f"archive/mpc/{task}/manifest.json"])
        assert (manifest["job"]["task_id"], manifest["job"]["status"]) == (task, status)
        assert manifest["files"] == []
        assert f"archive/mpc/{task}/deletion.json" in stored
    everything = b"".join(stored.values())
    for secret in (TOKEN, SECRET_KEY, ACCESS_KEY, *mpc_sim.seen_signatures):
        assert secret.encode() not in everything


@pytest.mark.parametrize(
    "fault",
    [
        {"method": "DELETE", "path": "/transcodings/task$", "status": 400, "body": NOT_FINAL_BODY},
        {"method": "DELETE", "path": "/transcodings/task$", "status": 429, "body": THROTTLED_BODY},
        {"method": "GET", "path": "/transcodings$", "status": 502, "body": {}},
    ],
    ids=["MPC.10213", "429-at-delete", "502-at-read"],
)
def test_a_refusal_or_outage_ends_in_success_on_a_later_attempt(
    mpc_sim: HuaweiMpcSimulator,
    fault: dict[str, Any],
    bucket: str,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    # given: an answer that outlasts the inline retries
    task = mpc_sim.add_task("SUCCEEDED", end_time=utcnow() - timedelta(days=30))
    rt = runtime(mpc_sim, "aksk", bucket, s3_server, tmp_path / "ledger.db")
    provider = rt.providers["mpc"]
    assert isinstance(provider, HuaweiMpcProvider)
    provider.api.attempts = 1
    mpc_sim.inject(**fault)

    # when
    try:
        first = process_again(rt, "mpc", task)
        second = process_again(rt, "mpc", task)
    finally:
        rt.close()

    # then
    assert (first.outcome, second.outcome) == (Outcome.DEFERRED, Outcome.DELETED)
    assert first.error is not None
    assert "MPC.10213" in first.error or "APIGW.0308" in first.error or "answered 5" in first.error
    assert mpc_sim.deleted == [task]


def test_the_simulators_flow_control_answers_like_the_gateway(
    mpc_sim: HuaweiMpcSimulator,
) -> None:
    mpc_sim.rate_limit = (1, 60.0)
    provider = adapter(mpc_sim, "aksk")
    provider.api.attempts = 1
    provider.check_credentials()

    with pytest.raises(RateLimited, match=r"429\): APIGW\.0308"):
        provider.check_credentials()
