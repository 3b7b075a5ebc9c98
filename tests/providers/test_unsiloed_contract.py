"""The Unsiloed adapter against the Unsiloed simulator, over real HTTP."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.helpers import config_data, objects, settings_of
from worker.bootstrap import Runtime, build_runtime
from worker.domain import (
    AlreadyGone,
    Artifact,
    Deleted,
    JobGone,
    JobSnapshot,
    LinkOrigin,
    Phase,
    ProviderOrigin,
)
from worker.errors import (
    BadResponse,
    DownloadError,
    Kept,
    ProviderError,
    ProviderRejected,
    RateLimited,
    WorkerError,
)
from worker.fetch import Download, Fetcher, check_response, make_download_client
from worker.job import process_job
from worker.outcomes import Outcome
from worker.providers import base, build_provider
from worker.providers.base import HttpApi
from worker.providers.unsiloed import (
    UnsiloedProvider,
    error_detail_for,
    phase_of,
    sha256_of,
)
from worker.settings import DownloadSettings, Settings
from worker.simulators.blobs import Blob
from worker.simulators.contract import Call, Contract, Description, WrongKey
from worker.simulators.unsiloed import ErrorShape, UnknownRoute, UnsiloedSimulator
from worker.specs.unsiloed import UnsiloedSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.simulators.s3server import S3Server

KEY = "unsiloed-test-key-3b7e91d4"
TEAMMATE = "unsiloed-teammate-key-0c44a8"
# Adapters a test built, closed before its simulator stops so no connection is cut mid-way.
BUILT: list[UnsiloedProvider] = []
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"


@pytest.fixture
def sim() -> Iterator[UnsiloedSimulator]:
    server = UnsiloedSimulator(KEY, other_keys=(TEAMMATE,))
    server.start()
    yield server
    while BUILT:
        BUILT.pop().close()
    server.stop()


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry at once: these tests are about what is retried, not how long the backoff is."""
    monkeypatch.setattr(base, "_wait", lambda state: 0.01)


def adapter(
    sim: UnsiloedSimulator, *, key: str = KEY, attempts: int | None = None, **extra: Any
) -> UnsiloedProvider:
    settings = UnsiloedSettings.model_validate(
        {"type": "unsiloed", "base_url": sim.base_url, "api_key": key, **extra}
    )
    provider = UnsiloedProvider.build("unsiloed", settings)
    BUILT.append(provider)
    if attempts is not None:
        provider.api.attempts = attempts
    return provider


def snapshot(provider: UnsiloedProvider, job_id: str) -> JobSnapshot:
    snap = provider.get_job(job_id)
    assert isinstance(snap, JobSnapshot)
    return snap


def fetch(url: str) -> bytes:
    settings = DownloadSettings(allow_private_networks=True)
    with make_download_client(settings) as client, Fetcher(client, settings).open(url) as download:
        return b"".join(download.chunks())


# -- the contract every adapter keeps (worker/simulators/contract.py) ----------------------


class TestUnsiloedContract(Contract):
    description = Description[UnsiloedSimulator](
        name="unsiloed",
        simulator=lambda: UnsiloedSimulator(KEY, other_keys=(TEAMMATE,)),
        settings=lambda sim: sim.provider_table(),
        secrets=(KEY,),
        wrong_keys=(
            WrongKey(
                "wrong key",
                {"api_key": "wrong-key-123456"},
                says=("401: Invalid API key", "credentials"),
            ),
        ),
        add_finished_job=lambda sim: sim.add_job(
            "completed", result={"x": {"value": 1}}, document=PDF
        ),
        add_job_saying=lambda sim, word: sim.add_job(word, result={"x": {"value": 1}}),
        read=Call("GET", "^/jobs/[^/]+$"),
        delete=Call("DELETE", "^/jobs/[^/]+$"),
        error_body=lambda code: {"detail": code},
        bare_404_says=r"^unsiloed job {job}: .*not Unsiloed's.*base_url",
        downloads="^/files/",
    )


def open_result(provider: UnsiloedProvider, job_id: str) -> bytes:
    """result.json as the pipeline reads it: open_artifact, check, stream the raw bytes."""
    (result, *_rest) = provider.artifacts(snapshot(provider, job_id))
    with provider.open_artifact(result) as response:
        check_response(response, result.source)
        download = Download(
            response, source=result.source, expected_size=None, deadline=time.monotonic() + 30
        )
        return b"".join(download.chunks())


# -- discovery and configuration -------------------------------------------------------------


def test_there_is_no_listing_so_jobs_come_from_tracking(sim: UnsiloedSimulator) -> None:
    sim.add_job("completed")
    provider = adapter(sim)
    assert provider.lists_jobs is False
    assert list(provider.list_jobs()) == []
    assert provider.lookup(["a", "b"]) == []
    assert sim.requests == []
    # The simulator has no list endpoint either, as the docs say.
    answer = httpx.get(f"{sim.base_url}/jobs", headers={"X-API-Key": KEY})
    assert answer.status_code == 404


