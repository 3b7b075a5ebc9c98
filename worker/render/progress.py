"""Live progress at a terminal (rich): a line per provider while a sweep runs (on stderr, what
``render.meter`` counts), one while a scrub runs. Imported only when a person watches."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

# At run time, not only for mypy: a feed's type arguments are evaluated where its class is.
from worker.domain import JobRow
from worker.render.meter import ProviderMeter, SweepMeter
from worker.render.view import Feed
from worker.scrub import Finding


class _MeterColumn(ProgressColumn):
    """A provider's meter as text (jobs, bytes, rate, time left), read when drawn, so the
    rate and the time left move between jobs too."""

    def __init__(self, meter: SweepMeter) -> None:
        super().__init__()
        self.meter = meter

    def render(self, task: Task) -> Text:
        return Text(self.meter.text(task.fields["provider"]))


class SweepProgress:
    """A live line per provider on stderr while a sweep runs, as rclone's ``--progress``:
    a bar of the jobs done of those known so far, bytes archived, rate and time left. A
    provider's line starts moving when its sweep reaches its first jobs.

    ``over_stdout``: stdout is the same terminal, so what the command prints there is shown
    above the lines; otherwise stdout (a pipe, a file) is left alone."""

    def __init__(self, meter: SweepMeter, *, over_stdout: bool) -> None:
        self.meter = meter
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[provider]:<10}"),
            BarColumn(),
            _MeterColumn(meter),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
            redirect_stdout=over_stdout,
        )
        self._tasks = {
            p: self.progress.add_task("", total=None, provider=p, start=False) for p in meter.meters
        }

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, meter: ProviderMeter, *, final: bool = False) -> None:
        task = self._tasks[meter.provider]
        if meter.started is None:
            return
        if not self.progress.tasks[task].started:
            self.progress.start_task(task)
        total = meter.known if meter.counted or meter.known else None
        self.progress.update(task, total=total, completed=meter.done)
        if final:
            self.progress.stop_task(task)


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
