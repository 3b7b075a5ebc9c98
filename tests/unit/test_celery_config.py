"""Beat schedules, leases and timeouts derived from the configuration keep their promises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery

from tests.helpers import settings_of
from worker.celery_app import celery_config, sweep_lease_ttl, sweep_queue
from worker.errors import ConfigError
from worker.schedules import schedule_of, schedule_problem, schedule_problems, shortest_period


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


@pytest.mark.parametrize("cron", ["61 * * * *", "0 0 30 2 *", "0 0 31 4,6 *"])
def test_beat_refuses_a_schedule_it_cannot_run_naming_the_providers_key(cron: str) -> None:
    settings = settings_of(
        {
            "archive": {"bucket": "acme-archive"},
            "providers": {"daily": {"type": "daily", "api_key": "k", "schedule": cron}},
        }
    )
    with pytest.raises(ConfigError, match=r"providers\.daily\.schedule"):
        celery_config(settings)


def test_a_schedule_that_comes_round_only_decades_from_now_is_a_problem() -> None:
    # 29 February falling on a Monday: 2044, then 2072
    settings = settings_of(
        {
            "archive": {"bucket": "acme-archive"},
            "defaults": {"schedule": "0 0 29 2 1"},
            "providers": {"daily": {"type": "daily", "api_key": "k"}},
        }
    )
    (problem,) = schedule_problems(settings, now=datetime(2026, 11, 23, tzinfo=UTC))
    assert problem.key == "defaults.schedule"
    assert "2044-02-29" in problem.message
    assert "daily" in problem.message
    # Every 29 February is fine, even across 2100, which is no leap year.
    assert schedule_problem("0 0 29 2 *", datetime(2097, 3, 1, tzinfo=UTC)) is None


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
    sweeps = {name for name, entry in beat.items() if entry["task"] == "retention.sweep"}
    assert sweeps == {"retention-sweep-daily", "retention-sweep-daily_eu"}


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
    from worker.tasks import TRANSIENT_INFRA, process_job_task, scrub_task, sweep

    assert sweep.soft_time_limit
    assert sweep.time_limit
    assert sweep.soft_time_limit < sweep.time_limit
    # A scrub runs under the app's limits, a job's, which the visibility timeout outlasts: a
    # limit of its own could outlast it and hand a running scrub to a second worker.
    assert scrub_task.soft_time_limit is None
    assert scrub_task.time_limit is None
    for task in (sweep, process_job_task, scrub_task):
        # Options Celery keeps as plain attributes, which its type stubs do not declare.
        assert getattr(task, "autoretry_for") == TRANSIENT_INFRA  # noqa: B009
        assert getattr(task, "retry_backoff")  # noqa: B009
        assert getattr(task, "retry_jitter")  # noqa: B009
    assert app.conf.task_acks_late
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.worker_max_tasks_per_child
    assert app.conf.worker_max_memory_per_child


def test_sweeps_have_a_queue_of_their_own_that_a_plain_worker_consumes_too() -> None:
    # given a deployment whose jobs queue is "acme"
    settings = settings_of(
        {
            "archive": {"bucket": "acme-archive"},
            "broker": {"queue": "acme"},
            "providers": {"daily": {"type": "daily", "api_key": "k"}},
        }
    )

    config = celery_config(settings)

    # then beat sends sweeps and the scrub to acme.sweeps, never behind a backlog of jobs
    assert sweep_queue(settings) == "acme.sweeps"
    assert {entry["options"]["queue"] for entry in config["beat_schedule"].values()} == {
        "acme.sweeps"
    }
    assert config["task_routes"]["retention.sweep"] == {"queue": "acme.sweeps"}
    assert config["task_routes"]["retention.scrub"] == {"queue": "acme.sweeps"}
    assert config["task_routes"]["retention.process_job"] == {"queue": "acme"}
    assert config["task_default_queue"] == "acme"
    # and both are declared, so a worker started without -Q consumes both, each under the
    # exchange and routing key Celery gives a queue it creates by name
    queues = {q.name: q for q in config["task_queues"]}
    assert set(queues) == {"acme", "acme.sweeps"}
    for name, queue in queues.items():
        assert (queue.exchange.name, queue.routing_key) == (name, name)


def test_a_sweep_the_router_sends_lands_in_the_sweeps_queue() -> None:
    # A fresh app: Celery caches its router and queues on first use.
    settings = settings_of({"archive": {"bucket": "acme-archive"}, "broker": {"queue": "acme"}})
    app = Celery("routing", set_as_current=False)
    app.conf.update(celery_config(settings))
    route = app.amqp.router.route({}, "retention.sweep", ("daily",), {})
    job = app.amqp.router.route({}, "retention.process_job", ("daily", "j"), {})
    assert route["queue"].name == "acme.sweeps"
    assert job["queue"].name == "acme"


def test_a_weekly_scrub_is_scheduled_that_expires_after_a_day() -> None:
    settings = settings_of({"archive": {"bucket": "acme-archive"}})
    entry = celery_config(settings)["beat_schedule"]["retention-scrub"]
    assert entry["task"] == "retention.scrub"
    assert entry["schedule"] == schedule_of("0 4 * * 0")
    assert entry["options"]["expires"] == 86400


def test_task_events_are_sent_for_flower_and_celery_exporter() -> None:
    from worker.celery_app import app

    assert app.conf.worker_send_task_events
    assert app.conf.task_send_sent_event


def test_an_idle_worker_stops_at_once_and_beat_ticks_within_a_heartbeat_period() -> None:
    settings = settings_of(
        {
            "archive": {"bucket": "acme-archive"},
            "worker": {"heartbeat_dir": "/var/lib/retention/health", "heartbeat_seconds": 10},
            "providers": {"daily": {"type": "daily", "api_key": "k", "schedule": "0 3 * * 0"}},
        }
    )
    config = celery_config(settings)
    # Soft shutdown only for a worker with jobs running (tests/e2e/test_liveness.py).
    assert config["worker_enable_soft_shutdown_on_idle"] is False
    # A weekly schedule: beat would sleep up to beat_max_loop_interval between ticks.
    assert config["beat_max_loop_interval"] == 10
    assert config["beat_scheduler"] == "worker.liveness:HeartbeatScheduler"


@pytest.mark.parametrize(
    ("broker", "backend"),
    [("redis://cache:6379/2", "redis://cache:6379/2"), ("amqp://rabbit//", None)],
)
def test_track_messages_go_to_the_jobs_queue_and_only_their_answers_are_kept(
    broker: str, backend: str | None
) -> None:
    settings = settings_of(
        {
            "archive": {"bucket": "acme-archive"},
            "broker": {"url": broker, "queue": "acme"},
            "providers": {
                "loom": {"type": "loom", "base_url": "https://l", "key": "k", "secret": "s"}
            },
        }
    )
    config = celery_config(settings)
    assert config["task_routes"]["retention.track"] == {"queue": "acme"}
    # Kept in the broker's Redis when it is one: an application may wait for the answer.
    assert config["result_backend"] == backend
    from worker import tasks

    assert tasks.track_task.ignore_result is False
    assert tasks.sweep.ignore_result is True
    assert tasks.process_job_task.ignore_result is True