def test_the_registry_builds_the_adapter_from_its_settings(sim: UnsiloedSimulator) -> None:
    settings = UnsiloedSettings(type="unsiloed", base_url=sim.base_url, api_key=SecretStr(KEY))
    provider = build_provider("vision", settings)
    assert isinstance(provider, UnsiloedProvider)
    BUILT.append(provider)
    assert provider.name == "vision"
    assert (
        Settings.model_validate(
            {"archive": {"bucket": "archive"}, "providers": {"vision": settings.model_dump()}}
        )
        .policy("vision")
        .rate_limit
        == "100/minute"
    )
    assert UnsiloedSettings.model_validate({"type": "unsiloed", "api_key": KEY}).base_url == (
        "https://visionapi.unsiloed.ai"
    )


def test_every_api_call_carries_the_key_as_x_api_key(sim: UnsiloedSimulator) -> None:
    # given a simulator that accepts only X-API-Key, not the FAQ's Bearer form
    sim.accept_bearer = False
    job_id = sim.add_job("completed", result={"total": {"value": 1}}, document=PDF)
    provider = adapter(sim)

    # when the whole life of a job goes through it
    provider.check_credentials()
    artifacts = provider.artifacts(snapshot(provider, job_id))
    open_result(provider, job_id)
    assert isinstance(artifacts[1].origin, LinkOrigin)
    fetch(artifacts[1].origin.url)
    assert isinstance(provider.delete(job_id), Deleted)

    # then every API request was accepted, and no download carried a credential
    api = [s for s in sim.requests if not s.path.startswith("/files/")]
    assert {s.status for s in api} <= {200, 404}
    assert all(s.authorization for s in api)
    assert sim.seen("GET", "^/files/")
    assert not any(s.authorization for s in sim.seen("GET", "^/files/"))


def test_the_simulator_accepts_the_faqs_bearer_form_too(sim: UnsiloedSimulator) -> None:
    job_id = sim.add_job("queued")
    answer = httpx.get(f"{sim.base_url}/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200
    assert answer.json()["status"] == "queued"


# -- status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("completed", Phase.SUCCEEDED),
        ("COMPLETED", Phase.SUCCEEDED),
        ("Completed", Phase.SUCCEEDED),
        ("failed", Phase.FAILED),
        ("FAILED", Phase.FAILED),
        ("queued", Phase.RUNNING),
        ("QUEUED", Phase.RUNNING),
        ("processing", Phase.RUNNING),
        ("PROCESSING", Phase.RUNNING),
        ("review", Phase.RUNNING),
        ("Review", Phase.RUNNING),
        ("archived", Phase.UNKNOWN),
        ("cancelled", Phase.UNKNOWN),
        ("", Phase.UNKNOWN),
    ],
)
def test_statuses_translate_case_insensitively_and_unknown_ones_stay_unknown(
    sim: UnsiloedSimulator, status: str, phase: Phase
) -> None:
    sim.status_case = "as-given"
    job_id = sim.add_job(status)
    snap = snapshot(adapter(sim), job_id)
    assert (snap.status, snap.phase) == (status, phase)
    assert snap.terminal == (phase in (Phase.SUCCEEDED, Phase.FAILED))


def test_a_job_in_review_is_not_terminal(sim: UnsiloedSimulator) -> None:
    job_id = sim.add_job("review", result={"total": {"value": 1, "score": 0.4}})
    snap = snapshot(adapter(sim), job_id)
    assert snap.phase == Phase.RUNNING
    assert not snap.terminal


