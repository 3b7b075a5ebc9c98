"""The pure parts of the eligibility rule (terminal, due), tested on both sides of each
boundary; ``next_step`` itself is tested in test_next_step.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.domain import (
    Phase,
    due_at,
    is_due,
    is_terminal,
    retry_delay,
    terminal_since,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("phase", "terminal"),
    [
        (Phase.SUCCEEDED, True),
        (Phase.FAILED, True),
        (Phase.RUNNING, False),
        (Phase.UNKNOWN, False),
    ],
)
def test_only_succeeded_and_failed_are_terminal(phase: Phase, terminal: bool) -> None:
    assert is_terminal(phase) is terminal


@pytest.mark.parametrize("days", [0, 3, 30])
def test_a_job_is_due_exactly_retain_days_after_it_became_terminal(days: int) -> None:
    boundary = T0 + timedelta(days=days)
    assert not is_due(T0, days, boundary - SECOND)
    assert is_due(T0, days, boundary)
    assert is_due(T0, days, boundary + SECOND)


def test_the_providers_finish_time_starts_the_clock_when_it_is_earlier() -> None:
    finished = T0 - timedelta(days=10)
    assert terminal_since(finished, first_seen_terminal_at=T0) == finished


def test_our_sighting_starts_the_clock_when_the_provider_gives_no_time() -> None:
    assert terminal_since(None, first_seen_terminal_at=T0) == T0


def test_a_finish_time_in_the_future_does_not_postpone_past_our_sighting() -> None:
    assert terminal_since(T0 + timedelta(hours=2), first_seen_terminal_at=T0) == T0


def test_negative_retention_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        due_at(T0, -1)


def test_retry_delay_grows_exponentially_with_jitter_and_is_capped() -> None:
    lows = [retry_delay(n, rand=0.0).total_seconds() for n in range(1, 6)]
    highs = [retry_delay(n, rand=1.0).total_seconds() for n in range(1, 6)]
    assert lows == [30, 60, 120, 240, 480]
    assert highs == [60, 120, 240, 480, 960]
    assert retry_delay(40, rand=1.0) == timedelta(hours=6)
