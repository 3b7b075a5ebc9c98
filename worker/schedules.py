"""Cron schedules as Celery beat runs them.

One place builds Celery's ``crontab`` from a five-field expression, so beat, the metrics'
dead-man's switch, `config validate` and `check` all judge a schedule by the same object.
A schedule beat would refuse (``61 * * * *``), or one that never comes round (``0 0 30 2 *``),
is a configuration error before beat starts, not a beat that exits 2 and, behind init
containers that gate on `check`, a crash loop.

This imports Celery's schedules (and with them kombu): the settings module does not, so that
commands that need no schedule stay quick.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, cast

from celery.schedules import crontab

from worker.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from worker.settings import Problem, Settings

# A schedule whose next run is further off than this is refused: its provider's jobs would
# wait at the provider for years. A 29 February schedule comes round within it, even across
# a century year that is not a leap year (2096 to 2104).
HORIZON = timedelta(days=8 * 366)


class _CronFields(Protocol):
    """The parsed fields crontab keeps (its type stubs do not declare them)."""

    minute: set[int]
    hour: set[int]


def schedule_of(expression: str) -> crontab:
    """The schedule beat runs for ``expression``; ConfigError if Celery refuses it."""
    minute, hour, day_of_month, month, day_of_week = expression.split()
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month,
            day_of_week=day_of_week,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"schedule {expression!r} is not a valid cron expression: {exc}"
        ) from None


def next_run_after(schedule: crontab, when: datetime) -> datetime:
    """The first run ``schedule`` calls for strictly after ``when`` (beat's own arithmetic,
    Celery's ``crontab.remaining_delta``, so the metrics and beat never disagree)."""
    start, delta, _ = schedule.remaining_delta(when)
    due: datetime = start + delta
    return due


def shortest_period(schedule: crontab) -> timedelta:
    """The shortest gap between two runs of a cron schedule (a lower bound on its period).

    Sweep leases and the ``expires`` of queued sweeps are kept below it, so a stuck sweep
    never overlaps the next one and sweeps queued while workers were down are dropped.
    """
    fields = cast(_CronFields, schedule)
    times = sorted(h * 60 + m for h in fields.hour for m in fields.minute)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    gaps.append(times[0] + 24 * 60 - times[-1])
    return timedelta(minutes=min(gaps))


def schedule_problem(expression: str, now: datetime) -> str | None:
    """What is wrong with ``expression`` as a beat schedule, or None: Celery refuses to
    build it, or it does not run within ``HORIZON`` of ``now``."""
    fields = expression.split()
    try:
        schedule = crontab(
            minute=fields[0],
            hour=fields[1],
            day_of_month=fields[2],
            month_of_year=fields[3],
            day_of_week=fields[4],
        )
        due = next_run_after(schedule, now)
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        return f"{expression!r} is not a schedule Celery beat can run: {str(exc).rstrip('.')}"
    if due - now > HORIZON:
        return (
            f"{expression!r} next runs on {due:%Y-%m-%d}, more than {HORIZON.days // 366} years "
            "from now: its jobs would wait at the provider until then"
        )
    return None


def schedule_problems(settings: Settings, *, now: datetime | None = None) -> list[Problem]:
    """Every schedule of the configuration that beat would refuse or never run, each by
    its key: ``providers.NAME.schedule``, or ``defaults.schedule`` with the providers that
    sweep on it."""
    from worker.settings import Problem

    now = now or datetime.now(UTC)
    problems = []
    inherit = [name for name, p in settings.providers.items() if p.schedule is None]
    message = schedule_problem(settings.defaults.schedule, now)
    if message is not None:
        if inherit:
            message += f"; {', '.join(inherit)} sweep{'s' if len(inherit) == 1 else ''} on it"
        problems.append(Problem("defaults.schedule", message))
    for name, provider in settings.providers.items():
        if provider.schedule is None:
            continue
        message = schedule_problem(provider.schedule, now)
        if message is not None:
            problems.append(Problem(f"providers.{name}.schedule", message))
    return problems


def check_schedules(settings: Settings, source: Path) -> None:
    """Raise one ConfigError naming every schedule beat would refuse (exit 2)."""
    from worker.settings import ConfigReport

    problems = schedule_problems(settings)
    if problems:
        raise ConfigError(ConfigReport(source, None, tuple(problems)).message())