@pytest.mark.parametrize(
    ("case", "served"),
    [
        ("status-page", ["queued", "PROCESSING", "COMPLETED", "FAILED"]),
        ("upper", ["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]),
        ("lower", ["queued", "processing", "completed", "failed"]),
    ],
)
def test_each_documented_casing_reads_the_same(
    sim: UnsiloedSimulator, case: Any, served: list[str]
) -> None:
    sim.status_case = case
    ids = [sim.add_job(s) for s in ("queued", "processing", "completed", "failed")]
    provider = adapter(sim)
    snaps = [snapshot(provider, job_id) for job_id in ids]
    assert [s.status for s in snaps] == served
    assert [s.phase for s in snaps] == [Phase.RUNNING, Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED]


def test_the_retention_clock_starts_at_updated_at(sim: UnsiloedSimulator) -> None:
    updated = datetime(2024, 1, 15, 10, 30, 0, 250_000, tzinfo=UTC)
    job_id = sim.add_job(
        "completed", created_at=datetime(2024, 1, 15, tzinfo=UTC), updated_at=updated
    )
    snap = snapshot(adapter(sim), job_id)
    assert snap.record["updated_at"] == "2024-01-15T10:30:00.250Z"
    assert snap.finished_at == updated


@pytest.mark.parametrize(
    "updated_at", ["yesterday", "2024-01-15T10:30:00", "", "2024-13-45T00:00Z"]
)
def test_an_unusable_updated_at_leaves_the_clock_to_the_worker(
    sim: UnsiloedSimulator, updated_at: str
) -> None:
    job_id = sim.add_job("completed", updated_at=updated_at)
    assert snapshot(adapter(sim), job_id).finished_at is None


def test_a_job_that_does_not_exist_is_gone(sim: UnsiloedSimulator) -> None:
    gone = adapter(sim).get_job("b2094b38-e432-44b6-a5d0-67bed07d5de1")
    assert isinstance(gone, JobGone)
    assert gone.answer["status_code"] == 404


def test_the_record_is_kept_whole_for_the_manifest(sim: UnsiloedSimulator) -> None:
    job_id = sim.add_job("failed", error="Unsupported file type", file_name="scan.tiff")
    record = snapshot(adapter(sim), job_id).record
    assert record["id"] == job_id
    assert record["error"] == "Unsupported file type"
    assert record["pdf_name"] == "scan.tiff"
    assert {"type", "created_at", "updated_at", "user_id"} <= set(record)


# -- outputs ---------------------------------------------------------------------------------


def test_a_completed_job_yields_its_result_and_its_source_document(
    sim: UnsiloedSimulator,
) -> None:
    # given a completed job with an uploaded document
    result = {"invoice_number": {"value": "INV-001", "score": 0.98}}
    job_id = sim.add_job("completed", result=result, document=PDF, file_name="invoice.pdf")
    provider = adapter(sim)

    # when its artifacts are listed
    artifacts = provider.artifacts(snapshot(provider, job_id))

    # then result.json comes from the API and the document from its signed link
    assert [a.name for a in artifacts] == ["result.json", "source/invoice.pdf"]
    first, document = artifacts
    assert first.origin == ProviderOrigin(path=f"/jobs/{job_id}/result")
    assert first.source == f"{sim.base_url}/jobs/{job_id}/result"
    assert first.size is None  # each read presigns a new file_url, so the length varies
    assert isinstance(document.origin, LinkOrigin)
    assert document.source.startswith(f"{sim.base_url}/files/")
    assert "?" not in document.source
    assert not any(sig in a.source for a in artifacts for sig in sim.issued_signatures)
    assert fetch(document.origin.url) == PDF


def test_result_json_is_stored_byte_for_byte_as_served(sim: UnsiloedSimulator) -> None:
    # given a result with whitespace, key order and numbers a JSON round trip would change
    served = (
        b'{\n   "zeta" : 1.50,\t"job_id":"JOB",\r\n  "file_url" : "{{file_url}}",'
        b'  "result": {"b": 1e3, "a": "caf\\u00e9 \xe2\x82\xac", "a": 2}\n}\n  '
    )
    job_id = sim.add_job("completed", job_id="JOB", result=served, document=PDF)
    provider = adapter(sim)

    # when the pipeline's way of opening it is followed
    stored = open_result(provider, job_id)

    # then the bytes are the ones the simulator served for that read
    assert stored == sim.results_served[-1][1]
    assert stored.startswith(b'{\n   "zeta" : 1.50,\t"job_id":"JOB",\r\n  "file_url" : "http')
    assert stored.endswith(b'"a": 2}\n}\n  ')
    assert json.dumps(json.loads(stored)).encode() != stored


def test_a_large_result_is_read_past_the_usual_answer_cap(sim: UnsiloedSimulator) -> None:
    pages = [{"page_no": i, "text": "x" * 1000} for i in range(18_000)]  # about 18 MB
    job_id = sim.add_job("completed", result={"pages": pages}, document=PDF)
    provider = adapter(sim)
    artifacts = provider.artifacts(snapshot(provider, job_id))
    assert [a.name for a in artifacts] == ["result.json", "source/document.pdf"]
    assert len(sim.results_served[-1][1]) > 16 * 1024 * 1024


def test_a_large_source_document_streams_intact(sim: UnsiloedSimulator) -> None:
    blob = Blob(3 * 1024 * 1024 + 11, seed=5)
    job_id = sim.add_job("completed", result={}, document=blob, file_name="big.pdf")
    provider = adapter(sim)
    (_, document) = provider.artifacts(snapshot(provider, job_id))
    assert isinstance(document.origin, LinkOrigin)
    assert fetch(document.origin.url) == blob.read()


@pytest.mark.parametrize(
    "served",
    [
        None,  # today's envelope, without file_url
        b'{"job_id": "J", "file_url": null, "result": {}}',
        b'{"data": {"total": {"value": 3}}, "processing_time": 1.2, "detections": []}',
    ],
    ids=["no-file-url", "null-file-url", "older-shape"],
)
def test_a_completed_job_whose_result_links_no_source_document_is_kept(
    sim: UnsiloedSimulator, served: bytes | None
) -> None:
    # given a completed job whose result gives no link to its source document, which
    # Unsiloed's delete removes with the result ("all associated data")
    job_id = sim.add_job("completed", job_id="J", result=served or {"x": {"value": 1}})
    provider = adapter(sim)

    # when its outputs are asked for
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, job_id))

    # then it is kept, saying how to accept losing the document
    assert caught.value.reason == "no_source"
    assert not caught.value.permanent
    message = str(caught.value)
    assert message.startswith("unsiloed job J: the result gives no file_url")
    assert "nothing deleted" in message
    assert '"file_url" to ignore_outputs' in message

    # and once the operator accepts losing it, the result alone is archived
    accepted = adapter(sim, ignore_outputs=["file_url"])
    assert [a.name for a in accepted.artifacts(snapshot(accepted, job_id))] == ["result.json"]


def test_a_source_document_the_operator_accepts_losing_is_not_archived(
    sim: UnsiloedSimulator,
) -> None:
    job_id = sim.add_job("completed", result={"x": {"value": 1}}, document=PDF)
    provider = adapter(sim, ignore_outputs=["file_url"])
    artifacts = provider.artifacts(snapshot(provider, job_id))
    assert [a.name for a in artifacts] == ["result.json"]


