"""`retention demo`: the real pipeline against simulated providers and a local S3 server.

Every registered provider's simulated account (worker/simulators/seed.py), plus a second
Daily account with a longer retention period; jobs in every state, outputs in the user's own
bucket, one job under a legal hold. The demo runs a dry run, a real sweep and a second sweep,
then shows what was archived where and what was deleted. Nothing leaves 127.0.0.1.

The simulators are test and demo equipment: they come with a source checkout (scripts/demo
installs it), not with the package the image is built from, so they are imported only here,
when the demo runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import click

from worker.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.outcomes import JobResult
    from worker.settings import Settings
    from worker.simulators.blobs import Content
    from worker.simulators.seed import Account, BucketWriter

ARCHIVE_BUCKET = "acme-vendor-archive"


def _need_simulators() -> None:
    try:
        import worker.simulators.seed  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError(
            "the demo needs the provider simulators, which come with a source checkout of "
            "retention-worker, not with the installed package",
            hint="Run scripts/demo from a clone of the repository",
        ) from None


def _accounts(write: BucketWriter) -> list[Account]:
    """Start every provider's simulated account, and a second Daily account whose jobs are
    not due yet; give each its jobs."""
    from worker.simulators.daily import DailySimulator
    from worker.simulators.seed import TRANSCRIPT_TXT, Account, simulated_accounts

    accounts: list[Account] = []
    try:
        for simulated in simulated_accounts():
            account = simulated.start(writer=write)
            accounts.append(account)
            simulated.seed(account, True)
            if account.name == "daily":
                eu = DailySimulator("demo-key-acme-eu", domain="acme-eu", bucket_writer=write)
                eu.start()
                daily_eu = Account("daily_eu", eu, {"retain_days": 3})
                accounts.append(daily_eu)
                daily_eu.add(
                    eu.add_job(transcription=[("txt", TRANSCRIPT_TXT)]),
                    "finished",
                    "3-day retention: not due yet",
                )
    except BaseException:
        for account in accounts:
            account.sim.stop()
        raise
    return accounts


def _toml_value(value: object) -> str:
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
        table = account.provider_table()
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
        lines.append("")
    path.write_text("\n".join(lines))


def _section(title: str) -> None:
    click.echo("")
    click.echo(f"== {title}")


@dataclass
class World:
    """What the demo runs against: a local S3 server with three buckets, the simulated
    accounts, and the configuration that names them."""

    workdir: Path
    client: S3Client
    accounts: list[Account]
    settings: Settings

    def account(self, name: str) -> Account:
        return next(a for a in self.accounts if a.name == name)

    def deletes(self) -> int:
        """Delete requests the simulated providers have received so far."""
        return sum(a.deletes(j) for a in self.accounts for j in a.jobs)

    def label_of(self, result: JobResult) -> str:
        return self.account(result.provider).jobs.get(result.job_id, ("", ""))[1]


@contextlib.contextmanager
def _world(workdir: Path) -> Iterator[World]:
    """Start the S3 server and the simulators, write the configuration; stop them after."""
    import boto3

    from worker.settings import load_settings
    from worker.simulators.blobs import chunks_of
    from worker.simulators.s3server import start_s3_server
    from worker.simulators.seed import simulated_accounts

    s3 = start_s3_server()
    accounts: list[Account] = []
    try:
        client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1")
        buckets = {name for simulated in simulated_accounts() for name in simulated.buckets}
        for bucket in (ARCHIVE_BUCKET, *sorted(buckets)):
            client.create_bucket(Bucket=bucket)

        def write(bucket: str, key: str, content: Content) -> None:
            client.put_object(Bucket=bucket, Key=key, Body=b"".join(chunks_of(content)))

        accounts = _accounts(write)
        config = workdir / "retention.toml"
        _write_config(config, s3.endpoint_url, workdir, accounts)
        yield World(workdir, client, accounts, load_settings(config))
    finally:
        for account in accounts:
            account.sim.stop()
        s3.stop()


def run_demo(*, keep: bool = False) -> None:
    """The demo's story, one section after another."""
    from worker.logsetup import configure_logging

    _need_simulators()
    from worker.simulators.s3server import LOCAL_CREDENTIALS

    workdir = Path(tempfile.mkdtemp(prefix="retention-demo-"))
    os.environ.update(LOCAL_CREDENTIALS)
    log_file = (workdir / "worker.log").open("w")
    configure_logging(level=logging.INFO, json=True, stream=log_file)
    click.echo("retention-worker demo: simulated providers, a local S3 server, the real pipeline.")
    click.echo(f"working folder: {workdir}")
    try:
        with _world(workdir) as world:
            show_the_jobs(world)
            track_and_hold(world)
            dry_run(world)
            sweep(world)
            show_the_archive(world)
            show_what_was_deleted(world)
            sweep_again(world)
            show_the_status(world)
        click.echo(f"\nStructured logs of every step: {workdir / 'worker.log'}")
    finally:
        log_file.close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
            click.echo("(working folder removed; run `retention demo --keep` to keep it)")


