"""All five providers in one configuration: the scenario of the providers issue.

Six accounts (Huawei MPC twice, once per auth mode), each with jobs that are due and jobs
that must be left alone, and the checks that a sweep handled every one of them correctly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.helpers import config_data, daily_provider, objects, write_config, write_to_bucket
from worker.simulators.blobs import Blob, Content, chunks_of
from worker.simulators.daily import DailySimulator
from worker.simulators.datocms import DatoCmsSimulator
from worker.simulators.huawei_mpc import HuaweiMpcSimulator
from worker.simulators.loom import LoomSimulator
from worker.simulators.unsiloed import UnsiloedSimulator

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LONG_AGO = datetime.now(UTC) - timedelta(days=30)
PROJECT = "0123456789abcdef0123456789abcdef"


def data(content: Content) -> bytes:
    return b"".join(chunks_of(content))


@dataclass
class Sims:
    daily: DailySimulator
    loom: LoomSimulator
    mpc_ak: HuaweiMpcSimulator
    mpc_token: HuaweiMpcSimulator
    unsiloed: UnsiloedSimulator
    dato: DatoCmsSimulator

    def all(self) -> list[Any]:
        return [self.daily, self.loom, self.mpc_ak, self.mpc_token, self.unsiloed, self.dato]

    def stop(self) -> None:
        for sim in self.all():
            sim.stop()


@dataclass
class Fleet:
    sims: Sims
    bucket: str
    # provider name -> job ids a sweep must archive and delete
    due: dict[str, list[str]] = field(default_factory=dict)
    # provider name -> job ids a sweep must leave alone
    untouched: dict[str, list[str]] = field(default_factory=dict)
    # provider name -> job ids to hand to `retention track` (no list endpoint)
    tracked: dict[str, list[str]] = field(default_factory=dict)
    # (provider, job id) -> {key under the job's folder -> bytes} for the byte-identical check
    files: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    dato_upload: str = ""

    @property
    def daily(self) -> DailySimulator:
        return self.sims.daily

    @property
    def loom(self) -> LoomSimulator:
        return self.sims.loom

    @property
    def mpc_ak(self) -> HuaweiMpcSimulator:
        return self.sims.mpc_ak

    @property
    def mpc_token(self) -> HuaweiMpcSimulator:
        return self.sims.mpc_token

    @property
    def unsiloed(self) -> UnsiloedSimulator:
        return self.sims.unsiloed

    @property
    def dato(self) -> DatoCmsSimulator:
        return self.sims.dato

    def by_name(self, provider: str) -> Any:
        return getattr(self.sims, provider)

    def config(self, ledger_url: str, endpoint_url: str, **extra: Any) -> dict[str, Any]:
        return config_data(
            bucket=self.bucket,
            endpoint_url=endpoint_url,
            ledger_url=ledger_url,
            providers={
                "daily": daily_provider(self.daily, page_size=2),
                "loom": self.loom.provider_table(),
                "mpc_ak": self.mpc_ak.provider_table(),
                "mpc_token": self.mpc_token.provider_table(),
                "unsiloed": self.unsiloed.provider_table(),
                "dato": self.dato.provider_table(upload_ids=[self.dato_upload]),
            },
            **extra,
        )

    def write(self, path: Path, ledger_url: str, endpoint_url: str, **extra: Any) -> Path:
        return write_config(path, self.config(ledger_url, endpoint_url, **extra))

    def deletes_of(self, provider: str, job_id: str) -> int:
        count: int = self.by_name(provider).deletes_of(job_id)
        return count

    def all_due(self) -> Iterator[tuple[str, str]]:
        for provider, ids in self.due.items():
            for job_id in ids:
                yield provider, job_id


def start_sims(s3: S3Client, obs_bucket: str) -> Sims:
    """Start one simulator per account; MPC's transcoded outputs go to ``obs_bucket``."""
    writer = write_to_bucket(s3)
    sims = Sims(
        daily=DailySimulator("daily-fleet-key-3b1e", bucket_writer=writer),
        loom=LoomSimulator("loom-fleet-key-8c2d", "loom-fleet-secret-5e9a"),
        mpc_ak=HuaweiMpcSimulator(
            PROJECT,
            access_key="QTWAOYTTINDUT2QVKYUC",
            secret_key="MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
            output_bucket=obs_bucket,
            bucket_writer=writer,
        ),
        mpc_token=HuaweiMpcSimulator(
            PROJECT,
            token="MIIT-fleet-iam-token-7f3a",
            output_bucket=obs_bucket,
            bucket_writer=writer,
        ),
        unsiloed=UnsiloedSimulator("unsiloed-fleet-key-2a7f"),
        dato=DatoCmsSimulator("dato-fleet-token-6d4c", pending_polls=1),
    )
    for sim in sims.all():
        sim.start()
    return sims


