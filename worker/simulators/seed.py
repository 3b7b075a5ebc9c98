"""Each provider's simulated account, and its demo jobs in every state: what `retention demo`
and `python -m worker.simulators` start.

A provider's spec names its account here (``ProviderSpec.simulator``, ``"module:ACCOUNT"``),
and ``simulated_accounts`` reads them off the registry, a plug-in's included, so neither the
demo nor the simulators' server keeps a list of providers. An account is its simulator built
with fixed, made-up credentials (deploy/retention.simulators.toml names them), the keys of
its ``[providers.NAME]`` table, and a ``seed`` that adds its jobs.

The ids are fixed, so a static configuration (deploy/retention.simulators.toml and the seed
step of deploy/compose.yaml) can name the jobs to track and to hold. `retention demo` uses the
same ids: every run starts its own simulators, ledger and S3 server, so nothing of an earlier
run is left to meet them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from worker.simulators.blobs import Blob, Content
from worker.simulators.daily import DailySimulator
from worker.simulators.datocms import DatoCmsSimulator
from worker.simulators.http import SimServer
from worker.simulators.huawei_mpc import HuaweiMpcSimulator
from worker.simulators.loom import LoomSimulator
from worker.simulators.unsiloed import UnsiloedSimulator
from worker.specs import registry
from worker.specs.spec import load

S = TypeVar("S", bound=SimServer)
# Writes an output into one of the user's own buckets: (bucket, key, content).
BucketWriter = Callable[[str, str, Content], None]

# The simulated accounts' made-up credentials. They are fixed so that
# deploy/retention.simulators.toml can name them.
DAILY_API_KEY = "demo-key-acme"
LOOM_KEY = "demo-loom-key"
LOOM_SECRET = "demo-loom-secret"  # noqa: S105 - simulated account
MPC_ACCESS_KEY = "DEMOAKDEMOAKDEMOAK01"
MPC_SECRET_KEY = "demo-secret-key-for-sdk-hmac-sha256"  # noqa: S105 - simulated account
UNSILOED_API_KEY = "demo-unsiloed-key"
DATOCMS_API_TOKEN = "demo-dato-token"  # noqa: S105 - simulated account

CUSTOM_BUCKET = "acme-daily-outputs"
OBS_BUCKET = "acme-mpc-outputs"
MPC_PROJECT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
# The DatoCMS upload whose tracks a configuration lists; the other upload's are not listed.
DATOCMS_UPLOAD = "demo-upload-0001"
LAST_MONTH = datetime.now(UTC) - timedelta(days=30)

TRANSCRIPT_JSON = json.dumps(
    {
        "results": {
            "channels": [
                {
                    "alternatives": [
                        {
                            "transcript": "Thanks for joining. Let's review the retention policy.",
                            "confidence": 0.97,
                        }
                    ]
                }
            ]
        }
    },
    indent=2,
).encode()
TRANSCRIPT_TXT = b"Thanks for joining. Let's review the retention policy.\n"
TRANSCRIPT_VTT = b"WEBVTT\n\n00:00.000 --> 00:03.200\nThanks for joining.\n"
SUMMARY_TXT = b"The team agreed to keep vendor copies for no more than seven days.\n"


@dataclass
class Account:
    """One running simulator: its provider table, its jobs, and what to track or hold."""

    name: str
    sim: Any
    # Keys of the account's [providers.NAME] table besides type, base URL and credentials.
    table: dict[str, Any] = field(default_factory=dict)
    # job id -> (status at the provider, what the job shows)
    jobs: dict[str, tuple[str, str]] = field(default_factory=dict)
    track: list[str] = field(default_factory=list)
    hold: list[str] = field(default_factory=list)

    def add(
        self, job_id: str, status: str, label: str, *, track: bool = False, hold: bool = False
    ) -> str:
        self.jobs[job_id] = (status, label)
        if track:
            self.track.append(job_id)
        if hold:
            self.hold.append(job_id)
        return job_id

    def deletes(self, job_id: str) -> int:
        count: int = self.sim.deletes_of(job_id)
        return count

    def provider_table(self) -> dict[str, Any]:
        """The account's whole ``[providers.NAME]`` table: its simulator's type, base URL and
        credentials, and the account's own keys."""
        table: dict[str, Any] = self.sim.provider_table(**self.table)
        return table

    def summary(self) -> dict[str, Any]:
        jobs = [
            {"id": job_id, "status": status, "label": label}
            for job_id, (status, label) in self.jobs.items()
        ]
        return {**self.provider_table(), "jobs": jobs, "track": self.track, "hold": self.hold}


