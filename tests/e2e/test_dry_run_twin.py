"""The dry run is the real run's twin: for the same ledger and the same provider answers, it
takes the same steps in the same order, up to the first that would change anything, and
reports what the real run then does. Daily's simulator over HTTP, the S3 server, SQLite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import (
    backoff_passed,
    config_data,
    daily_provider,
    process_again,
    settings_of,
)
from worker.bootstrap import Runtime, build_runtime
from worker.dry_run import plan_job
from worker.outcomes import Outcome
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import S3Server
from worker.sweep import sweep_provider

# What the dry run reports, against what the real run then did.
REPORTED_AS = {
    Outcome.WOULD_DELETE: Outcome.DELETED,
    Outcome.WOULD_ARCHIVE: Outcome.ARCHIVED,
}
TXT = [("txt", b"twin\n")]


def _finished(sim: DailySimulator, rt: Runtime) -> str:
    return sim.add_job("finished", transcription=TXT)


def _running(sim: DailySimulator, rt: Runtime) -> str:
    return sim.add_job("processing")


def _unknown_status(sim: DailySimulator, rt: Runtime) -> str:
    return sim.add_job("paused", transcription=TXT)


def _held(sim: DailySimulator, rt: Runtime) -> str:
    job_id = sim.add_job("finished", transcription=TXT)
    rt.ledger.operator.set_hold("daily", job_id, held=True, now=rt.clock(), reason="twin")
    return job_id


def _gone(sim: DailySimulator, rt: Runtime) -> str:
    job_id = sim.add_job("finished", transcription=TXT)
    rt.ledger.operator.track("daily", [job_id], now=rt.clock())
    sim.jobs.pop(job_id)
    return job_id


def _archived_read_only(sim: DailySimulator, rt: Runtime) -> str:
    job_id = sim.add_job("finished", transcription=TXT)
    ro = build_runtime(rt.settings.model_copy(update={"defaults": _read_only(rt)}))
    sweep_provider(ro, "daily")
    ro.close()
    return job_id


def _archived_then_changed(sim: DailySimulator, rt: Runtime) -> str:
    job_id = _archived_read_only(sim, rt)
    sim.add_output(job_id, "summary", "txt", b"later\n")
    return job_id


def _archived_then_running_again(sim: DailySimulator, rt: Runtime) -> str:
    job_id = _archived_read_only(sim, rt)
    sim.set_status(job_id, "processing")
    return job_id


def _deleting_then_changed(sim: DailySimulator, rt: Runtime) -> str:
    job_id = sim.add_job("finished", transcription=TXT)
    sim.fail_next_delete(job_id, keeps_job=True)
    process_again(rt, "daily", job_id)
    sim.add_output(job_id, "transcription", "vtt", b"WEBVTT\n")
    backoff_passed(rt, "daily", job_id)
    return job_id


def _read_only(rt: Runtime) -> Any:
    return rt.settings.defaults.model_copy(update={"read_only": True})


SCENARIOS: dict[str, Callable[[DailySimulator, Runtime], str]] = {
    "finished and due": _finished,
    "still running": _running,
    "a status nobody knows": _unknown_status,
    "held": _held,
    "gone at the provider": _gone,
    "archived, unchanged": _archived_read_only,
    "archived, then a new output": _archived_then_changed,
    "archived, then running again": _archived_then_running_again,
    "delete sent in part, then a new output": _deleting_then_changed,
}


@pytest.mark.parametrize("arrange", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_the_dry_run_takes_the_real_runs_steps_and_reports_what_it_then_does(
    arrange: Callable[[DailySimulator, Runtime], str],
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    sqlite_url: str,
) -> None:
    # given: a job in the ledger and at Daily, as the scenario leaves it
    data = config_data(
        bucket=bucket,
        endpoint_url=s3_server.endpoint_url,
        ledger_url=sqlite_url,
        providers={"daily": daily_provider(daily_sim)},
    )
    real = build_runtime(settings_of(data))
    job_id = arrange(daily_sim, real)

    # when: the dry run plans the job, then the real run processes it
    dry = build_runtime(settings_of(data), dry_run=True)
    planned = plan_job(dry, "daily", job_id)
    dry.close()
    done = process_again(real, "daily", job_id)
    real.close()

    # then: the same steps up to the first that changes anything, and the same end
    assert planned.steps, "the dry run took no step"
    assert done.steps[: len(planned.steps)] == planned.steps
    assert REPORTED_AS.get(planned.outcome, planned.outcome) == done.outcome, (
        planned.steps,
        done.steps,
        done.error,
    )