@pytest.mark.parametrize(
    ("result", "pdf_name", "name"),
    [
        (
            b'{"file_name": "a.pdf", "pdf_name": "b.pdf", "file_url": "{{file_url}}"}',
            "c.pdf",
            "a.pdf",
        ),
        (b'{"pdf_name": "b.pdf", "file_url": "{{file_url}}"}', "c.pdf", "b.pdf"),
        (b'{"file_name": null, "file_url": "{{file_url}}"}', "c.pdf", "c.pdf"),
        (b'{"file_name": "", "file_url": "{{file_url}}"}', None, "document"),
    ],
)
def test_the_source_document_is_named_from_the_best_name_given(
    sim: UnsiloedSimulator, result: bytes, pdf_name: str | None, name: str
) -> None:
    job_id = sim.add_job("completed", result=result, document=PDF, file_name=None)
    sim.jobs[job_id].pdf_name = pdf_name
    provider = adapter(sim)
    (_, document) = provider.artifacts(snapshot(provider, job_id))
    assert document.name == f"source/{name}"


def test_a_failed_unsiloed_job_is_kept_by_default(sim: UnsiloedSimulator) -> None:
    # given a failed job: no result, and a source document the delete would remove
    job_id = sim.add_job("failed", document=PDF)
    provider = adapter(sim)

    # when its outputs are asked for
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, job_id))

    # then it is kept, saying how to let such jobs be deleted, and no result was asked for
    assert caught.value.reason == "failed_job"
    assert not caught.value.permanent
    message = str(caught.value)
    assert message.startswith(f"unsiloed job {job_id}: the job failed")
    assert "nothing deleted" in message
    assert "delete_failed_jobs = true" in message
    assert sim.seen("GET", "/result$") == []


def test_a_failed_job_may_be_deleted_with_its_record_alone_when_the_operator_says_so(
    sim: UnsiloedSimulator,
) -> None:
    # (before delete_failed_jobs, every failed job was deleted this way)
    sim.status_case = "status-page"
    job_id = sim.add_job("failed", document=PDF)
    provider = adapter(sim, delete_failed_jobs=True)
    snap = snapshot(provider, job_id)
    assert snap.status == "FAILED"
    assert provider.artifacts(snap) == []
    assert sim.seen("GET", "/result$") == []


def test_outputs_of_a_job_that_is_not_terminal_are_refused(sim: UnsiloedSimulator) -> None:
    job_id = sim.add_job("review", result={"x": 1})
    provider = adapter(sim)
    with pytest.raises(WorkerError, match="not terminal") as caught:
        provider.artifacts(snapshot(provider, job_id))
    assert caught.value.permanent


def test_the_simulator_refuses_a_result_before_completion(sim: UnsiloedSimulator) -> None:
    job_id = sim.add_job("processing")
    answer = httpx.get(f"{sim.base_url}/jobs/{job_id}/result", headers={"X-API-Key": KEY})
    assert answer.status_code == 400
    assert "completed" in answer.json()["detail"]
    sim.result_not_ready_status = 200
    answer = httpx.get(f"{sim.base_url}/jobs/{job_id}/result", headers={"X-API-Key": KEY})
    assert (answer.status_code, answer.json()["result"]) == (200, None)


def test_the_simulator_can_refuse_to_delete_a_running_job(sim: UnsiloedSimulator) -> None:
    sim.delete_while_running = False
    job_id = sim.add_job("processing")
    answer = httpx.delete(f"{sim.base_url}/jobs/{job_id}", headers={"X-API-Key": KEY})
    assert answer.status_code == 409
    assert sim.deleted == []


def test_the_source_document_carries_the_sha256_unsiloed_declared(sim: UnsiloedSimulator) -> None:
    # given a completed job whose record says pdf_hash "sha256:<hex>" of its document
    job_id = sim.add_job("completed", result={}, document=PDF)
    provider = adapter(sim)
    snap = snapshot(provider, job_id)
    assert snap.record["pdf_hash"] == "sha256:" + hashlib.sha256(PDF).hexdigest()

    # when its outputs are listed
    result, document = provider.artifacts(snap)

    # then the document carries the digest for the pipeline to check; the result none
    assert document.sha256 == hashlib.sha256(PDF).hexdigest()
    assert result.sha256 is None


def test_a_blob_documents_real_sha256_is_declared_when_the_simulator_hashes_blobs() -> None:
    blob = Blob(2 * 1024 * 1024 + 3, seed=9)
    server = UnsiloedSimulator(KEY, hash_blobs=True)
    server.start()
    try:
        job_id = server.add_job("completed", result={}, document=blob)
        provider = adapter(server)
        (_, document) = provider.artifacts(snapshot(provider, job_id))
        assert document.sha256 == hashlib.sha256(blob.read()).hexdigest()
        provider.close()
    finally:
        server.stop()


DIGEST = hashlib.sha256(PDF).hexdigest()