def _uuid(n: int) -> str:
    return f"5eed0000-0000-4000-8000-{n:012d}"


def _seed_daily(daily: Account, custom_buckets: bool) -> None:
    """``custom_buckets`` adds the job whose outputs are in the user's own bucket (its
    simulator needs a bucket writer), and names that bucket in the table."""
    s: DailySimulator = daily.sim
    daily.add(
        s.add_job(
            transcription=[("json", TRANSCRIPT_JSON), ("txt", TRANSCRIPT_TXT)],
            summary=("txt", SUMMARY_TXT),
            job_id=_uuid(1),
        ),
        "finished",
        "transcript + summary",
    )
    daily.add(
        s.add_job(
            transcription=[("json", Blob(12 * 1024 * 1024, seed=7)), ("vtt", TRANSCRIPT_VTT)],
            job_id=_uuid(2),
        ),
        "finished",
        "12 MiB transcript (multipart upload)",
    )
    if custom_buckets:
        daily.table["custom_buckets"] = [CUSTOM_BUCKET]
        daily.add(
            s.add_job(
                transcription=[("txt", TRANSCRIPT_TXT)],
                summary=("txt", SUMMARY_TXT),
                bucket=CUSTOM_BUCKET,
                job_id=_uuid(3),
            ),
            "finished",
            "outputs in your own bucket",
        )
    daily.add(
        s.add_job(
            "error", error="Error: Failed to transcribe. May be invalid audio", job_id=_uuid(4)
        ),
        "error",
        "nothing produced",
    )
    daily.add(
        s.add_job(transcription=[("txt", TRANSCRIPT_TXT)], job_id=_uuid(5)),
        "finished",
        "under legal hold",
        hold=True,
    )
    daily.add(s.add_job("processing", job_id=_uuid(6)), "processing", "still running")
    daily.add(s.add_job("submitted", job_id=_uuid(7)), "submitted", "queued")
    daily.add(s.add_job("paused", job_id=_uuid(8)), "paused", "a status no one documented")


def _seed_loom(loom: Account, custom_buckets: bool) -> None:
    s: LoomSimulator = loom.sim
    loom.add(
        s.add_job(
            "completed",
            inputs=[
                ("consult.mp3", "audio", Blob(256 * 1024, seed=3)),
                ("referral.pdf", "attachment", b"%PDF-1.7 referral"),
            ],
            transcripts=[("General Transcription.txt", TRANSCRIPT_TXT)],
            processed=[("merged.mp3", Blob(64 * 1024, seed=4))],
            extracted_fields=b'{"claim_number": "C-1042"}',
            ref="R000001DEMO",
        ),
        "completed",
        "audio, document, transcript, fields",
        track=True,
    )
    loom.add(
        s.add_job("in_progress", inputs=[("later.mp3", "audio", b"ID3...")], ref="R000002DEMO"),
        "in progress",
        "still transcribing",
        track=True,
    )


def _seed_mpc(mpc: Account, custom_buckets: bool) -> None:
    s: HuaweiMpcSimulator = mpc.sim
    mpc.add(
        s.add_task(
            "SUCCEEDED",
            end_time=LAST_MONTH,
            outputs=[("talk_720p.mp4", b"mp4")],
            task_id="3273178",
        ),
        "SUCCEEDED",
        "record only: outputs are already in your OBS bucket",
    )
    mpc.add(s.add_task("TRANSCODING", task_id="3273179"), "TRANSCODING", "still transcoding")


def _seed_unsiloed(unsiloed: Account, custom_buckets: bool) -> None:
    s: UnsiloedSimulator = unsiloed.sim
    unsiloed.add(
        s.add_job(
            "completed",
            result={"invoice_number": {"value": "INV-001", "score": 0.98}},
            document=b"%PDF-1.4 invoice",
            file_name="invoice.pdf",
            updated_at=LAST_MONTH,
            job_id=_uuid(101),
        ),
        "completed",
        "result.json + source document",
        track=True,
    )
    unsiloed.add(
        s.add_job("review", result={"total": {"value": "12.00", "score": 0.41}}, job_id=_uuid(102)),
        "review",
        "awaiting human review",
        track=True,
    )


