"""What the CLI shows a person at a terminal: a live progress bar and tables (rich).

Only used when stdout is a terminal; in pipes and CI the commands print plain lines and the
logs stay JSON. Imported lazily, so scripts never pay for rich.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from worker.render.sweep import COLUMNS, counts_of, status_more

if TYPE_CHECKING:
    from worker.domain import JobRow
    from worker.ledger import ProviderStatus
    from worker.outcomes import JobResult, SweepSummary
    from worker.scrub import Finding


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"  # pragma: no cover


def short_time(iso: str | None) -> str:
    """``2026-11-23T13:19:16.635+00:00`` as ``2026-11-23 13:19`` (UTC), for a table cell."""
    return "" if not iso else iso.replace("T", " ")[:16]


class SweepProgress:
    """One live line per provider: how many jobs were looked at and what became of them."""

    def __init__(self, providers: Sequence[str], *, dry_run: bool) -> None:
        self.console = Console()
        self.dry_run = dry_run
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[provider]:<10}"),
            BarColumn(),
            TextColumn("{task.completed} jobs  {task.fields[counts]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {p: Counter() for p in providers}
        self._tasks = {
            p: self.progress.add_task("", total=None, provider=p, counts="") for p in providers
        }

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self._tasks.values():
            self.progress.update(
                task,
                total=self.progress.tasks[task].completed or 1,
                completed=self.progress.tasks[task].completed or 1,
            )
        self.progress.stop()

    def __call__(self, result: JobResult) -> None:
        with self._lock:
            counts = self._counts[result.provider]
            if result.archived:
                counts["archived"] += 1
            if result.deleted:
                counts["deleted"] += 1
            if result.outcome.value in ("deferred", "failed", "kept", "stopped", "would_delete"):
                counts[result.outcome.value.replace("_", " ")] += 1
            text = "  ".join(f"{k} {v}" for k, v in counts.items())
        self.progress.update(self._tasks[result.provider], advance=1, counts=text)
        if result.outcome.value == "failed":
            self.progress.console.print(
                f"[red]failed[/] {result.provider} job {result.job_id}: {result.error}"
            )


class ScrubProgress:
    """One live line while a scrub runs: jobs and files looked at, problems found. Each
    damaged or missing key is printed above it as it is found."""

    def __init__(self) -> None:
        self.console = Console()
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]scrub"),
            BarColumn(),
            TextColumn("{task.completed} jobs  {task.fields[problems]} problem(s)"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self.progress.add_task("", total=None, problems=0)
        self._problems = 0

    def __enter__(self) -> ScrubProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        done = self.progress.tasks[self._task].completed or 1
        self.progress.update(self._task, total=done, completed=done)
        self.progress.stop()

    def __call__(self, row: JobRow, found: list[Finding], lines: list[str]) -> None:
        self._problems += len(lines)
        for line in lines:
            # Keys are the provider's: no markup in them is interpreted.
            self.progress.console.print(line, style="red", markup=False, highlight=False)
        self.progress.update(self._task, advance=1, problems=self._problems)


def sweep_table(summaries: Iterable[SweepSummary]) -> None:
    table = Table(title="retention sweep", title_justify="left")
    dry = False
    for name in ("provider", *COLUMNS, "bytes"):
        table.add_column(name, justify="left" if name == "provider" else "right")
    summaries = list(summaries)
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


def status_tables(statuses: Sequence[ProviderStatus]) -> None:
    console = Console()
    if not statuses:
        console.print("the ledger is empty")
        return
    states = sorted({state for s in statuses for state in s.states})
    table = Table(title="ledger", title_justify="left")
    table.add_column("provider")
    for state in states:
        table.add_column(state, justify="right")
    table.add_column("held", justify="right")
    table.add_column("overdue", justify="right")
    table.add_column("unknown status", justify="right")
    for s in statuses:
        overdue = f"[red]{s.overdue_count}[/]" if s.overdue_count else "0"
        unknown = f"[yellow]{s.unknown_count}[/]" if s.unknown_count else "0"
        table.add_row(
            s.provider,
            *(str(s.states.get(state, 0)) for state in states),
            str(s.held),
            overdue,
            unknown,
        )
    console.print(table)
    problems = Table(title="needs attention", title_justify="left")
    for name in ("provider", "job", "state", "due / failed / read", "last error"):
        problems.add_column(name)
    # Job ids and errors come from providers: a "[/]" in one is text, not rich markup.
    for s in statuses:
        more = status_more(s)
        for job in s.overdue:
            problems.add_row(
                s.provider,
                escape(job.job_id),
                f"overdue ({job.state})",
                job.due_at or "",
                escape(job.last_error or ""),
            )
        _more_row(problems, s.provider, more, "overdue")
        for kept in s.kept:
            problems.add_row(
                s.provider,
                escape(kept.job_id),
                "[yellow]kept[/]",
                kept.kept_at or "",
                escape(kept.reason or ""),
            )
        _more_row(problems, s.provider, more, "kept")
        for failed in s.failed:
            problems.add_row(
                s.provider,
                escape(failed.job_id),
                "[red]failed[/]",
                failed.failed_at or "",
                escape(failed.last_error or ""),
            )
        _more_row(problems, s.provider, more, "failed")
        for odd in s.unknown:
            problems.add_row(
                s.provider,
                escape(odd.job_id),
                f"[yellow]unknown status[/] {escape(repr(odd.status))}, {odd.attempts} attempt(s)",
                odd.checked_at or "",
                escape(odd.last_error or "not read since it was listed"),
            )
        _more_row(problems, s.provider, more, "unknown")
    if problems.row_count:
        console.print(problems)


def _more_row(table: Table, provider: str, more: dict[str, int], kind: str) -> None:
    if more[kind]:
        table.add_row(provider, f"... {more[kind]} more {kind}", "", "", "")


def report_table(rows: Iterable[dict[str, Any]]) -> int:
    table = Table(title="deleted jobs", title_justify="left")
    for name in ("provider", "job", "due", "archived", "deleted", "files", "bytes", "answer"):
        table.add_column(name, justify="right" if name in ("files", "bytes") else "left")
    count = 0
    for row in rows:
        count += 1
        table.add_row(
            row["provider"],
            row["job_id"],
            row["due_at"] or "",
            row["archived_at"] or "",
            row["deleted_at"] or "",
            str(row["files"]),
            human_bytes(row["bytes"]),
            f"{row['provider_answer']} ({row['provider_status_code']})",
        )
    Console().print(table)
    return count
