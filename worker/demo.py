"""`retention demo`: the real pipeline against simulated providers and a local S3 server.

Two simulated Daily accounts, jobs in every state spread over several list pages, one
output in the user's own bucket and one job under a legal hold. The demo runs a dry run,
a real sweep and a second sweep, then shows what was archived where and what was deleted.
Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from worker.simulators.blobs import Blob, Content, chunks_of
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import LOCAL_CREDENTIALS, start_s3_server

ARCHIVE_BUCKET = "acme-vendor-archive"
CUSTOM_BUCKET = "acme-daily-outputs"

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
        },
    },
    indent=2,
).encode()
TRANSCRIPT_TXT = b"Thanks for joining. Let's review the retention policy.\n"
TRANSCRIPT_VTT = b"WEBVTT\n\n00:00.000 --> 00:03.200\nThanks for joining.\n"
SUMMARY_TXT = b"The team agreed to keep vendor copies for no more than seven days.\n"


def _section(title: str) -> None:
    click.echo("")
    click.echo(f"== {title}")


def _populate(daily: DailySimulator, daily_eu: DailySimulator) -> dict[str, str]:
    """Jobs in every state; returns a label for each job id, for the narrative."""
    labels: dict[str, str] = {}

    def add(label: str, sim: DailySimulator, status: str, **kw: Any) -> str:
        job_id = sim.add_job(status, **kw)
        labels[job_id] = label
        return job_id

    add(
        "finished, transcript + summary",
        daily,
        "finished",
        transcription=[("json", TRANSCRIPT_JSON), ("txt", TRANSCRIPT_TXT)],
        summary=("txt", SUMMARY_TXT),
    )
    add(
        "finished, 12 MiB transcript (multipart upload)",
        daily,
        "finished",
        transcription=[("json", Blob(12 * 1024 * 1024, seed=7)), ("vtt", TRANSCRIPT_VTT)],
    )
    add(
        "finished, outputs in your own bucket",
        daily,
        "finished",
        transcription=[("txt", TRANSCRIPT_TXT)],
        summary=("txt", SUMMARY_TXT),
        bucket=CUSTOM_BUCKET,
    )
    add(
        "error, nothing produced",
        daily,
        "error",
        error="Error: Failed to transcribe. May be invalid audio or silent file",
    )
    add("finished, under legal hold", daily, "finished", transcription=[("txt", TRANSCRIPT_TXT)])
    add("processing", daily, "processing")
    add("submitted", daily, "submitted")
    add("unknown status 'paused'", daily, "paused")
    add(
        "finished (EU account, 3-day retention)",
        daily_eu,
        "finished",
        transcription=[("txt", TRANSCRIPT_TXT)],
    )
    return labels


def run_demo(*, keep: bool = False) -> None:
    import boto3

    from worker.bootstrap import build_runtime
    from worker.logging import configure_logging
    from worker.pipeline import JobResult, Outcome, sweep_provider
    from worker.settings import load_settings

    workdir = Path(tempfile.mkdtemp(prefix="retention-demo-"))
    os.environ.update(LOCAL_CREDENTIALS)
    log_file = (workdir / "worker.log").open("w")
    configure_logging(level=logging.INFO, json=True, stream=log_file)
    click.echo(
        "retention-worker demo: simulated Daily accounts, a local S3 server, the real pipeline."
    )
    click.echo(f"working folder: {workdir}")

    s3 = start_s3_server()
    sims: list[DailySimulator] = []
    try:
        client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1")
        for bucket in (ARCHIVE_BUCKET, CUSTOM_BUCKET):
            client.create_bucket(Bucket=bucket)

        def write(bucket: str, key: str, content: Content) -> None:
            client.put_object(Bucket=bucket, Key=key, Body=b"".join(chunks_of(content)))

        daily = DailySimulator("demo-key-acme", domain="acme", bucket_writer=write)
        daily_eu = DailySimulator("demo-key-acme-eu", domain="acme-eu", bucket_writer=write)
        sims = [daily, daily_eu]
        for sim in sims:
            sim.start()
        labels = _populate(daily, daily_eu)
        held_id = next(j for j, label in labels.items() if "legal hold" in label)

        config = workdir / "retention.toml"
        config.write_text(f"""\
[archive]
bucket = "{ARCHIVE_BUCKET}"
prefix = "archive/"
endpoint_url = "{s3.endpoint_url}"
region = "us-east-1"

[ledger]
url = "sqlite:///{workdir}/retention.db"

[defaults]
retain_days = 7
max_deletes_per_sweep = 100

[downloads]
allow_private_networks = true   # the simulators serve downloads on 127.0.0.1

[providers.daily]
type = "daily"
base_url = "{daily.base_url}"
api_key = "${{DEMO_DAILY_KEY}}"
retain_days = 0                 # due as soon as it is terminal
page_size = 3                   # so the listing spans several pages
custom_buckets = ["{CUSTOM_BUCKET}"]