def serve_demo(folder: Path | None = None, *, ready: Callable[[Path], None] | None = None) -> None:
    """`retention demo --serve`: the demo's simulators and S3 server, kept running until
    Ctrl-C or SIGTERM, with a configuration that works against them and a file of the
    variables to source, so every command can be tried by hand. Nothing is tracked, held or
    swept: the commands it prints do that. The folder (the configuration, the ledger, the
    servers' log) stays afterwards. ``ready`` is told the folder once all is up (tests)."""
    import signal
    import threading

    from worker.logsetup import configure_logging

    _need_simulators()
    from worker.simulators.s3server import LOCAL_CREDENTIALS

    workdir = folder or Path(tempfile.mkdtemp(prefix="retention-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # A ledger of an earlier run would name jobs these servers seed afresh.
    for old in ("retention.toml", "retention.db", "demo.env"):
        (workdir / old).unlink(missing_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    os.environ.update(LOCAL_CREDENTIALS)
    with (workdir / "servers.log").open("w") as log_file:
        configure_logging(level=logging.INFO, json=True, stream=log_file)
        with _world(workdir) as world:
            env = _write_env(workdir)
            for line in _serving_lines(world, env):
                click.echo(line)
            if ready is not None:
                ready(workdir)
            stop.wait()
    click.echo(f"servers stopped; {workdir} is kept (its configuration names ports now closed)")


def _write_env(workdir: Path) -> Path:
    """``demo.env``: the configuration to use, and the local S3 server's credentials."""
    import shlex

    from worker.simulators.s3server import LOCAL_CREDENTIALS

    values = {"RETENTION_CONFIG": str(workdir / "retention.toml"), **LOCAL_CREDENTIALS}
    env = workdir / "demo.env"
    env.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))
    return env


def _serving_lines(world: World, env: Path) -> Iterator[str]:
    """What is running, and the commands to try against it, with the demo's own ids."""
    import shlex

    yield "retention-worker demo servers: simulated providers and a local S3 server, running."
    for account in world.accounts:
        yield f"  {account.name:9} {account.sim.base_url}  {len(account.jobs)} job(s)"
    yield f"  s3        {world.settings.archive.endpoint_url}  bucket {ARCHIVE_BUCKET}"
    yield ""
    yield "In another shell:"
    yield f"  source {shlex.quote(str(env))}"
    yield "  retention check"
    for account in world.accounts:
        if account.track:
            ids = " ".join(shlex.quote(job_id) for job_id in account.track)
            yield f"  retention track {account.name} {ids}   # no list endpoint: name its jobs"
    for account in world.accounts:
        for job_id in account.hold:
            yield f'  retention hold {account.name} {job_id} --reason "case 42"'
    yield "  retention sweep --dry-run"
    yield "  retention sweep"
    yield "  retention status"
    yield "  retention report"
    deleted = next(
        (
            (account.name, job_id)
            for account in world.accounts
            for job_id, (status, _label) in account.jobs.items()
            if status == "finished" and job_id not in account.hold
        ),
        None,
    )
    if deleted is not None:
        yield f"  retention restore {deleted[0]} {deleted[1]} --to ./restored   # after the sweep"
    yield "  retention scrub"
    yield ""
    yield f"Configuration: {world.workdir / 'retention.toml'}. Ctrl-C stops the servers."


def show_the_jobs(world: World) -> None:
    _section("Jobs at the simulated providers")
    for account in world.accounts:
        for job_id, (status, label) in account.jobs.items():
            click.echo(f"  {account.name:9} {job_id[:36]:36}  {status:12} {label}")


def track_and_hold(world: World) -> None:
    """Loom and Unsiloed have no list endpoint; a legal hold may come before the worker has
    ever seen the job."""
    from worker.bootstrap import build_runtime

    _section("retention track / retention hold")
    rt = build_runtime(world.settings)
    try:
        for account in world.accounts:
            if account.track:
                rt.ledger.operator.track(account.name, account.track, now=rt.clock())
                click.echo(
                    f"  tracking {len(account.track)} {account.name} job(s): "
                    "no list endpoint, so the worker is told which jobs to look after"
                )
        (held_id,) = world.account("daily").hold
        rt.ledger.operator.set_hold(
            "daily", held_id, held=True, now=rt.clock(), reason="demo: case 42"
        )
        click.echo(f"  daily {held_id} held before the worker has ever seen it")
    finally:
        rt.close()


def dry_run(world: World) -> None:
    from worker.bootstrap import build_runtime
    from worker.sweep import sweep_provider

    _section("retention sweep --dry-run (changes nothing)")
    rt = build_runtime(world.settings, dry_run=True)
    try:
        for name in world.settings.providers:
            sweep_provider(rt, name, on_result=_printer(world))
    finally:
        rt.close()
    click.echo(f"  deletes the providers received so far: {world.deletes()}")


def sweep(world: World) -> None:
    from worker.bootstrap import build_runtime
    from worker.render.sweep import summary_line
    from worker.sweep import sweep_provider

    _section("retention sweep")
    rt = build_runtime(world.settings)
    try:
        show = _quiet(_printer(world))
        reports = [sweep_provider(rt, name, on_result=show) for name in world.settings.providers]
    finally:
        rt.close()
    for report in reports:
        click.echo("  " + summary_line(report.summary()))


def show_the_archive(world: World) -> None:
    _section(f"What is in s3://{ARCHIVE_BUCKET}/archive/ (one folder per job)")
    listing = world.client.list_objects_v2(Bucket=ARCHIVE_BUCKET, Prefix="archive/")
    objects = listing.get("Contents", [])
    # A job's folder is the one that holds its manifest.json, however deep its id goes.
    manifests = [o["Key"] for o in objects if o["Key"].endswith("manifest.json")]
    folders: dict[str, list[int]] = {f"{PurePosixPath(key).parent}/": [] for key in manifests}
    for obj in objects:
        folder = next((f for f in folders if obj["Key"].startswith(f)), None)
        if folder is not None:
            folders[folder].append(obj["Size"])
    for folder, sizes in folders.items():
        click.echo(
            f"  {folder}  {len(sizes) - 2} file(s) + manifest.json + deletion.json, "
            f"{sum(sizes)} bytes"
        )
    documents = {
        key: json.loads(world.client.get_object(Bucket=ARCHIVE_BUCKET, Key=key)["Body"].read())
        for key in manifests
    }
    if documents:
        richest = max(documents, key=lambda key: len(documents[key]["files"]))
        click.echo(f"\n  {richest} lists:")
        for f in documents[richest]["files"]:
            click.echo(f"    {f['key']}  {f['size']} bytes  sha256 {f['sha256'][:16]}...")


def show_what_was_deleted(world: World) -> None:
    _section("What was deleted")
    for account in world.accounts:
        gone = [j for j in account.jobs if account.deletes(j)]
        kept = [label for j, (_s, label) in account.jobs.items() if not account.deletes(j)]
        click.echo(
            f"  {account.name}: {len(gone)} deleted; still there: " + (", ".join(kept) or "nothing")
        )
    from worker.simulators.seed import CUSTOM_BUCKET

    left = world.client.list_objects_v2(Bucket=CUSTOM_BUCKET).get("KeyCount", 0)
    click.echo(f"  objects left in your own bucket {CUSTOM_BUCKET}: {left}")


def sweep_again(world: World) -> None:
    from worker.bootstrap import build_runtime
    from worker.render.sweep import summary_line
    from worker.sweep import sweep_provider

    _section("retention sweep, again (nothing is archived or deleted twice)")
    before = world.deletes()
    rt = build_runtime(world.settings)
    try:
        for name in world.settings.providers:
            click.echo("  " + summary_line(sweep_provider(rt, name).summary()))
    finally:
        rt.close()
    click.echo(
        f"  delete requests the providers received: {before} before, {world.deletes()} after"
    )


def show_the_status(world: World) -> None:
    from worker.bootstrap import build_runtime

    _section("retention status")
    settings = world.settings
    rt = build_runtime(settings)
    try:
        days, on_purpose = settings.overdue_terms()
        for summary in rt.ledger.query.status(days, now=rt.clock(), archived_on_purpose=on_purpose):
            states = ", ".join(f"{k} {v}" for k, v in sorted(summary.states.items()))
            click.echo(
                f"  {summary.provider}: {states}; held {summary.held}; "
                f"overdue {summary.overdue_count}"
            )
    finally:
        rt.close()


def _printer(world: World) -> Callable[[JobResult], None]:
    """One line per job: what became of it, and what the job is."""
    from worker.outcomes import Outcome

    def show(result: JobResult) -> None:
        text = result.outcome.value.replace("_", " ")
        if result.outcome == Outcome.DELETED:
            text = f"archived {result.files} file(s), {result.bytes} bytes, then deleted"
        elif result.due_at is not None and result.outcome == Outcome.NOT_DUE:
            text = f"not due until {result.due_at:%Y-%m-%d %H:%M} UTC"
        elif result.outcome == Outcome.WOULD_DELETE:
            text = f"would archive {result.files} file(s), then delete"
        if result.error:
            # The error names the job itself; the line already does.
            reason = result.error.removeprefix(f"{result.provider} job {result.job_id}: ")
            text += f" ({reason.split('. ')[0]})"
        click.echo(
            f"  {result.provider:9} {result.job_id[:36]:36}  {text}  [{world.label_of(result)}]"
        )

    return show


def _quiet(printer: Callable[[JobResult], None]) -> Callable[[JobResult], None]:
    """Print only the jobs a real sweep acted on or left for a reason worth saying."""
    from worker.outcomes import Outcome

    def show(result: JobResult) -> None:
        if result.outcome not in (Outcome.BUSY, Outcome.DONE):
            printer(result)

    return show
