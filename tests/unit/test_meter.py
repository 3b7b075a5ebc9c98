"""A sweep's progress as rclone shows a transfer's (worker.render.meter), and where it goes:
stderr, live at a terminal, plain lines elsewhere, never into the results on stdout."""

from __future__ import annotations

import pytest

from worker.outcomes import JobResult, Outcome, PlannedFile
from worker.render import sweep as sweep_render
from worker.render.meter import ProgressLines, ProviderMeter, SweepMeter, clock_time
from worker.render.progress import SweepProgress
from worker.render.sweep import sweep_feed
from worker.render.view import Format

MIB = 1024 * 1024


def deleted(job_id: str, size: int) -> JobResult:
    return JobResult("daily", job_id, Outcome.DELETED, archived=True, deleted=True, bytes=size)


def test_a_meter_counts_jobs_of_those_known_and_bytes_archived() -> None:
    meter = ProviderMeter("daily")
    meter.found(4, now=100.0)
    meter.finished(deleted("a", 3 * MIB), now=101.0)
    meter.finished(JobResult("daily", "b", Outcome.NOT_DUE), now=102.0)

    assert (meter.done, meter.known, meter.bytes) == (2, 4, 3 * MIB)
    assert meter.text(104.0) == "2/4+ jobs, 3.0 MiB archived, 768.0 KiB/s, ETA 0:04"


def test_rate_and_time_left_wait_for_a_second_of_work() -> None:
    meter = ProviderMeter("daily")
    meter.found(2, now=10.0)
    meter.finished(deleted("a", 1000), now=10.5)
    assert meter.byte_rate(10.99) is None
    assert meter.eta(10.99) is None
    assert meter.byte_rate(11.0) == 1000.0
    assert meter.eta(11.0) == 1.0


def test_the_time_left_is_the_jobs_ahead_at_the_rate_jobs_finished() -> None:
    meter = ProviderMeter("daily", counted=True)
    meter.found(100, now=0.0)
    for n in range(25):
        meter.finished(deleted(f"j{n}", 0), now=50.0)
    assert meter.eta(50.0) == 150.0
    assert meter.text(50.0).endswith("25/100 jobs, 0 B archived, 0 B/s, ETA 2:30")


def test_a_finished_sweep_shows_no_time_left_and_never_more_done_than_known() -> None:
    meter = ProviderMeter("daily", counted=True)
    meter.found(1, now=0.0)
    meter.finished(deleted("a", 5), now=2.0)
    meter.finished(deleted("b", 5), now=4.0)
    assert meter.known == 2
    assert "ETA" not in meter.text(4.0)


def test_a_dry_run_counts_the_bytes_it_would_archive() -> None:
    meter = ProviderMeter("daily", dry_run=True)
    plan = [PlannedFile("k/a", "https://x/a", 10), PlannedFile("k/b", "https://x/b", None)]
    meter.finished(JobResult("daily", "a", Outcome.WOULD_DELETE, files=2, plan=plan), now=0.0)
    already = JobResult("daily", "b", Outcome.WOULD_DELETE, plan=plan, manifest_key="k/m.json")
    meter.finished(already, now=0.0)
    assert meter.bytes == 10
    assert "10 B would archive" in meter.text(0.0)


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.4, "0:00"), (35, "0:35"), (725, "12:05"), (10930, "3:02:10")]
)
def test_times_left_read_as_a_clock(seconds: float, shown: str) -> None:
    assert clock_time(seconds) == shown


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_lines_come_at_most_every_interval_and_once_at_the_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    meter = SweepMeter(["daily", "loom"], dry_run=False, clock=clock)
    lines = ProgressLines(meter, every=10.0)
    lines.update(meter.found("daily", 3))
    clock.now = 9.9
    lines.update(meter.finished(deleted("a", 10)))
    clock.now = 10.0
    lines.update(meter.finished(deleted("b", 10)))
    lines.update(meter.counted("loom"), final=True)  # never started: nothing to say
    lines.update(meter.counted("daily"), final=True)

    assert capsys.readouterr().err.splitlines() == [
        "progress daily: 0/3+ jobs, 0 B archived",
        "progress daily: 2/3+ jobs, 20 B archived, 2 B/s, ETA 0:05",
        "progress daily: 2/3 jobs, 20 B archived, 2 B/s, ETA 0:05",
    ]


# -- where it goes -------------------------------------------------------------------------


def at_terminal(monkeypatch: pytest.MonkeyPatch, stderr: bool) -> None:
    monkeypatch.setattr(sweep_render, "interactive_stderr", lambda: stderr)


@pytest.mark.parametrize("fmt", [Format.TEXT, Format.JSONL, Format.JSON])
def test_forced_progress_without_a_terminal_goes_to_stderr_and_leaves_stdout_alone(
    fmt: Format, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    at_terminal(monkeypatch, stderr=False)
    with sweep_feed(fmt, quiet=False, dry_run=False, providers=["daily"], progress=True) as feed:
        feed.found("daily", 1, True)
        feed(deleted("j-1", 2048))

    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == "progress daily: 1/1 jobs, 2.0 KiB archived"
    assert "progress" not in out
    if fmt is Format.TEXT:
        assert out == "deleted daily job j-1 (0 file(s), 2048 bytes archived)\n"


@pytest.mark.parametrize(("stderr", "quiet", "flag"), [(False, False, None), (True, True, None)])
def test_no_progress_by_default_without_a_terminal_or_with_q(
    stderr: bool,
    quiet: bool,
    flag: bool | None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at_terminal(monkeypatch, stderr=stderr)
    feed = sweep_feed(Format.TEXT, quiet=quiet, dry_run=False, providers=["daily"], progress=flag)
    with feed:
        feed.found("daily", 1, True)
        feed(deleted("j-1", 1))
    assert feed.display is None
    assert capsys.readouterr().err == ""


def test_no_progress_at_a_terminal_shows_each_jobs_line_instead(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    at_terminal(monkeypatch, stderr=True)
    with sweep_feed(
        Format.RICH, quiet=False, dry_run=False, providers=["daily"], progress=False
    ) as feed:
        feed(deleted("j-1", 1))
    out, err = capsys.readouterr()
    assert out == "deleted daily job j-1 (0 file(s), 1 bytes archived)\n"
    assert err == ""


def test_at_a_terminal_the_progress_is_live_on_stderr_with_only_failures_above_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    at_terminal(monkeypatch, stderr=True)
    monkeypatch.setenv("COLUMNS", "200")
    with sweep_feed(Format.RICH, quiet=False, dry_run=False, providers=["daily"]) as feed:
        assert isinstance(feed.display, SweepProgress)
        feed.found("daily", 2, True)
        feed(JobResult("daily", "j-1", Outcome.FAILED, error="daily job j-1: it broke"))
        feed(deleted("j-2", 3 * MIB))

    out, err = capsys.readouterr()
    assert out == "failed daily job j-1: it broke\n"
    assert "2/2 jobs, 3.0 MiB archived" in err
