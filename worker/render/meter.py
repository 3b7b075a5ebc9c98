"""How far a sweep has got, per provider, as rclone's progress shows a transfer: jobs done of
those known so far, bytes archived, the rate, and the time left.

"Known so far": a sweep reads its work set from the ledger a batch at a time
(``sweep.CANDIDATE_BATCH``), and a dry run plans a listing page by page, so the total grows
as the sweep learns of more jobs, as rclone's does while it is still listing. The time left
is the jobs still to do at the rate jobs have finished so far (the bytes ahead are unknown
until each job is read). Rates count from the provider's first job or batch, so a sweep's
listing, which moves no bytes, does not dilute them.

Pure bookkeeping, with the clock passed in: ``render.progress`` draws it at a terminal,
``ProgressLines`` prints it as lines where no terminal is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import click

from worker.outcomes import JobResult, Outcome
from worker.render.view import human_bytes

# Outcomes a dry run reports for jobs a real run would archive; their plan has the sizes.
_PLANNED = (Outcome.WOULD_ARCHIVE, Outcome.WOULD_DELETE)


@dataclass
class ProviderMeter:
    """One provider's sweep so far."""

    provider: str
    dry_run: bool = False
    known: int = 0
    # Whether the sweep has read its whole work set (the total is final).
    counted: bool = False
    done: int = 0
    bytes: int = 0
    started: float | None = None

    def found(self, n: int, now: float) -> None:
        self._start(now)
        self.known += n

    def finished(self, result: JobResult, now: float) -> None:
        self._start(now)
        self.done += 1
        # A job resumed by a sweep that did not dispatch it still counts: never done > known.
        self.known = max(self.known, self.done)
        if result.archived:
            self.bytes += result.bytes
        elif self.dry_run and result.outcome in _PLANNED and not result.manifest_key:
            self.bytes += sum(item.size or 0 for item in result.plan)

    def _start(self, now: float) -> None:
        if self.started is None:
            self.started = now

    def elapsed(self, now: float) -> float:
        return 0.0 if self.started is None else max(0.0, now - self.started)

    def byte_rate(self, now: float) -> float | None:
        """Bytes a second since the first job; None before a second has passed."""
        elapsed = self.elapsed(now)
        return self.bytes / elapsed if elapsed >= 1.0 else None

    def eta(self, now: float) -> float | None:
        """Seconds until the jobs known so far are done, at the rate jobs have finished."""
        elapsed = self.elapsed(now)
        if not self.done or elapsed < 1.0:
            return None
        return (self.known - self.done) * elapsed / self.done

    def text(self, now: float) -> str:
        """``12/40 jobs, 3.2 MiB archived, 1.1 MiB/s, ETA 0:35`` (``/40+`` while the total
        may still grow)."""
        total = f"{self.known}{'' if self.counted else '+'}"
        moved = "would archive" if self.dry_run else "archived"
        parts = [f"{self.done}/{total} jobs", f"{human_bytes(self.bytes)} {moved}"]
        rate = self.byte_rate(now)
        if rate is not None:
            parts.append(f"{human_bytes(int(rate))}/s")
        eta = self.eta(now)
        if eta is not None and self.done < self.known:
            parts.append(f"ETA {clock_time(eta)}")
        return ", ".join(parts)


def clock_time(seconds: float) -> str:
    """``0:35``, ``12:05``, ``3:02:10``: as rclone and rich show a time left."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class SweepMeter:
    """Every provider's meter, fed from the sweep's threads."""

    def __init__(
        self, providers: Sequence[str], *, dry_run: bool, clock: Callable[[], float]
    ) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self.meters = {p: ProviderMeter(p, dry_run=dry_run) for p in providers}

    def found(self, provider: str, n: int) -> ProviderMeter:
        with self._lock:
            meter = self.meters[provider]
            meter.found(n, self.clock())
            return meter

    def finished(self, result: JobResult) -> ProviderMeter:
        with self._lock:
            meter = self.meters[result.provider]
            meter.finished(result, self.clock())
            return meter

    def counted(self, provider: str) -> ProviderMeter:
        with self._lock:
            meter = self.meters[provider]
            meter.counted = True
            return meter

    def text(self, provider: str) -> str:
        with self._lock:
            return self.meters[provider].text(self.clock())


class ProgressLines:
    """The progress as plain lines on stderr, for ``--progress`` where stderr is no
    terminal (a CI log, a file): each provider's line at most every ``every`` seconds while
    it moves, and once more when the sweep ends, as rclone's ``--stats`` lines are."""

    def __init__(self, meter: SweepMeter, *, every: float = 10.0) -> None:
        self.meter = meter
        self.every = every
        self._printed: dict[str, float] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, meter: ProviderMeter, *, final: bool = False) -> None:
        if meter.started is None:
            return
        now = self.meter.clock()
        with self._lock:
            last = self._printed.get(meter.provider)
            if not final and last is not None and now - last < self.every:
                return
            self._printed[meter.provider] = now
            click.echo(f"progress {meter.provider}: {meter.text(now)}", err=True)