def _seed_datocms(dato: Account, custom_buckets: bool) -> None:
    s: DatoCmsSimulator = dato.sim
    upload = s.add_upload(DATOCMS_UPLOAD)
    dato.add(
        s.add_track(upload, "ready", track_id="demo-track-0001"),
        "ready",
        "subtitles (delete is asynchronous)",
    )
    dato.add(
        s.add_track(upload, "preparing", track_id="demo-track-0002"), "preparing", "still preparing"
    )
    dato.add(
        s.add_track(s.add_upload("demo-upload-0002"), "ready", track_id="demo-track-0003"),
        "ready",
        "not listed, not tracked",
    )


@dataclass(frozen=True)
class SimulatedAccount(Generic[S]):
    """One provider's simulated account, as the demo and the simulators' server run it."""

    # Its [providers.NAME] in their configurations.
    name: str
    simulator: type[S]
    # Builds its simulator from ``cls`` (``simulator``, or a subclass that binds another
    # address) on ``port``, with its credentials; ``writer`` stores outputs in the user's
    # own buckets, when there is an S3 server to hold them.
    build: Callable[[type[S], int, BucketWriter | None], S]
    # Adds its demo jobs; the flag says whether outputs in the user's own buckets can be
    # written.
    seed: Callable[[Account, bool], None]
    # Keys of its [providers.NAME] table besides type, base URL and credentials: what its
    # demo jobs need (retain_days 0 where jobs carry no finish time, so they are due now).
    table: Mapping[str, Any] = field(default_factory=dict)
    # The user's own buckets it writes outputs to, created on the S3 server first.
    buckets: tuple[str, ...] = ()

    def start(
        self, *, cls: type[S] | None = None, port: int = 0, writer: BucketWriter | None = None
    ) -> Account:
        """Its simulator, built and started, as an account without jobs yet."""
        sim = self.build(cls or self.simulator, port, writer)
        sim.start()
        return Account(self.name, sim, dict(self.table))


DAILY = SimulatedAccount(
    "daily",
    DailySimulator,
    lambda cls, port, writer: cls(DAILY_API_KEY, bucket_writer=writer, port=port),
    _seed_daily,
    {"retain_days": 0, "page_size": 3},
    buckets=(CUSTOM_BUCKET,),
)
LOOM = SimulatedAccount(
    "loom",
    LoomSimulator,
    lambda cls, port, writer: cls(LOOM_KEY, LOOM_SECRET, port=port),
    _seed_loom,
    {"retain_days": 0},
)
HUAWEI_MPC = SimulatedAccount(
    "mpc",
    HuaweiMpcSimulator,
    lambda cls, port, writer: cls(
        MPC_PROJECT,
        access_key=MPC_ACCESS_KEY,
        secret_key=MPC_SECRET_KEY,
        output_bucket=OBS_BUCKET,
        bucket_writer=writer,
        port=port,
    ),
    _seed_mpc,
    {"retain_days": 7},
    buckets=(OBS_BUCKET,),
)
UNSILOED = SimulatedAccount(
    "unsiloed",
    UnsiloedSimulator,
    lambda cls, port, writer: cls(UNSILOED_API_KEY, port=port),
    _seed_unsiloed,
    {"retain_days": 7},
)
DATOCMS = SimulatedAccount(
    "datocms",
    DatoCmsSimulator,
    lambda cls, port, writer: cls(DATOCMS_API_TOKEN, pending_polls=1, port=port),
    _seed_datocms,
    {"retain_days": 0, "upload_ids": [DATOCMS_UPLOAD]},
)


def simulated_accounts() -> list[SimulatedAccount[Any]]:
    """The simulated account of every registered provider that has one, in the registry's
    order (built-ins first)."""
    found: list[SimulatedAccount[Any]] = []
    for spec in registry.specs():
        if spec.simulator is None:
            continue
        account = load(spec.simulator)
        if not isinstance(account, SimulatedAccount):
            raise TypeError(f"{spec.simulator} is not a SimulatedAccount")
        found.append(account)
    return found