@pytest.mark.parametrize(
    ("pdf_hash", "expected"),
    [
        ("sha256:" + DIGEST.upper(), DIGEST),
        ("SHA256:" + DIGEST, DIGEST),
        (DIGEST, DIGEST),
        (DIGEST.upper(), DIGEST),
        ("sha256:abc123...", None),
        ("md5:" + hashlib.md5(PDF).hexdigest(), None),  # noqa: S324 - another algorithm, on purpose
        ("sha1:" + DIGEST[:40], None),
        ("sha512:" + DIGEST + DIGEST, None),
        (None, None),
    ],
)
def test_only_a_sha256_pdf_hash_is_declared_and_always_in_lowercase(
    sim: UnsiloedSimulator, pdf_hash: str | None, expected: str | None
) -> None:
    job_id = sim.add_job("completed", result={}, document=PDF, pdf_hash=pdf_hash)
    provider = adapter(sim)
    (_, document) = provider.artifacts(snapshot(provider, job_id))
    assert document.sha256 == expected


def test_a_pdf_hash_that_is_not_text_declares_nothing() -> None:
    assert sha256_of(12345) is None
    assert sha256_of({"sha256": DIGEST}) is None


def test_a_result_larger_than_max_result_mib_is_refused_naming_the_setting(
    sim: UnsiloedSimulator,
) -> None:
    # given a result of about 1.3 MiB and a cap of 1 MiB
    pages = [{"page_no": i, "text": "x" * 1000} for i in range(1300)]
    job_id = sim.add_job("completed", result={"pages": pages}, document=PDF)
    provider = adapter(sim, max_result_mib=1)

    # when its outputs are asked for
    with pytest.raises(ProviderError) as caught:
        provider.artifacts(snapshot(provider, job_id))

    # then it is refused for good, naming the provider, the job and the setting to raise
    assert caught.value.permanent
    message = str(caught.value)
    assert message.startswith(f"unsiloed job {job_id}: the result is larger than")
    assert "max_result_mib (1 MiB)" in message
    assert "Raise max_result_mib for provider unsiloed" in message
    assert not any(sig in message for sig in sim.issued_signatures)
    # and with the cap raised it is read
    assert len(adapter(sim, max_result_mib=2).artifacts(snapshot(provider, job_id))) == 2


def test_a_link_in_the_result_beyond_file_url_keeps_the_job(sim: UnsiloedSimulator) -> None:
    # given a result in the older shape, with visualisations hosted by Unsiloed
    served = (
        b'{"job_id": "J", "file_url": "{{file_url}}", "data": {}, '
        b'"visualization_paths": ["https://vis.unsiloed.example/J/p1.png?sig=abc"]}'
    )
    job_id = sim.add_job("completed", job_id="J", result=served, document=PDF)
    provider = adapter(sim)

    # when its outputs are asked for, then it is kept, naming the link by its path
    with pytest.raises(Kept) as caught:
        provider.artifacts(snapshot(provider, job_id))
    assert caught.value.reason == "unrecognised_output"
    message = str(caught.value)
    assert "unrecognised output `result_json.visualization_paths[0]`" in message
    assert '"visualization_paths" to ignore_outputs' in message
    assert "sig=abc" not in message

    # and once the operator accepts losing them, the result and document are archived
    accepted = adapter(sim, ignore_outputs=["visualization_paths"])
    assert len(accepted.artifacts(snapshot(accepted, job_id))) == 2


def test_urls_inside_the_extracted_values_are_content_not_outputs(sim: UnsiloedSimulator) -> None:
    result = {
        "website": {"value": "https://acme.example", "score": 0.9},
        "logo_url": {"value": "https://acme.example/logo.png", "score": 0.8},
    }
    job_id = sim.add_job("completed", result=result, document=PDF)
    provider = adapter(sim)
    assert len(provider.artifacts(snapshot(provider, job_id))) == 2


def test_a_file_reference_in_the_unsiloed_job_record_keeps_the_job(
    sim: UnsiloedSimulator,
) -> None:
    job_id = sim.add_job("completed", job_id="J", result={}, document=PDF)
    record = {**sim._job_json(sim.jobs[job_id]), "thumbnail_url": "https://u.example/t.png"}
    sim.inject(method="GET", path="/jobs/J$", status=200, body=record)
    provider = adapter(sim)
    with pytest.raises(Kept, match=re.escape("unrecognised output `job.thumbnail_url`")):
        provider.artifacts(snapshot(provider, job_id))


def test_a_result_that_vanished_after_completion_is_tried_again_later(
    sim: UnsiloedSimulator,
) -> None:
    job_id = sim.add_job("completed", result={"x": 1})
    provider = adapter(sim)
    snap = snapshot(provider, job_id)
    sim.inject(path="/result$", status=404, body={"detail": "Job not found"})
    with pytest.raises(ProviderError, match="answered 404 for the result") as caught:
        provider.artifacts(snap)
    assert not caught.value.permanent
    assert caught.value.job_id == job_id


def test_an_expired_document_link_fails_without_showing_its_signature(
    sim: UnsiloedSimulator,
) -> None:
    sim.link_ttl = -5
    job_id = sim.add_job("completed", result={}, document=PDF)
    provider = adapter(sim)
    (_, document) = provider.artifacts(snapshot(provider, job_id))
    assert isinstance(document.origin, LinkOrigin)
    with pytest.raises(DownloadError, match="403") as caught:
        fetch(document.origin.url)
    assert not any(sig in str(caught.value) for sig in sim.issued_signatures)


# -- delete ----------------------------------------------------------------------------------


