"""Live progress at a terminal (rich): a line per provider while a sweep runs, one while a
scrub runs. Feeds like the plain lines of ``view``, imported only when a person watches."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

# At run time, not only for mypy: a feed's type arguments are evaluated where its class is.
from worker.domain import JobRow
from worker.outcomes import JobResult
from worker.render.view import Feed
from worker.scrub import Finding


class SweepProgress(Feed[[JobResult]]):
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


class ScrubProgress(Feed[[JobRow, list[Finding]]]):
    """One live line while a scrub runs: jobs and files looked at, problems found. Each
    damaged or missing key is printed above it as it is found."""

    def __init__(self, describe: Callable[[list[Finding]], list[str]]) -> None:
        # How a job's findings read, a line each (``render.scrub.finding_lines``).
        self.describe = describe
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

    def __call__(self, row: JobRow, found: list[Finding]) -> None:
        lines = self.describe(found)
        self._problems += len(lines)
        for line in lines:
            # Keys are the provider's: no markup in them is interpreted.
            self.progress.console.print(line, style="red", markup=False, highlight=False)
        self.progress.update(self._task, advance=1, problems=self._problems)
