"""Exit codes a script can act on: each outcome's code, and which wins when several apply."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from worker import exits
from worker.errors import (
    ArchiveError,
    ConfigError,
    LedgerError,
    LedgerUnavailable,
    ProviderRejected,
    ProviderUnavailable,
    RedisUnavailable,
    VerifyError,
)
from worker.outcomes import JobResult, Outcome, SweepReport, SweepSummary

CLEAN = SweepReport(provider="daily").summary()


def summary(**changes: Any) -> SweepSummary:
    return replace(CLEAN, **changes)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ((), 0),
        ((0, 0), 0),
        ((1, 0), 1),
        ((4, 1), 4),
        ((3, 4, 1), 3),
        ((130, 3), 130),
        ((2, 130, 3, 4, 1), 2),
    ],
)
def test_the_most_severe_code_wins_in_the_documented_order(
    codes: tuple[int, ...], expected: int
) -> None:
    assert exits.most_severe(codes) == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, exits.OK),
        ({"archived": 3, "deleted": 3, "skipped": 5}, exits.OK),
        ({"busy": True, "busy_detail": "host-a pid 12"}, exits.OK),
        ({"deferred": 1}, exits.INCOMPLETE),
        ({"kept": 1}, exits.INCOMPLETE),
        ({"failed": 1}, exits.INCOMPLETE),
        ({"stopped": 2, "braked": True}, exits.BRAKED),
        ({"braked": True, "failed": 1, "deferred": 1}, exits.BRAKED),
        ({"listing_error": "daily: could not be reached", "unreachable": True}, exits.UNREACHABLE),
        ({"unreachable": True, "braked": True, "failed": 1}, exits.UNREACHABLE),
    ],
)
def test_each_sweep_outcome_has_its_code(changes: dict[str, Any], expected: int) -> None:
    assert exits.sweep_code(summary(**changes)) == expected


def test_a_sweep_over_several_providers_exits_with_the_most_severe() -> None:
    summaries = [
        summary(deferred=1),
        summary(provider="loom", braked=True),
        summary(provider="dato"),
    ]
    assert exits.sweep_exit_code(summaries) == exits.BRAKED
    assert exits.sweep_exit_code([*summaries, summary(unreachable=True)]) == exits.UNREACHABLE


def report_of(*results: JobResult, listing_error: str | None = None) -> SweepSummary:
    report = SweepReport(provider="daily", listing_error=listing_error)
    for result in results:
        report.add(result)
    return report.summary()


def job(outcome: Outcome, *, unreachable: bool = False) -> JobResult:
    return JobResult("daily", "j", outcome, unreachable=unreachable)


def test_a_failed_listing_makes_the_sweep_unreachable() -> None:
    assert report_of(listing_error="daily: the provider could not be reached").unreachable


def test_a_sweep_is_unreachable_only_when_every_job_it_tried_could_not_reach() -> None:
    down = job(Outcome.DEFERRED, unreachable=True)
    assert report_of(down, down, job(Outcome.NOT_DUE)).unreachable
    assert not report_of(down, job(Outcome.DELETED)).unreachable
    assert not report_of(down, job(Outcome.DEFERRED)).unreachable
    assert not report_of(job(Outcome.NOT_DUE)).unreachable  # nothing tried, nothing to say


def test_one_job_that_could_not_reach_redis_or_the_ledger_makes_the_sweep_unreachable() -> None:
    # Every job needs them: the ones after it would meet the same, whatever came before.
    outage = JobResult(
        "daily",
        "j",
        Outcome.DEFERRED,
        unreachable=True,
        outage="Redis at 127.0.0.1:6379 cannot be reached",
    )
    summary = report_of(job(Outcome.DELETED), outage)
    assert summary.unreachable
    assert exits.sweep_code(summary) == exits.UNREACHABLE


def test_a_job_stopped_by_the_brake_marks_the_sweep_braked() -> None:
    assert report_of(job(Outcome.DELETED), job(Outcome.STOPPED)).braked
    assert not report_of(job(Outcome.DELETED)).braked
    report = SweepReport(provider="daily", braked=True)  # the sweep says so itself
    assert report.summary().braked


def s3_error(status: int) -> ClientError:
    response: Any = {"Error": {"Code": "X"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "HeadObject")


def archive_error(cause: Exception) -> ArchiveError:
    try:
        raise ArchiveError("S3 answered") from cause
    except ArchiveError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (ProviderUnavailable("503"), True),
        (ProviderRejected("401"), False),
        (archive_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:9")), True),
        (archive_error(s3_error(503)), True),
        (archive_error(s3_error(403)), False),
        (ArchiveError("no cause"), False),
        (VerifyError("the stored object differs"), False),
        (ConfigError("bad"), False),
        (RedisUnavailable("Redis at 127.0.0.1:6379 cannot be reached"), True),
        (LedgerUnavailable("the ledger at sqlite:///l.db cannot be opened"), True),
        (LedgerError("the claim lapsed"), False),
    ],
)
def test_unreachable_means_the_far_side_could_not_be_reached(
    error: Exception, unreachable: bool
) -> None:
    assert exits.is_unreachable(error) is unreachable


def test_the_help_text_lists_every_code_and_the_precedence() -> None:
    text = exits.help_text()
    assert "2 > 130 > 3 > 4 > 1 > 0" in text
    for code in exits.PRECEDENCE:
        assert f"\n  {code} " in text