def test_delete_answers_with_a_message_then_gone(sim: UnsiloedSimulator) -> None:
    job_id = sim.add_job("completed", result={"x": 1}, document=PDF)
    provider = adapter(sim)
    (_, document) = provider.artifacts(snapshot(provider, job_id))

    first = provider.delete(job_id)
    second = provider.delete(job_id)

    assert isinstance(first, Deleted)
    assert first.status_code == 200
    assert first.body == {"message": f"Job {job_id} deleted"}
    assert isinstance(second, AlreadyGone)
    assert sim.deleted == [job_id]
    assert sim.deletes_of(job_id) == 2
    assert isinstance(provider.get_job(job_id), JobGone)
    assert isinstance(document.origin, LinkOrigin)
    with pytest.raises(DownloadError, match="404"):
        fetch(document.origin.url)


def test_only_the_jobs_creator_may_delete_it(sim: UnsiloedSimulator) -> None:
    job_id = sim.add_job("completed", owner=TEAMMATE)
    provider = adapter(sim)
    assert snapshot(provider, job_id).phase == Phase.SUCCEEDED  # teammates can read it
    with pytest.raises(ProviderRejected, match="only the job's creator") as caught:
        provider.delete(job_id)
    assert caught.value.permanent
    assert KEY not in str(caught.value)
    assert sim.deleted == []


@pytest.mark.parametrize("shape", ["detail", "error", "message"])
def test_each_unsiloed_error_shape_on_a_404_means_gone(
    sim: UnsiloedSimulator, shape: ErrorShape
) -> None:
    sim.error_shape = shape
    job_id = sim.add_job("completed")
    provider = adapter(sim)
    assert isinstance(provider.delete(job_id), Deleted)
    assert isinstance(provider.get_job(job_id), JobGone)
    assert isinstance(provider.delete(job_id), AlreadyGone)


def test_an_unsiloed_404_on_delete_is_confirmed_by_reading_the_job(
    sim: UnsiloedSimulator,
) -> None:
    # given the delete route answers FastAPI's 404 although the job is there
    job_id = sim.add_job("completed")
    sim.inject(method="DELETE", path=f"/jobs/{job_id}$", status=404, body={"detail": "Not Found"})

    # when the job is deleted, then the read that follows contradicts the 404
    with pytest.raises(BadResponse, match="still describes the job") as caught:
        adapter(sim).delete(job_id)
    assert not caught.value.permanent
    assert job_id in sim.jobs
    assert len(sim.seen("GET", f"/jobs/{job_id}$")) == 1


@pytest.mark.parametrize("unknown_route", ["html", "empty"])
def test_a_wrong_base_url_never_marks_an_unsiloed_job_gone(
    sim: UnsiloedSimulator, unknown_route: UnknownRoute
) -> None:
    # given a base URL that reaches a server, but not Unsiloed's API
    sim.unknown_route = unknown_route
    job_id = sim.add_job("completed")
    provider = adapter(sim, base_url=f"{sim.base_url}/v2")

    # when the job is read and deleted, or the key checked, then nothing reads as "gone"
    with pytest.raises(BadResponse, match="base_url"):
        provider.get_job(job_id)
    with pytest.raises(BadResponse, match="base_url"):
        provider.delete(job_id)
    with pytest.raises(BadResponse, match="base_url"):
        provider.check_credentials()
    assert job_id in sim.jobs


# -- credentials and errors ------------------------------------------------------------------


def test_a_wrong_key_refused_in_the_error_shape_gets_the_same_advice(
    sim: UnsiloedSimulator,
) -> None:
    # The contract refuses a key in the "detail" shape; Unsiloed's docs show "error" too.
    sim.error_shape = "error"
    with pytest.raises(ProviderRejected, match="401: Invalid API key") as caught:
        adapter(sim, key="wrong-key-123456").check_credentials()
    assert "wrong-key-123456" not in str(caught.value)
    assert "credentials" in str(caught.value)
    assert caught.value.permanent


def test_a_key_refused_with_403_gets_the_same_advice(sim: UnsiloedSimulator) -> None:
    # FastAPI's API-key guard answers 403; which one Unsiloed sends is undocumented.
    sim.auth_failure_status = 403
    with pytest.raises(ProviderRejected, match="403: Invalid API key") as caught:
        adapter(sim, key="wrong-key-123456").check_credentials()
    assert "wrong-key-123456" not in str(caught.value)
    assert "credentials" in str(caught.value)


def test_a_vendor_echoing_the_key_back_does_not_leak_it(sim: UnsiloedSimulator) -> None:
    sim.inject(
        status=401,
        body={"detail": "Invalid API key wrong-key-123456 for https://x.invalid/a?sig=abc123"},
    )
    with pytest.raises(ProviderRejected) as caught:
        adapter(sim, key="wrong-key-123456").check_credentials()
    assert "wrong-key-123456" not in str(caught.value)
    assert "abc123" not in str(caught.value)


def test_a_missing_key_is_rejected(sim: UnsiloedSimulator) -> None:
    answer = httpx.get(f"{sim.base_url}/jobs/x")
    assert answer.status_code == 401
    assert sim.requests[-1].authorization is False


def test_the_right_key_passes_the_credentials_check(sim: UnsiloedSimulator) -> None:
    adapter(sim).check_credentials()
    (seen,) = sim.requests
    assert (seen.method, seen.status, seen.authorization) == ("GET", 404, True)