[providers.daily_eu]
type = "daily"
base_url = "{daily_eu.base_url}"
api_key = "${{DEMO_DAILY_EU_KEY}}"
retain_days = 3
""")
        os.environ["DEMO_DAILY_KEY"] = daily.api_key
        os.environ["DEMO_DAILY_EU_KEY"] = daily_eu.api_key
        settings = load_settings(config)

        _section("Jobs at the simulated providers")
        for sim, name in ((daily, "daily"), (daily_eu, "daily_eu")):
            for job in sim.jobs.values():
                click.echo(f"  {name:9} {job.id}  {job.status:10} {labels[job.id]}")

        _section(f"retention hold daily {held_id}")
        rt = build_runtime(settings)
        rt.ledger.set_hold("daily", held_id, held=True, now=rt.clock(), reason="demo: case 42")
        click.echo("  held before the worker has ever seen it")
        rt.close()

        def printer(result: JobResult) -> None:
            label = labels.get(result.job_id, "")
            text = result.outcome.value.replace("_", " ")
            if result.outcome == Outcome.DELETED:
                text = f"archived {result.files} file(s), {result.bytes} bytes, then deleted"
            elif result.due_at is not None and result.outcome == Outcome.NOT_DUE:
                text = f"not due until {result.due_at:%Y-%m-%d %H:%M} UTC"
            elif result.outcome == Outcome.WOULD_DELETE:
                text = f"would archive {result.files} file(s), then delete"
            if result.error:
                text += f" ({result.error})"
            click.echo(f"  {result.provider:9} {result.job_id}  {text:48} [{label}]")

        _section("retention sweep --dry-run (changes nothing)")
        dry = build_runtime(settings, dry_run=True)
        for name in settings.providers:
            sweep_provider(dry, name, on_result=printer)
        dry.close()
        click.echo(f"  deletes seen by the simulators so far: {len(daily.deleted)}")

        _section("retention sweep")
        rt = build_runtime(settings)
        reports = [
            sweep_provider(rt, name, on_result=_quiet(printer)) for name in settings.providers
        ]
        for report in reports:
            s = report.summary()
            click.echo(
                f"  {report.provider}: archived {s['archived']}, deleted {s['deleted']}, "
                f"deferred {s['deferred']}, failed {s['failed']}, skipped {s['skipped']}"
            )

        _section(f"What is in s3://{ARCHIVE_BUCKET}/archive/")
        listing = client.list_objects_v2(Bucket=ARCHIVE_BUCKET, Prefix="archive/")
        for obj in listing.get("Contents", []):
            click.echo(f"  {obj['Size']:>10}  {obj['Key']}")
        manifests = [
            o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith("manifest.json")
        ]
        documents = {
            key: json.loads(client.get_object(Bucket=ARCHIVE_BUCKET, Key=key)["Body"].read())
            for key in manifests
        }
        if documents:
            richest = max(documents, key=lambda key: len(documents[key]["files"]))
            click.echo(f"\n  {richest} lists:")
            for f in documents[richest]["files"]:
                click.echo(f"    {f['key']}  {f['size']} bytes  sha256 {f['sha256'][:16]}...")

        _section("What was deleted")
        click.echo(f"  at Daily (daily): {len(daily.deleted)} job(s): {', '.join(daily.deleted)}")
        click.echo(f"  at Daily (daily_eu): {len(daily_eu.deleted)} job(s)")
        left = client.list_objects_v2(Bucket=CUSTOM_BUCKET).get("KeyCount", 0)
        click.echo(f"  objects left in your own bucket {CUSTOM_BUCKET}: {left}")
        click.echo(
            "  still at Daily: "
            + ", ".join(f"{labels[j.id]}" for sim in sims for j in sim.jobs.values())
        )

        _section("retention sweep, again (nothing is archived or deleted twice)")
        again = [sweep_provider(rt, name) for name in settings.providers]
        for report in again:
            s = report.summary()
            click.echo(
                f"  {report.provider}: archived {s['archived']}, deleted {s['deleted']}, "
                f"skipped {s['skipped']}"
            )
        deletes = sum(len(sim.seen("DELETE")) for sim in sims)
        click.echo(f"  DELETE requests the simulators received in total: {deletes}")

        _section("retention status")
        for status in rt.ledger.status(
            {n: settings.policy(n).retain_days for n in settings.providers}, now=rt.clock()
        ):
            states = ", ".join(f"{k} {v}" for k, v in sorted(status.states.items()))
            click.echo(
                f"  {status.provider}: {states}; held {status.held}; overdue {status.overdue_count}"
            )
        rt.close()
        click.echo(f"\nStructured logs of every step: {workdir / 'worker.log'}")
    finally:
        for sim in sims:
            sim.stop()
        s3.stop()
        log_file.close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
            click.echo("(working folder removed; run `retention demo --keep` to keep it)")


def _quiet(printer: Callable[[Any], None]) -> Callable[[Any], None]:
    """Print only the jobs a real sweep acted on or left for a reason worth saying."""
    from worker.pipeline import Outcome

    def show(result: Any) -> None:
        if result.outcome not in (Outcome.BUSY, Outcome.DONE):
            printer(result)

    return show
