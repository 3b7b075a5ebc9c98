"""`retention demo`: the real pipeline against simulated providers and a local S3 server.

All five providers (Daily twice, with two retention periods), jobs in every state, outputs
in the user's own bucket, one job under a legal hold. The demo runs a dry run, a real sweep
and a second sweep, then shows what was archived where and what was deleted. Nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from worker.simulators.blobs import Content, chunks_of
from worker.simulators.daily import DailySimulator
from worker.simulators.datocms import DatoCmsSimulator
from worker.simulators.huawei_mpc import HuaweiMpcSimulator
from worker.simulators.loom import LoomSimulator
from worker.simulators.s3server import LOCAL_CREDENTIALS, start_s3_server
from worker.simulators.seed import (
    CUSTOM_BUCKET,
    DATOCMS_UPLOAD,
    MPC_PROJECT,
    OBS_BUCKET,
    TRANSCRIPT_TXT,
    Account,
    seed_demo,
)
from worker.simulators.unsiloed import UnsiloedSimulator

if TYPE_CHECKING:
    from worker.outcomes import JobResult

ARCHIVE_BUCKET = "acme-vendor-archive"


def _accounts(write: Callable[[str, str, Content], None]) -> list[Account]:
    """Start a simulator per account and give each jobs in every state."""
    daily = Account("daily", DailySimulator("demo-key-acme", domain="acme", bucket_writer=write))
    daily_eu = Account(
        "daily_eu", DailySimulator("demo-key-acme-eu", domain="acme-eu", bucket_writer=write)
    )
    loom = Account("loom", LoomSimulator("demo-loom-key", "demo-loom-secret"))
    mpc = Account(
        "mpc",
        HuaweiMpcSimulator(
            MPC_PROJECT,
            access_key="DEMOAKDEMOAKDEMOAK01",
            secret_key="demo-secret-key-for-sdk-hmac-sha256",
            output_bucket=OBS_BUCKET,
            bucket_writer=write,
        ),
    )
    unsiloed = Account("unsiloed", UnsiloedSimulator("demo-unsiloed-key"))
    dato = Account("dato", DatoCmsSimulator("demo-dato-token", pending_polls=1))
    accounts = [daily, daily_eu, loom, mpc, unsiloed, dato]
    for account in accounts:
        account.sim.start()

    seed_demo(daily=daily, loom=loom, mpc=mpc, unsiloed=unsiloed, dato=dato, custom_buckets=True)
    daily_eu.add(
        daily_eu.sim.add_job(transcription=[("txt", TRANSCRIPT_TXT)]),
        "finished",
        "3-day retention: not due yet",
    )
    # Each table holds the account's settings; _write_config adds type, URL and credentials.
    daily.table = {"retain_days": 0, "page_size": 3, "custom_buckets": [CUSTOM_BUCKET]}
    daily_eu.table = {"retain_days": 3}
    loom.table = {"retain_days": 0}
    mpc.table = {"retain_days": 7}
    unsiloed.table = {"retain_days": 7}
    dato.table = {"retain_days": 0, "upload_ids": [DATOCMS_UPLOAD]}
    return accounts


def _provider_table(account: Account) -> dict[str, Any]:
    sim = account.sim
    if isinstance(sim, DailySimulator):
        return {"type": "daily", "base_url": sim.base_url, "api_key": sim.api_key}
    if isinstance(sim, LoomSimulator):
        return {"type": "loom", "base_url": sim.base_url, "key": sim.key, "secret": sim.secret}
    if isinstance(sim, HuaweiMpcSimulator):
        return {
            "type": "huawei_mpc",
            "base_url": sim.base_url,
            "project_id": MPC_PROJECT,
            "access_key": "DEMOAKDEMOAKDEMOAK01",
            "secret_key": "demo-secret-key-for-sdk-hmac-sha256",
        }
    if isinstance(sim, UnsiloedSimulator):
        return {"type": "unsiloed", "base_url": sim.base_url, "api_key": sim.api_key}
    assert isinstance(sim, DatoCmsSimulator)
    return {"type": "datocms", "base_url": sim.base_url, "api_token": sim.api_token}


def _toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def _write_config(path: Path, endpoint: str, workdir: Path, accounts: list[Account]) -> None:
    lines = [
        "[archive]",
        f'bucket = "{ARCHIVE_BUCKET}"',
        'prefix = "archive/"',
        f'endpoint_url = "{endpoint}"',
        'region = "us-east-1"',
        "",
        "[ledger]",
        f'url = "sqlite:///{workdir}/retention.db"',
        "",
        "[defaults]",
        "retain_days = 7",
        "max_deletes_per_sweep = 100",
        "",
        "[downloads]",
        "allow_private_networks = true   # the simulators serve downloads on 127.0.0.1",
        "",
    ]
    for account in accounts:
        lines.append(f"[providers.{account.name}]")
        table = {**_provider_table(account), **account.table}
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
        lines.append("")
    path.write_text("\n".join(lines))


def _section(title: str) -> None:
    click.echo("")
    click.echo(f"== {title}")


def run_demo(*, keep: bool = False) -> None:
    import boto3

    from worker.bootstrap import build_runtime
    from worker.logging import configure_logging
    from worker.outcomes import Outcome
    from worker.render import summary_line
    from worker.settings import load_settings
    from worker.sweep import sweep_provider

    workdir = Path(tempfile.mkdtemp(prefix="retention-demo-"))
    os.environ.update(LOCAL_CREDENTIALS)
    log_file = (workdir / "worker.log").open("w")
    configure_logging(level=logging.INFO, json=True, stream=log_file)
    click.echo(
        "retention-worker demo: five simulated providers, a local S3 server, the real pipeline."
    )
    click.echo(f"working folder: {workdir}")

    s3 = start_s3_server()
    accounts: list[Account] = []
    try:
        client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1")
        for bucket in (ARCHIVE_BUCKET, CUSTOM_BUCKET, OBS_BUCKET):
            client.create_bucket(Bucket=bucket)

        def write(bucket: str, key: str, content: Content) -> None:
            client.put_object(Bucket=bucket, Key=key, Body=b"".join(chunks_of(content)))

        accounts = _accounts(write)
        by_name = {a.name: a for a in accounts}
        config = workdir / "retention.toml"
        _write_config(config, s3.endpoint_url, workdir, accounts)
        settings = load_settings(config)

        _section("Jobs at the simulated providers")
        for account in accounts:
            for job_id, (status, label) in account.jobs.items():
                click.echo(f"  {account.name:9} {job_id[:36]:36}  {status:12} {label}")

        (held_id,) = by_name["daily"].hold
        rt = build_runtime(settings)
        _section("retention track / retention hold")
        for account in accounts:
            if account.track:
                rt.ledger.operator.track(account.name, account.track, now=rt.clock())
                click.echo(
                    f"  tracking {len(account.track)} {account.name} job(s): "
                    "no list endpoint, so the worker is told which jobs to look after"
                )
        rt.ledger.operator.set_hold(
            "daily", held_id, held=True, now=rt.clock(), reason="demo: case 42"
        )
        click.echo(f"  daily {held_id} held before the worker has ever seen it")
        rt.close()

        def label_of(result: JobResult) -> str:
            return by_name[result.provider].jobs.get(result.job_id, ("", ""))[1]

        def printer(result: JobResult) -> None:
            text = result.outcome.value.replace("_", " ")
            if result.outcome == Outcome.DELETED:
                text = f"archived {result.files} file(s), {result.bytes} bytes, then deleted"
            elif result.due_at is not None and result.outcome == Outcome.NOT_DUE:
                text = f"not due until {result.due_at:%Y-%m-%d %H:%M} UTC"
            elif result.outcome == Outcome.WOULD_DELETE:
                text = f"would archive {result.files} file(s), then delete"
            if result.error:
                text += f" ({result.error.split('. ')[0]})"
            click.echo(
                f"  {result.provider:9} {result.job_id[:36]:36}  {text}  [{label_of(result)}]"
            )

        _section("retention sweep --dry-run (changes nothing)")
        dry = build_runtime(settings, dry_run=True)
        for name in settings.providers:
            sweep_provider(dry, name, on_result=printer)
        dry.close()
        click.echo(
            "  deletes the providers received so far: "
            f"{sum(a.deletes(j) for a in accounts for j in a.jobs)}"
        )

        _section("retention sweep")
        rt = build_runtime(settings)
        reports = [
            sweep_provider(rt, name, on_result=_quiet(printer)) for name in settings.providers
        ]
        for report in reports:
            click.echo("  " + summary_line(report.summary()))

        _section(f"What is in s3://{ARCHIVE_BUCKET}/archive/ (one folder per job)")
        listing = client.list_objects_v2(Bucket=ARCHIVE_BUCKET, Prefix="archive/")
        folders: dict[str, list[int]] = {}
        for obj in listing.get("Contents", []):
            parts = obj["Key"].split("/")
            provider = parts[1]
            job_depth = 3 if provider != "dato" else 4  # DatoCMS ids are UPLOAD/TRACK
            folder = "/".join(parts[:job_depth]) + "/"
            folders.setdefault(folder, []).append(obj["Size"])
        for folder, sizes in folders.items():
            click.echo(
                f"  {folder}  {len(sizes) - 2} file(s) + manifest.json + deletion.json, "
                f"{sum(sizes)} bytes"
            )
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
        for account in accounts:
            gone = [j for j in account.jobs if account.deletes(j)]
            kept = [label for j, (_s, label) in account.jobs.items() if not account.deletes(j)]
            click.echo(
                f"  {account.name}: {len(gone)} deleted; still there: "
                + (", ".join(kept) or "nothing")
            )
        left = client.list_objects_v2(Bucket=CUSTOM_BUCKET).get("KeyCount", 0)
        click.echo(f"  objects left in your own bucket {CUSTOM_BUCKET}: {left}")

        _section("retention sweep, again (nothing is archived or deleted twice)")
        before = sum(a.deletes(j) for a in accounts for j in a.jobs)
        for name in settings.providers:
            click.echo("  " + summary_line(sweep_provider(rt, name).summary()))
        after = sum(a.deletes(j) for a in accounts for j in a.jobs)
        click.echo(f"  delete requests the providers received: {before} before, {after} after")

        _section("retention status")
        for summary in rt.ledger.query.status(
            {n: settings.policy(n).retain_days for n in settings.providers}, now=rt.clock()
        ):
            states = ", ".join(f"{k} {v}" for k, v in sorted(summary.states.items()))
            click.echo(
                f"  {summary.provider}: {states}; held {summary.held}; "
                f"overdue {summary.overdue_count}"
            )
        rt.close()
        click.echo(f"\nStructured logs of every step: {workdir / 'worker.log'}")
    finally:
        for account in accounts:
            account.sim.stop()
        s3.stop()
        log_file.close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
            click.echo("(working folder removed; run `retention demo --keep` to keep it)")


def _quiet(printer: Callable[[JobResult], None]) -> Callable[[JobResult], None]:
    """Print only the jobs a real sweep acted on or left for a reason worth saying."""
    from worker.outcomes import Outcome

    def show(result: JobResult) -> None:
        if result.outcome not in (Outcome.BUSY, Outcome.DONE):
            printer(result)

    return show
