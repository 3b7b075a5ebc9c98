"""Kill -9 at every step boundary, then run again: every due job converges, and no delete ever
arrives at the provider before the job's manifest and files are in the archive."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.scenario import DUE, Scenario, build, folder
from tests.helpers import (
    config_data,
    objects,
    run_cli,
    run_process,
    write_config,
    write_to_bucket,
)
from worker.ledger import Ledger
from worker.simulators.blobs import chunks_of
from worker.simulators.daily import DailySimulator
from worker.simulators.datocms import DatoCmsSimulator
from worker.simulators.http import Request
from worker.simulators.s3server import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Short leases, so a rerun can take over a killed worker's claims within seconds.
FAST_LEASES = {"job_lease_seconds": 2, "sweep_lease_seconds": 2}
POINTS = [
    "after_download",
    "after_upload",
    "after_verify",
    "after_manifest",
    "after_delete_sent",
    "after_provider_deleted",
]


@dataclass
class DeleteGuard:
    """At the moment a DELETE arrives, the job's manifest and every file it lists must already
    be in the archive. Runs in the simulator's thread, before the delete takes effect."""

    s3: S3Client
    bucket: str
    provider: str
    job_of: Callable[[str], str | None]
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    def __call__(self, request: Request) -> None:
        if request.method != "DELETE":
            return
        job_id = self.job_of(request.path)
        if job_id is None:
            return
        base = folder(self.provider, job_id)
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=base + "manifest.json")["Body"]
            manifest = json.loads(body.read())
        except Exception as exc:
            self.violations.append(f"{job_id}: DELETE before a manifest ({exc})")
            return
        for entry in manifest["files"]:
            try:
                head = self.s3.head_object(Bucket=self.bucket, Key=entry["key"])
            except Exception:
                self.violations.append(f"{job_id}: DELETE before {entry['key']} was stored")
                continue
            if head["ContentLength"] != entry["size"]:
                self.violations.append(f"{job_id}: {entry['key']} has the wrong size")
        self.checked += 1


def daily_job(path: str) -> str | None:
    match = re.fullmatch(r"/v1/batch-processor/([^/]+)", path)
    return match.group(1) if match else None


def converge(config: Path, ledger_url: str, provider: str, ids: list[str], *, runs: int = 4) -> int:
    """Run sweeps until every job in ``ids`` is deleted; return how many runs it took."""
    ledger = Ledger.open(ledger_url)
    try:
        for run in range(1, runs + 1):
            time.sleep(2.5)  # the killed worker's claims and lease expire
            result = run_cli("sweep", "--json", config=config)
            assert result.code in (0, 1), result.stderr
            states = {
                job_id: getattr(ledger.query.get(provider, job_id), "state", None) for job_id in ids
            }
            if all(state == "deleted" for state in states.values()):
                return run
        raise AssertionError(f"did not converge after {runs} runs: {states}")
    finally:
        ledger.close()


def assert_converged(scenario: Scenario, s3: S3Client, guard: DeleteGuard) -> None:
    assert guard.violations == []
    archived = objects(s3, scenario.bucket, "archive/")
    for label in DUE:
        job_id = scenario.ids[label]
        base = folder("daily", job_id)
        for key, content in scenario.outputs[job_id].items():
            assert archived[base + key] == b"".join(chunks_of(content))
        assert base + "manifest.json" in archived
        assert base + "deletion.json" in archived
        deletes = scenario.daily.seen("DELETE", f"/{job_id}$")
        # Once, or twice when the first answer was lost: then the second finds it gone.
        assert len(deletes) in (1, 2), label
        if len(deletes) == 2:
            assert deletes[1].status == 404
    assert s3.list_objects_v2(Bucket=scenario.custom_bucket).get("KeyCount") == 0
    assert guard.checked >= len(DUE)


@dataclass
class Recovery:
    """One kill point's run: its scenario, its guard, and how long recovery took."""

    point: str
    scenario: Scenario
    guard: DeleteGuard
    config: Path
    ledger_url: str
    seconds: float | None = None
    sweeps: int = 0
    error: str | None = None


def recover(run: Recovery, *, every: float, limit: float) -> None:
    """Kill a sweep at ``run.point``, then start a sweep every ``every`` seconds until every
    due job is deleted, or ``limit`` seconds have passed since the kill."""
    try:
        killed = run_process(
            "sweep", config=run.config, module="tests.e2e.crashing", before=(run.point,)
        )
        if killed.code != -9:
            run.error = f"not killed ({killed.code}): {killed.stderr[-1000:]}"
            return
        started = time.monotonic()
        ids = [run.scenario.ids[label] for label in DUE]
        ledger = Ledger.open(run.ledger_url)
        try:
            while time.monotonic() - started < limit:
                time.sleep(every)
                # A process each: these recoveries run side by side, one thread each.
                result = run_process("sweep", "--json", config=run.config)
                run.sweeps += 1
                if result.code not in (0, 1):
                    run.error = result.stderr[-1000:]
                    return
                rows = [ledger.query.get("daily", job_id) for job_id in ids]
                if all(row is not None and row.state == "deleted" for row in rows):
                    run.seconds = time.monotonic() - started
                    return
        finally:
            ledger.close()
    except Exception as exc:  # reported by the test, with the point it happened at
        run.error = f"{type(exc).__name__}: {exc}"


