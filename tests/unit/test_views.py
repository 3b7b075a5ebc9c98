"""Each result type's view, in every form a reader asks for, and the feeds a long command shows
while it runs: plain lines, JSON lines, and the live progress at a terminal."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest

from tests.helpers import settings_of
from tests.rows import job_row
from worker.check import Check, CheckRun, Note
from worker.config_view import Validation, effective_config
from worker.domain import JobRow, JobState
from worker.ledger.queries import FailedJob, ProviderStatus
from worker.outcomes import JobResult, Outcome, SentSweep, SweepSummary
from worker.render.checks import CheckView
from worker.render.config import ConfigView, ValidationView
from worker.render.errors import ErrorView
from worker.render.ledger import HoldView, MigrateView, RetryView, TrackView
from worker.render.progress import ScrubProgress
from worker.render.report import ReportView
from worker.render.restore import RestoreView
from worker.render.scrub import ScrubView, scrub_feed
from worker.render.status import StatusView
from worker.render.sweep import EnqueuedView, SweepView, sweep_feed
from worker.render.view import Feed, Format, Lines, View, show
from worker.reports import ReportRow
from worker.restore import Restored, RestoreRun
from worker.scrub import Finding, ScrubReport
from worker.settings import Problem

NOW = datetime(2026, 11, 23, 13, 19, tzinfo=UTC)


def summary(provider: str = "daily", **counts: Any) -> SweepSummary:
    fields: dict[str, Any] = {
        "provider": provider,
        "dry_run": False,
        "bytes": 0,
        "listed": 0,
        "dispatched": 0,
        "busy": False,
        "busy_detail": None,
        "stopped_reason": None,
        "listing_error": None,
        "duration_ms": 0,
        "skipped_by_reason": {},
    }
    for name in SweepSummary.__dataclass_fields__:
        fields.setdefault(name, 0)
    return SweepSummary(**(fields | counts))


def report_row(job_id: str) -> ReportRow:
    return {
        "provider": "daily",
        "job_id": job_id,
        "due_at": "2026-11-01T00:00:00+00:00",
        "retain_days": 7,
        "due_reason": "finished",
        "archived_at": "2026-11-02T00:00:00+00:00",
        "deleted_at": "2026-11-02T00:00:01+00:00",
        "files": 2,
        "bytes": 2048,
        "manifest_key": f"archive/daily/{job_id}/manifest.json",
        "receipt_key": f"archive/daily/{job_id}/deletion.json",
        "archive_keys": [f"archive/daily/{job_id}/a.txt", f"archive/daily/{job_id}/b.txt"],
        "provider_answer": "deleted",
        "provider_status_code": 200,
    }


def archived_row(job_id: str = "j-1") -> JobRow:
    return job_row(
        first_seen_at=NOW,
        job_id=job_id,
        state=JobState.ARCHIVED,
        provider_status="finished",
        archived_at=NOW,
        manifest_key=f"archive/daily/{job_id}/manifest.json",
        files_count=1,
        bytes_archived=6,
    )


DAMAGED = Finding("daily", "j-1", "archive/daily/j-1/a.txt", "holds 8 bytes; the manifest says 6")

# A view of each result type, made afresh for each test (some read their results once).
VIEWS: dict[str, Callable[[], View]] = {
    "sweep": lambda: SweepView([summary(deleted=2, bytes=10)], exit_code=0),
    "enqueued": lambda: EnqueuedView("q", iter([SentSweep("daily", "retention.sweep", "t-1")])),
    "status": lambda: StatusView(
        [
            ProviderStatus(
                "daily", {"failed": 1}, 0, [], 0, [FailedJob("j", 2, "broke", None)], [], [], 0
            )
        ]
    ),
    "check": lambda: CheckView(
        CheckRun(iter([Check("archive", True, "reachable", "warn", (Note("KMS", "warn", "off"),))]))
    ),
    "report": lambda: ReportView(iter([report_row("j-1"), report_row("j-2")]), since=NOW),
    "restore": lambda: RestoreView(
        RestoreRun(iter([Restored("archive/daily/j/a.txt", None, 6, True)])),
        "daily",
        "j",
        verify_only=True,
    ),
    "scrub": lambda: ScrubView(
        ScrubReport(jobs=1, files=1, findings=[DAMAGED]), read_fraction=0.0, exit_code=1
    ),
    "track": lambda: TrackView("loom", ("R1", "R2"), {"R2"}),
    "hold": lambda: HoldView("daily", "j", held=True, changed=True),
    "retry": lambda: RetryView("daily", "j", retried=True),
    "migrate": lambda: MigrateView("0006"),
    "config show": lambda: ConfigView(
        effective_config(
            settings_of(
                {
                    "archive": {"bucket": "acme"},
                    "providers": {"daily": {"type": "daily", "api_key": "k-secret"}},
                }
            ),
            source=Path("retention.toml"),
        )
    ),
    "config validate": lambda: ValidationView(
        Validation(Path("r.toml"), (Problem("archive.bucket", "is required"),), "invalid")
    ),
    "error": lambda: ErrorView("daily: unreachable", 3),
}


@pytest.mark.parametrize("name", VIEWS)
def test_every_view_reads_as_lines_and_as_exactly_one_json_document(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    show(VIEWS[name](), Format.TEXT)
    lines = capsys.readouterr().out

    show(VIEWS[name](), Format.JSON)
    document = capsys.readouterr().out

    assert lines.strip()
    json.loads(document)  # one document, nothing before or after it
    assert document.endswith("\n")
    if name != "report":  # a report's rows are a line each
        assert document.count("\n") == 1


@pytest.mark.parametrize("name", VIEWS)
def test_every_view_reads_as_json_lines_each_one_object(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    show(VIEWS[name](), Format.JSONL)

    lines = capsys.readouterr().out.splitlines()
    assert lines
    assert all(isinstance(json.loads(line), dict) for line in lines)


def test_a_view_without_tables_shows_its_lines_at_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    show(VIEWS["track"](), Format.RICH)

    assert capsys.readouterr().out == "tracking 2 job(s) of loom; 1 new\n"


def test_an_error_goes_to_stderr_alone(capsys: pytest.CaptureFixture[str]) -> None:
    show(ErrorView("daily: unreachable", 3), Format.TEXT, err=True)

    out, err = capsys.readouterr()
    assert (out, err) == ("", "error: daily: unreachable\n")


def test_a_report_is_printed_as_the_ledger_yields_it(capsys: pytest.CaptureFixture[str]) -> None:
    # given: rows that come one at a time, as the ledger's query yields them
    printed: list[str] = []

    def rows() -> Any:
        for n in range(3):
            printed.append(capsys.readouterr().out)
            yield report_row(f"j-{n}")

    # when
    show(ReportView(rows(), since=NOW), Format.JSON)

    # then: each row was asked for after the one before it was printed, not all at once
    assert [bool(out) for out in printed] == [True, True, True]


# -- feeds ----------------------------------------------------------------------------------


def failed(job_id: str = "j-1") -> JobResult:
    return JobResult("daily", job_id, Outcome.FAILED, error=f"daily job {job_id}: it broke")


def test_a_sweep_in_a_pipe_prints_a_line_per_job_that_needs_a_look(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with sweep_feed(Format.TEXT, quiet=False, dry_run=False, providers=["daily"]) as feed:
        feed(failed())
        feed(JobResult("daily", "j-2", Outcome.NOT_DUE))

    assert capsys.readouterr().out == "failed daily job j-1: it broke\n"


def test_a_sweep_with_jsonl_prints_a_json_line_per_job(capsys: pytest.CaptureFixture[str]) -> None:
    with sweep_feed(Format.JSONL, quiet=False, dry_run=False, providers=["daily"]) as feed:
        feed(failed())

    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert (record["message_type"], record["outcome"], record["job_id"]) == ("job", "failed", "j-1")


@pytest.mark.parametrize("fmt", [Format.TEXT, Format.RICH])
def test_quiet_or_json_sweeps_show_nothing_while_they_run(
    fmt: Format, capsys: pytest.CaptureFixture[str]
) -> None:
    for feed in (
        sweep_feed(fmt, quiet=True, dry_run=False, providers=["daily"]),
        sweep_feed(Format.JSON, quiet=False, dry_run=False, providers=["daily"]),
    ):
        with feed:
            feed(failed())

    assert capsys.readouterr().out == ""


def test_a_scrub_at_a_terminal_prints_each_damaged_key_above_its_progress_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")

    with scrub_feed(Format.RICH, quiet=False) as feed:
        assert isinstance(feed, ScrubProgress)
        feed(archived_row(), [DAMAGED])

    out = capsys.readouterr().out
    assert "DAMAGED  archive/daily/j-1/a.txt: holds 8 bytes" in out
    assert "1 problem(s)" in out


@pytest.mark.parametrize(("fmt", "quiet"), [(Format.TEXT, False), (Format.RICH, True)])
def test_a_scrub_prints_each_damaged_key_even_when_quiet(
    fmt: Format, quiet: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    with scrub_feed(fmt, quiet=quiet) as feed:
        feed(archived_row(), [DAMAGED])

    assert capsys.readouterr().out.startswith("DAMAGED  archive/daily/j-1/a.txt: holds 8 bytes")


def _gone(*_args: Any, **_kwargs: Any) -> None:
    raise BrokenPipeError(32, "Broken pipe")


def test_a_sweeps_lines_stop_quietly_once_the_reader_has_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: a reader that has gone (`retention sweep | head -1`)
    monkeypatch.setattr(click, "echo", _gone)
    seen: list[str] = []

    def lines_of(result: JobResult) -> list[str]:
        seen.append(result.job_id)
        return [result.job_id]

    feed: Feed[[JobResult]] = Lines(lines_of, past_a_gone_reader=True)

    # when: jobs go on finishing
    for n in range(3):
        feed(failed(f"j-{n}"))

    # then: no error for the sweep's threads; every job still went through the feed
    assert seen == ["j-0", "j-1", "j-2"]


def test_a_scrubs_lines_stop_the_scrub_once_the_reader_has_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(click, "echo", _gone)

    with pytest.raises(BrokenPipeError), scrub_feed(Format.TEXT, quiet=False) as feed:
        feed(archived_row(), [DAMAGED])


# The message_type of each view's JSON: the command's name for a command that prints one
# document, restic's "summary" for a long run's totals.
MESSAGE_TYPES = {
    "sweep": "summary",
    "enqueued": "enqueued",
    "status": "status",
    "check": "check",
    "report": "report",
    "restore": "restore",
    "scrub": "summary",
    "track": "track",
    "hold": "hold",
    "retry": "retry",
    "migrate": "migrate",
    "config show": "config_show",
    "config validate": "config_validate",
    "error": "exit_error",
}


@pytest.mark.parametrize("name", VIEWS)
@pytest.mark.parametrize("fmt", [Format.JSON, Format.JSONL])
def test_every_json_document_says_what_it_is(
    name: str, fmt: Format, capsys: pytest.CaptureFixture[str]
) -> None:
    show(VIEWS[name](), fmt)
    out = capsys.readouterr().out

    documents = (
        [json.loads(out)] if fmt is Format.JSON else [json.loads(line) for line in out.splitlines()]
    )
    assert [d["message_type"] for d in documents] == [MESSAGE_TYPES[name]] * len(documents)


def test_the_reports_json_is_a_document_with_its_rows_under_jobs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    show(VIEWS["report"](), Format.JSON)

    document = json.loads(capsys.readouterr().out)
    assert document["message_type"] == "report"
    assert [row["job_id"] for row in document["jobs"]] == ["j-1", "j-2"]
