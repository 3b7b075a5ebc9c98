"""Beat schedules, leases and timeouts derived from the configuration keep their promises."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers import settings_of
from worker.celery_app import (
    celery_config,
    schedule_of,
    shortest_period,
    sweep_lease_ttl,
)
from worker.errors import ConfigError


@pytest.mark.parametrize(
    ("cron", "period"),
    [
        ("0 * * * *", timedelta(hours=1)),
        ("*/30 * * * *", timedelta(minutes=30)),
        ("*/7 * * * *", timedelta(minutes=4)),  # :56 to :00 is the shortest gap
        ("0 3 * * *", timedelta(days=1)),
        ("15,20 9 * * 1-5", timedelta(minutes=5)),
    ],
)
def test_the_shortest_gap_between_runs(cron: str, period: timedelta) -> None:
    assert shortest_period(schedule_of(cron)) == period


@pytest.mark.parametrize("cron", ["* * * * *", "*/7 * * * *", "0 * * * *", "0 0 * * 0"])
def test_the_sweep_lease_is_shorter_than_the_schedule_period(cron: str) -> None:
    period = shortest_period(schedule_of(cron))
    assert sweep_lease_ttl(period) < period


def test_a_cron_expression_celery_refuses_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid cron"):
        schedule_of("61 * * * *")


def test_each_provider_gets_a_beat_entry_that_expires_before_the_next_run() -> None:
    settings = settings_of(
        {
            "archive": {"bucket": "acme-archive"},
            "defaults": {"schedule": "0 * * * *"},
            "providers": {
                "daily": {"type": "daily", "api_key": "k", "schedule": "*/30 * * * *"},
                "daily_eu": {"type": "daily", "api_key": "k"},
            },
        }
    )
    config = celery_config(settings)
    beat = config["beat_schedule"]
    assert beat["retention-sweep-daily"]["args"] == ("daily",)
    assert beat["retention-sweep-daily"]["options"]["expires"] == 30 * 60
    assert beat["retention-sweep-daily_eu"]["options"]["expires"] == 3600
    assert all(entry["task"] == "retention.sweep" for entry in beat.values())


def test_the_visibility_timeout_outlasts_the_longest_task_and_retry() -> None:
    settings = settings_of({"archive": {"bucket": "acme-archive"}})
    config = celery_config(settings)
    longest_retry = 600  # retry_backoff_max of the job task
    assert config["task_soft_time_limit"] < config["task_time_limit"]
    assert (
        config["broker_transport_options"]["visibility_timeout"]
        > config["task_time_limit"] + longest_retry
    )


def test_the_soft_shutdown_ends_inside_the_orchestrators_grace_period() -> None:
    settings = settings_of(
        {"archive": {"bucket": "acme-archive"}, "worker": {"grace_period_seconds": 30}}
    )
    config = celery_config(settings)
    assert 0 < config["worker_soft_shutdown_timeout"] < 30
    assert (
        config["visibility_timeout"]
        == config["broker_transport_options"]["visibility_timeout"]
        == config["result_backend_transport_options"]["visibility_timeout"]
    )


def test_every_task_has_time_limits_and_retries_only_transient_errors() -> None:
    from worker.celery_app import app
    from worker.tasks import TRANSIENT_INFRA, process_job_task, sweep

    assert sweep.soft_time_limit
    assert sweep.time_limit
    assert sweep.soft_time_limit < sweep.time_limit
    for task in (sweep, process_job_task):
        # Options Celery keeps as plain attributes, which its type stubs do not declare.
        assert getattr(task, "autoretry_for") == TRANSIENT_INFRA  # noqa: B009
        assert getattr(task, "retry_backoff")  # noqa: B009
        assert getattr(task, "retry_jitter")  # noqa: B009
    assert app.conf.task_acks_late
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.worker_max_tasks_per_child
    assert app.conf.worker_max_memory_per_child
