"""The demo jobs, in every state, that `retention demo` and `python -m worker.simulators` give
the provider simulators.

The ids are fixed, so a static configuration (deploy/retention.simulators.toml and the seed
step of deploy/compose.yaml) can name the jobs to track and to hold. `retention demo` uses the
same ids: every run starts its own simulators, ledger and S3 server, so nothing of an earlier
run is left to meet them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.simulators.blobs import Blob

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
    # Keys of the account's [providers.NAME] table.
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

    def summary(self) -> dict[str, Any]:
        jobs = [
            {"id": job_id, "status": status, "label": label}
            for job_id, (status, label) in self.jobs.items()
        ]
        return {**self.table, "jobs": jobs, "track": self.track, "hold": self.hold}


def _uuid(n: int) -> str:
    return f"5eed0000-0000-4000-8000-{n:012d}"


def seed_demo(
    *,
    daily: Account,
    loom: Account,
    mpc: Account,
    unsiloed: Account,
    dato: Account,
    custom_buckets: bool,
) -> None:
    """Jobs in every state, with fixed ids; ``custom_buckets`` adds the Daily job whose
    outputs are in the user's own bucket (its simulator needs a bucket writer)."""
    s: Any = daily.sim
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

    s = loom.sim
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

    s = mpc.sim
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

    s = unsiloed.sim
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

    s = dato.sim
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