def test_error_details_read_either_shape_and_fastapis_validation_list() -> None:
    detail = error_detail_for("k-123456")
    assert detail(400, {"detail": "bad"}) == "bad"
    assert detail(400, {"error": "worse"}) == "worse"
    assert detail(422, {"detail": [{"loc": ["path"], "msg": "field required"}]}) == (
        "field required"
    )
    assert detail(500, "oops") is None
    assert detail(500, {"detail": 5}) is None
    assert len(detail(500, {"detail": "x" * 10_000}) or "") == 300


def test_the_simulators_own_rate_limit_answers_429(sim: UnsiloedSimulator) -> None:
    sim.rate_limit = (1, 60.0)
    sim.rate_limit_headers = {"Retry-After": "3600"}
    provider = adapter(sim)
    provider.check_credentials()
    with pytest.raises(RateLimited, match="Rate limit exceeded"):
        provider.check_credentials()


@pytest.mark.usefixtures("quick_retries")
def test_a_5xx_on_reading_the_result_is_retried(sim: UnsiloedSimulator) -> None:
    # (the contract retries a 5xx on the job record; the result is a request of its own)
    job_id = sim.add_job("completed", result={"x": 1}, document=PDF)
    sim.inject(path="/result$", status=502, times=1, body=b"<html>Bad Gateway</html>")
    provider = adapter(sim)
    assert [a.name for a in provider.artifacts(snapshot(provider, job_id))] == [
        "result.json",
        "source/document.pdf",
    ]
    assert [s.status for s in sim.seen("GET", "/result$")] == [502, 200]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"id": "JOB"}, "no str field 'status'"),
        ({"id": "JOB", "status": 3}, "no str field 'status'"),
        ({"id": "someone-else", "status": "completed"}, "answered with job 'someone-else'"),
        ({"job_id": "someone-else", "status": "completed"}, "answered with job 'someone-else'"),
    ],
)
def test_malformed_job_records_are_bad_responses(
    sim: UnsiloedSimulator, body: Any, match: str
) -> None:
    job_id = sim.add_job("completed", job_id="JOB")
    sim.inject(path=f"/jobs/{job_id}$", status=200, body=body)
    with pytest.raises(BadResponse, match=match):
        adapter(sim).get_job(job_id)


@pytest.mark.parametrize(
    ("result", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b'["a"]', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'{"job_id": "other", "result": {}}', "got job 'other'"),
        (b'{"file_url": 42}', "file_url that is not a string"),
    ],
)
def test_malformed_results_are_bad_responses(
    sim: UnsiloedSimulator, result: bytes, match: str
) -> None:
    job_id = sim.add_job("completed", result=result)
    provider = adapter(sim)
    with pytest.raises(BadResponse, match=match):
        provider.artifacts(snapshot(provider, job_id))


# -- through the pipeline --------------------------------------------------------------------


@pytest.fixture
def rt(
    sim: UnsiloedSimulator, s3_server: S3Server, bucket: str, sqlite_url: str
) -> Iterator[Runtime]:
    config = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"unsiloed": sim.provider_table()},
    )
    runtime = build_runtime(settings_of(config))
    yield runtime
    runtime.close()


def test_a_tracked_completed_job_is_archived_exactly_then_deleted(
    sim: UnsiloedSimulator, rt: Runtime, s3: S3Client, bucket: str
) -> None:
    # given a tracked completed job whose result has a layout of its own
    served = b'{"job_id": "J1",  "file_name": "inv.pdf", "file_url": "{{file_url}}"}\n'
    job_id = sim.add_job("COMPLETED", job_id="J1", result=served, document=PDF)
    rt.ledger.operator.track("unsiloed", [job_id], now=datetime.now(UTC))

    # when the pipeline carries it
    result = process_job(rt, "unsiloed", job_id)

    # then both files are in the bucket as served, and the delete came after every read
    assert result.outcome == Outcome.DELETED, result.error
    folder = f"archive/unsiloed/{job_id}/"
    stored = objects(s3, bucket, folder)
    assert stored[folder + "result.json"] == sim.results_served[-1][1]
    assert stored[folder + "source/inv.pdf"] == PDF
    manifest = json.loads(stored[folder + "manifest.json"])
    assert manifest["job"]["id"] == job_id
    assert {f["key"] for f in manifest["files"]} == {
        folder + "result.json",
        folder + "source/inv.pdf",
    }
    assert sim.deleted == [job_id]
    order = [(s.method, s.path) for s in sim.requests]
    assert order[-1] == ("DELETE", f"/jobs/{job_id}")
    assert order.count(("DELETE", f"/jobs/{job_id}")) == 1
    # result.json keeps Unsiloed's presigned file_url by design; nothing else may hold one.
    ours = [body for key, body in stored.items() if not key.endswith("/result.json")]
    assert not any(sig.encode() in body for body in ours for sig in sim.issued_signatures)