def build(sims: Sims, bucket: str) -> Fleet:
    f = Fleet(sims, bucket)

    def due(
        provider: str, job_id: str, files: dict[str, bytes] | None = None, tracked: bool = False
    ) -> None:
        f.due.setdefault(provider, []).append(job_id)
        f.files[(provider, job_id)] = files or {}
        if tracked:
            f.tracked.setdefault(provider, []).append(job_id)

    def alone(provider: str, job_id: str, tracked: bool = False) -> None:
        f.untouched.setdefault(provider, []).append(job_id)
        if tracked:
            f.tracked.setdefault(provider, []).append(job_id)

    # Daily: listed; outputs keep the keys Daily returned.
    transcript = b'{"transcript": "fleet"}'
    job = f.daily.add_job(transcription=[("json", transcript)], summary=("txt", b"summary\n"))
    due("daily", job, {o.key: data(o.content) for o in f.daily.jobs[job].outputs})
    due("daily", f.daily.add_job("error", error="Error: silent file"))
    alone("daily", f.daily.add_job("processing"))

    # Loom: tracked; inputs, transcripts, processed media and extracted fields.
    audio, letter = Blob(2 * 1024 * 1024 + 17, seed=21), b"%PDF-1.7 referral letter"
    ref = f.loom.add_job(
        "completed",
        inputs=[("call.mp3", "audio", audio), ("referral.pdf", "attachment", letter)],
        transcripts=[
            ("General Transcription.txt", b"Doctor: hello.\n"),
            ("General Transcription.docx", b"PK\x03\x04 docx"),
        ],
        processed=[("merged.mp3", b"merged audio")],
        extracted_fields=b'{"claim": "42"}',
    )
    due(
        "loom",
        ref,
        {
            "inputs/call.mp3": data(audio),
            "inputs/referral.pdf": letter,
            "transcripts/General Transcription.txt": b"Doctor: hello.\n",
            "transcripts/General Transcription.docx": b"PK\x03\x04 docx",
            "processed_input_media/merged.mp3": b"merged audio",
            "extracted_fields.json": b'{"claim": "42"}',
        },
        tracked=True,
    )
    failed = f.loom.add_job("error", inputs=[("bad.wav", "audio", b"RIFF....")])
    due("loom", failed, {"inputs/bad.wav": b"RIFF...."}, tracked=True)
    alone(
        "loom", f.loom.add_job("in_progress", inputs=[("later.mp3", "audio", b"ID3")]), tracked=True
    )

    # Huawei MPC, both auth modes: listed; only the task record is archived.
    for sim, name in ((f.mpc_ak, "mpc_ak"), (f.mpc_token, "mpc_token")):
        due(
            name,
            sim.add_task("SUCCEEDED", end_time=LONG_AGO, outputs=[("movie_720.mp4", b"mp4 bytes")]),
        )
        due(name, sim.add_task("FAILED", end_time=LONG_AGO, description="bad input"))
        alone(name, sim.add_task("TRANSCODING"))

    # Unsiloed: tracked; result.json exactly as served, plus the source document.
    document = b"%PDF-1.4 invoice"
    done = f.unsiloed.add_job(
        "completed",
        result={"invoice_number": {"value": "INV-1", "score": 0.98}},
        document=document,
        file_name="invoice.pdf",
        updated_at=LONG_AGO,
    )
    due("unsiloed", done, {"source/invoice.pdf": document}, tracked=True)
    # A failed job: its delete would destroy the source document, which the worker cannot
    # fetch, so it is kept at Unsiloed (delete_failed_jobs is off).
    alone(
        "unsiloed",
        f.unsiloed.add_job("failed", error="unreadable", updated_at=LONG_AGO),
        tracked=True,
    )
    alone(
        "unsiloed",
        f.unsiloed.add_job("review", result={"x": {"value": 1, "score": 0.2}}),
        tracked=True,
    )
    alone("unsiloed", f.unsiloed.add_job("processing"), tracked=True)

    # DatoCMS: one listed upload, and one track tracked by id on another upload.
    f.dato_upload = f.dato.add_upload()
    due("dato", f.dato.add_track(f.dato_upload, "ready"))
    due("dato", f.dato.add_track(f.dato_upload, "errored", error="NO_PRIMARY_AUDIO_TRACK"))
    alone("dato", f.dato.add_track(f.dato_upload, "preparing"))
    other = f.dato.add_upload()
    due("dato", f.dato.add_track(other, "ready"), tracked=True)
    alone("dato", f.dato.add_track(other, "ready"))  # neither listed nor tracked
    return f


def folder(provider: str, job_id: str) -> str:
    return f"archive/{provider}/{job_id}/"


def assert_fleet_swept(f: Fleet, s3: S3Client) -> None:
    archived = objects(s3, f.bucket, "archive/")
    for provider, job_id in f.all_due():
        base = folder(provider, job_id)
        assert f.deletes_of(provider, job_id) == 1, (provider, job_id)
        manifest = json.loads(archived[base + "manifest.json"])
        assert (manifest["provider"], manifest["job_id"]) == (provider, job_id)
        assert manifest["job"], (provider, "the job record is in the manifest")
        listed = {entry["key"]: entry for entry in manifest["files"]}
        for key, expected in f.files[(provider, job_id)].items():
            assert archived[base + key] == expected, (provider, key)
        for key, entry in listed.items():
            assert hashlib.sha256(archived[key]).hexdigest() == entry["sha256"], key
        receipt = json.loads(archived[base + "deletion.json"])
        assert receipt["provider_answer"]["result"] in ("deleted", "already_gone")
    done = f.due["unsiloed"][0]
    served = [body for job_id, body in f.unsiloed.results_served if job_id == done]
    assert archived[folder("unsiloed", done) + "result.json"] in served
    for provider, ids in f.untouched.items():
        for job_id in ids:
            assert f.deletes_of(provider, job_id) == 0, (provider, job_id)
            assert not any(k.startswith(folder(provider, job_id)) for k in archived)
