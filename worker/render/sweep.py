"""How a sweep reads: a line per job as it finishes, then a line (or a table row) per
provider, or one JSON document; and, sent to the Celery workers instead, what was sent.

The CLI and the demo render from here, so a count is named and ordered the same way wherever
a person or a script reads it. For scripts, as restic's ``--json`` does, every JSON object
says what it is in ``message_type``: ``"job"`` for one job's result (a line of ``--jsonl``),
``"summary"`` for the whole run (the one document of ``--json``, and the last line of
``--jsonl``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from worker.outcomes import JobResult, Outcome, SentSweep, SweepSummary, SweepTotals
from worker.redact import REDACTOR
from worker.render.meter import ProgressLines, ProviderMeter, SweepMeter
from worker.render.view import (
    Feed,
    Format,
    Lines,
    View,
    human_bytes,
    interactive_stderr,
    json_line,
)

# The columns of a sweep's summary, in the order they are shown.
COLUMNS = ("archived", "deleted", "deferred", "failed", "kept", "stopped", "skipped", "gone")


def counts_of(s: SweepSummary) -> dict[str, int]:
    """The summary's counts by column; a dry run shows what a real run would do."""
    counts = {name: int(getattr(s, name)) for name in COLUMNS}
    if s.dry_run:
        counts["archived"], counts["deleted"] = s.would_archive, s.would_delete
    return counts


def summary_line(s: SweepSummary) -> str:
    """One provider's sweep in a line (and a line each for a failed listing or the brake)."""
    if s.busy:
        text = f"{s.provider}: another sweep of this provider is running; nothing done"
        return text + (f" ({s.busy_detail})" if s.busy_detail else "")
    counts = counts_of(s)
    if s.dry_run:
        text = (
            f"{s.provider} (dry run): would archive {counts['archived']}, would delete "
            f"{counts['deleted']}, skip {counts['skipped']}, deferred {counts['deferred']}, "
            f"failed {counts['failed']}, kept {counts['kept']}"
        )
    else:
        shown = ", ".join(f"{name} {counts[name]}" for name in COLUMNS if name != "stopped")
        text = f"{s.provider}: {shown}, {s.bytes} bytes"
    if s.listing_error:
        text += f"\n  listing failed: {s.listing_error}"
    if s.stopped_reason:
        text += f"\n  stopped: {s.stopped_reason}"
    return text


def job_line(result: JobResult, *, dry_run: bool) -> list[str]:
    """The lines worth printing about one job: what changed, would change, or needs a look."""
    where = f"{result.provider} job {result.job_id}"
    outcome = result.outcome
    if outcome in (Outcome.WOULD_DELETE, Outcome.WOULD_ARCHIVE):
        if result.manifest_key:
            return [f"would delete {where} (already archived: {result.manifest_key})"]
        lines = [
            f"would archive {item.source} -> {item.key}"
            + (f" ({item.size} bytes)" if item.size is not None else "")
            for item in result.plan
        ]
        verb = "would delete" if outcome == Outcome.WOULD_DELETE else "would keep"
        return [*lines, f"{verb} {where} after archiving {result.files} file(s)"]
    if outcome == Outcome.DELETED:
        archived = f" ({result.files} file(s), {result.bytes} bytes archived)"
        return [f"deleted {where}" + (archived if result.archived else "")]
    if outcome == Outcome.ARCHIVED:
        return [
            f"archived {where} ({result.files} file(s), {result.bytes} bytes); "
            "not deleted (read_only)"
        ]
    if outcome in (Outcome.FAILED, Outcome.DEFERRED, Outcome.KEPT, Outcome.STOPPED):
        # Errors name the provider and the job themselves.
        error = result.error or ""
        return [f"{outcome.value} {error if error.startswith(where) else f'{where}: {error}'}"]
    if outcome == Outcome.GONE:
        return [f"gone {where} (no longer at the provider)"]
    if dry_run and outcome == Outcome.NOT_DUE and result.due_at:
        return [f"not due {where} (due {result.due_at.isoformat(timespec='seconds')})"]
    return []


def job_record(result: JobResult) -> dict[str, object]:
    """One job's result, for a line of ``--jsonl``."""
    record = dataclasses.asdict(result)
    record["outcome"] = result.outcome.value
    record["due_at"] = result.due_at.isoformat(timespec="seconds") if result.due_at else None
    # Errors name no credential by design; scrubbed all the same, as a log line would be.
    record["error"] = REDACTOR.scrub(result.error) if result.error else None
    return {"message_type": "job", **record}


class SweepView(View):
    """Each provider's counts: a line each, a table at a terminal, or the added-up totals
    with each provider's and the exit code the command ends with."""

    message_type = "summary"

    def __init__(self, summaries: Sequence[SweepSummary], *, exit_code: int) -> None:
        self.summaries = summaries
        self.exit_code = exit_code

    def lines(self) -> Iterator[str]:
        for summary in self.summaries:
            yield summary_line(summary)

    def rich(self) -> None:
        sweep_table(self.summaries)

    def fields(self) -> dict[str, object]:
        return {**SweepTotals.of(self.summaries).to_dict(), "exit_code": self.exit_code}