def test_a_failed_job_is_archived_as_its_record_alone_when_failed_jobs_may_be_deleted(
    sim: UnsiloedSimulator, s3_server: S3Server, bucket: str, sqlite_url: str, s3: S3Client
) -> None:
    # given a worker whose operator lets failed jobs be deleted with their record alone
    config = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"unsiloed": sim.provider_table(delete_failed_jobs=True)},
    )
    rt = build_runtime(settings_of(config))
    job_id = sim.add_job("failed", error="OCR engine timeout", document=PDF)
    try:
        rt.ledger.operator.track("unsiloed", [job_id], now=datetime.now(UTC))

        # when the pipeline carries a failed job
        result = process_job(rt, "unsiloed", job_id)
    finally:
        rt.close()

    # then only its record is archived, and it is deleted

    assert result.outcome == Outcome.DELETED, result.error
    folder = f"archive/unsiloed/{job_id}/"
    stored = objects(s3, bucket, folder)
    assert set(stored) == {folder + "manifest.json", folder + "deletion.json"}
    manifest = json.loads(stored[folder + "manifest.json"])
    assert manifest["job"]["error"] == "OCR engine timeout"
    assert manifest["files"] == []
    assert sim.seen("GET", "/result$") == []


def test_a_job_in_review_is_left_alone(sim: UnsiloedSimulator, rt: Runtime) -> None:
    job_id = sim.add_job("review", result={"x": 1})
    rt.ledger.operator.track("unsiloed", [job_id], now=datetime.now(UTC))
    result = process_job(rt, "unsiloed", job_id)
    assert result.outcome == Outcome.NOT_TERMINAL
    assert sim.deleted == []
    assert sim.seen("GET", "/result$") == []


# -- any shape -------------------------------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "job_id",
                    "status",
                    "updated_at",
                    "file_url",
                    "file_name",
                    "pdf_name",
                    "result",
                    "detail",
                    "x",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


def mostly(usual: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a plausible value, sometimes any JSON at all."""
    return st.sampled_from([True, True, True, False]).flatmap(
        lambda plausible: usual if plausible else json_values
    )


job_records = st.fixed_dictionaries(
    {"status": mostly(st.sampled_from(["completed", "COMPLETED", "failed", "review", "odd"]))},
    optional={
        "pdf_hash": mostly(st.sampled_from(["sha256:" + "Ab" * 32, "f" * 64, "md5:00", ""])),
        "id": mostly(st.sampled_from(["J", "K"])),
        "job_id": mostly(st.just("J")),
        "updated_at": mostly(st.sampled_from(["2024-01-15T10:30:00.000Z", "2024-01-15"])),
        "pdf_name": mostly(st.sampled_from(["p.pdf", ""])),
    },
)
results = st.fixed_dictionaries(
    {"file_url": mostly(st.just("https://s3.example/a.pdf?X-Amz-Signature=s"))},
    optional={
        "job_id": mostly(st.sampled_from(["J", "K"])),
        "file_name": mostly(st.sampled_from(["a.pdf", "", "/"])),
        "pdf_name": mostly(st.just("b.pdf")),
        "result": json_values,
    },
)


class Served:
    """What the mock API answers next: a job record and a result."""

    record: Any = None
    result: Any = None


def _mock_provider() -> UnsiloedProvider:
    def answer(request: httpx.Request) -> httpx.Response:
        data = Served.result if request.url.path.endswith("/result") else Served.record
        return httpx.Response(200, content=json.dumps(data).encode())

    settings = UnsiloedSettings(
        type="unsiloed", base_url="http://unsiloed.test", api_key=SecretStr(KEY)
    )
    api = HttpApi(
        provider="unsiloed",
        base_url=settings.base_url,
        timeout=5,
        headers={"X-API-Key": KEY},
        error_detail=error_detail_for(KEY),
        transport=httpx.MockTransport(answer),
        attempts=1,
    )
    return UnsiloedProvider("unsiloed", settings, api)


MOCK = _mock_provider()


def _artifacts_or_why_not(snap: JobSnapshot) -> list[Artifact] | Kept | None:
    """The artifacts, the Kept error, or None for a BadResponse."""
    try:
        return MOCK.artifacts(snap)
    except BadResponse:
        return None
    except Kept as kept:
        return kept


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=mostly(job_records), result=mostly(results))
def test_any_record_shape_either_parses_or_is_a_bad_response(record: Any, result: Any) -> None:
    Served.record, Served.result = record, result
    try:
        snap = MOCK.get_job("J")
    except BadResponse:
        return
    assert isinstance(snap, JobSnapshot)
    assert isinstance(snap.phase, Phase)
    assert snap.phase == phase_of(snap.status)
    assert snap.finished_at is None or snap.finished_at.tzinfo is not None
    if not snap.terminal:
        return
    artifacts = _artifacts_or_why_not(snap)
    if artifacts is None:
        return
    if isinstance(artifacts, Kept):
        # a failed job (delete_failed_jobs is off), a completed one whose result links no
        # source document, or a file reference nobody claims
        assert artifacts.reason in ("failed_job", "no_source", "unrecognised_output")
        assert (artifacts.reason == "failed_job") == (snap.phase == Phase.FAILED)
        return
    assert snap.phase == Phase.SUCCEEDED
    # everything the delete destroys: the result and the source document
    names = [a.name for a in artifacts]
    assert len(names) == 2
    assert names[0] == "result.json"
    assert names[1].startswith("source/")
    for artifact in artifacts[1:]:
        assert isinstance(artifact.origin, LinkOrigin)
        assert "?" not in artifact.source
        assert artifact.sha256 is None or re.fullmatch("[0-9a-f]{64}", artifact.sha256)