@pytest.mark.slow
def test_with_default_settings_a_sweep_killed_at_any_step_boundary_recovers_within_minutes(
    s3: S3Client, s3_server: S3Server, tmp_path: Path
) -> None:
    # given: for each step boundary, its own Daily accounts, buckets and ledger, the default
    # leases (30 s) and a guard on every DELETE
    runs: list[Recovery] = []
    sims: list[DailySimulator] = []
    for n, point in enumerate(POINTS):
        daily = DailySimulator(f"daily-kill-{n}-key", bucket_writer=write_to_bucket(s3))
        later = DailySimulator(f"later-kill-{n}-key", domain="later")
        for sim in (daily, later):
            sim.start()
            sims.append(sim)
        bucket, custom = (
            f"archive-kill-{n}-{uuid.uuid4().hex[:8]}",
            f"own-kill-{n}-{uuid.uuid4().hex[:8]}",
        )
        s3.create_bucket(Bucket=bucket)
        s3.create_bucket(Bucket=custom)
        scenario = build(daily, later, bucket, custom)
        ledger_url = f"sqlite:///{tmp_path}/{point}.db"
        config = scenario.write(tmp_path / f"{point}.toml", ledger_url, s3_server.endpoint_url)
        guard = DeleteGuard(s3, bucket, "daily", daily_job)
        daily.on_request = guard
        assert run_cli("hold", "daily", scenario.ids["held"], config=config).code == 0
        runs.append(Recovery(point, scenario, guard, config, ledger_url))

    # when: a sweep is killed at each boundary (all at once), then a sweep starts every few
    # seconds, as a tight schedule or an operator retrying by hand would
    try:
        threads = [
            threading.Thread(target=recover, args=(run,), kwargs={"every": 4.0, "limit": 150.0})
            for run in runs
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for sim in sims:
            sim.stop()

    # then: every due job is archived, verified and deleted once, within two minutes of
    # the kill, and no delete arrived before its archive
    figures = {run.point: (run.seconds, run.sweeps) for run in runs}
    print(f"recovery after SIGKILL, seconds and sweeps: {figures}")
    for run in runs:
        assert run.error is None, (run.point, run.error)
        assert run.seconds is not None, (run.point, "did not converge")
        assert run.seconds <= 120, (run.point, run.seconds)
        assert_converged(run.scenario, s3, run.guard)
        for label in DUE:
            job_id = run.scenario.ids[label]
            assert run.scenario.daily.deleted.count(job_id) == 1, (run.point, label)


def dato_job(path: str) -> str | None:
    match = re.fullmatch(r"/uploads/([^/]+)/tracks/([^/]+)", path)
    return f"{match.group(1)}/{match.group(2)}" if match else None


@pytest.mark.slow
def test_a_sweep_killed_while_polling_a_datocms_delete_resumes_without_a_second_delete(
    bucket: str, s3: S3Client, s3_server: S3Server, sqlite_url: str, tmp_path: Path
) -> None:
    # given: tracks of a listed upload, and a guard on every DELETE
    sim = DatoCmsSimulator("dato-crash-token-11aa", pending_polls=1)
    sim.start()
    upload = sim.add_upload()
    ids = [sim.add_track(upload, status) for status in ("ready", "errored", "ready")]
    guard = DeleteGuard(s3, bucket, "dato", dato_job)
    sim.on_request = guard
    config = write_config(
        tmp_path / "retention.toml",
        config_data(
            bucket=bucket,
            endpoint_url=s3_server.endpoint_url,
            ledger_url=sqlite_url,
            providers={"dato": sim.provider_table(upload_ids=[upload], concurrency=1)},
            worker=FAST_LEASES,
        ),
    )
    try:
        # when: the sweep dies right before its first poll, then sweeps run again
        killed = run_process(
            "sweep", config=config, module="tests.e2e.crashing", before=("while_polling",)
        )
        assert killed.code == -9, killed.stderr[-2000:]
        ledger = Ledger.open(sqlite_url)
        pending = [
            job_id
            for job_id in ids
            if (row := ledger.query.get("dato", job_id)) and row.delete_handle
        ]
        ledger.close()
        assert pending, "the kill came after a delete was accepted and its handle stored"
        runs = converge(config, sqlite_url, "dato", ids)
    finally:
        sim.stop()

    # then: each track was deleted by one request, never before its manifest
    assert guard.violations == []
    assert guard.checked == len(ids)
    assert [sim.deletes_of(job_id) for job_id in ids] == [1, 1, 1]
    assert sorted(sim.deleted) == sorted(ids)
    assert runs <= 2