def sweep_table(summaries: Sequence[SweepSummary]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="retention sweep", title_justify="left")
    dry = False
    for name in ("provider", *COLUMNS, "bytes"):
        table.add_column(name, justify="left" if name == "provider" else "right")
    for s in summaries:
        dry = dry or s.dry_run
        counts = counts_of(s)
        note = " (another sweep was running)" if s.busy else ""
        cells = [
            f"[red]{counts[name]}[/]"
            if name in ("failed", "kept") and counts[name]
            else str(counts[name])
            for name in COLUMNS
        ]
        table.add_row(s.provider + note, *cells, human_bytes(s.bytes))
    if dry:
        table.title = "retention sweep --dry-run (what a real run would do)"
    console = Console()
    console.print(table)
    for s in summaries:
        if s.busy_detail:
            console.print(f"[yellow]{s.provider}: another sweep is running:[/] {s.busy_detail}")
        if s.listing_error:
            console.print(f"[red]{s.provider}: listing failed:[/] {s.listing_error}")
        if s.stopped_reason:
            console.print(f"[yellow]{s.provider}: stopped:[/] {s.stopped_reason}")


class ProgressDisplay(Protocol):
    """Where a sweep's progress is shown: live lines at a terminal (``render.progress``), or
    plain lines now and then (``meter.ProgressLines``)."""

    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> None: ...

    def update(self, meter: ProviderMeter, *, final: bool = False) -> None: ...


class SweepFeed(Feed[[JobResult]]):
    """What a sweep shows while it runs: its results as they come (``results``, on stdout),
    and, when asked for, its progress on stderr, fed with the jobs ahead as the sweep reads
    them (``found``, the sweep's ``on_found``) and each job as it finishes."""

    def __init__(
        self,
        results: Feed[[JobResult]],
        meter: SweepMeter | None = None,
        display: ProgressDisplay | None = None,
    ) -> None:
        self.results = results
        self.meter = meter
        self.display = display

    def __enter__(self) -> SweepFeed:
        if self.display is not None:
            self.display.__enter__()
        self.results.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.results.__exit__(*exc)
        if self.display is not None and self.meter is not None:
            for provider in list(self.meter.meters):
                self.display.update(self.meter.counted(provider), final=True)
            self.display.__exit__(*exc)

    def __call__(self, result: JobResult) -> None:
        self.results(result)
        if self.display is not None and self.meter is not None:
            self.display.update(self.meter.finished(result))

    def found(self, provider: str, n: int, last: bool) -> None:
        if self.display is not None and self.meter is not None:
            meter = self.meter.found(provider, n)
            if last:
                self.meter.counted(provider)
            self.display.update(meter)


def sweep_feed(
    fmt: Format,
    *,
    quiet: bool,
    dry_run: bool,
    providers: Sequence[str],
    progress: bool | None = None,
) -> SweepFeed:
    """What a sweep shows while it runs.

    On stdout: a JSON line per job (``--jsonl``); nothing with ``--json`` or ``-q``; else a
    line per job that changed, would change, or needs a look (at a terminal with the
    progress above it, only the failures).

    On stderr, the progress: shown when ``progress`` says so (``--progress``,
    ``--no-progress``), else when stderr is a terminal and ``-q`` was not given. Live lines
    at a terminal; plain lines every few seconds elsewhere.
    """
    shown = progress if progress is not None else not quiet and interactive_stderr()
    meter: SweepMeter | None = None
    display: ProgressDisplay | None = None
    if shown:
        meter = SweepMeter(providers, dry_run=dry_run, clock=time.monotonic)
        if interactive_stderr():
            from worker.render.progress import SweepProgress

            display = SweepProgress(meter, over_stdout=fmt is Format.RICH)
        else:
            display = ProgressLines(meter)
    live = display is not None and fmt is Format.RICH and interactive_stderr()
    results: Feed[[JobResult]]
    if fmt is Format.JSONL:
        results = Lines(lambda result: [json_line(job_record(result))], past_a_gone_reader=True)
    elif fmt is Format.JSON or quiet:
        results = Feed()
    else:
        # With live progress on the same terminal, its lines say what the job lines would;
        # the failures are still printed, above them.
        wanted = (
            (lambda r: job_line(r, dry_run=dry_run) if r.outcome is Outcome.FAILED else [])
            if live
            else (lambda r: job_line(r, dry_run=dry_run))
        )
        results = Lines(wanted, past_a_gone_reader=True)
    return SweepFeed(results, meter, display)


class EnqueuedView(View):
    """Sweeps sent to the Celery workers, a line each as it is sent; or one document of what
    was sent (``message_type`` "enqueued"): no sweep ran here, so it has no sweep's counts."""

    message_type = "enqueued"

    def __init__(self, queue: str, sent: Iterable[SentSweep]) -> None:
        self.queue = queue
        self.sent = sent

    def lines(self) -> Iterator[str]:
        for sweep in self.sent:
            yield f"enqueued a sweep of {sweep.provider} (task {sweep.task_id})"

    def fields(self) -> dict[str, object]:
        return {"queue": self.queue, "enqueued": [dataclasses.asdict(s) for s in self.sent]}
