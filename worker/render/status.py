"""How the ledger's status reads: per provider, its jobs by state, then every job that
needs a look (overdue, kept at the provider with why, failed, in a status the worker does not
know), each list cut at its first few with how many more there are."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from worker.render.view import View

if TYPE_CHECKING:
    from rich.table import Table

    from worker.ledger.queries import ProviderStatus


def status_more(s: ProviderStatus) -> dict[str, int]:
    """How many jobs of each of ``retention status``'s lists it does not show (it shows the
    first few; the counts are of the whole list)."""
    return {
        "overdue": max(0, s.overdue_count - len(s.overdue)),
        "kept": max(0, s.states.get("kept", 0) - len(s.kept)),
        "failed": max(0, s.states.get("failed", 0) - len(s.failed)),
        "unknown": max(0, s.unknown_count - len(s.unknown)),
    }


class StatusView(View):
    message_type = "status"

    def __init__(self, statuses: Sequence[ProviderStatus]) -> None:
        self.statuses = statuses

    def lines(self) -> Iterator[str]:
        if not self.statuses:
            yield "the ledger is empty"
        for s in self.statuses:
            yield from _provider_lines(s)

    def rich(self) -> None:
        status_tables(self.statuses)

    def fields(self) -> dict[str, object]:
        return {"providers": [dataclasses.asdict(s) for s in self.statuses]}


def _provider_lines(s: ProviderStatus) -> Iterator[str]:
    states = ", ".join(f"{k} {v}" for k, v in sorted(s.states.items())) or "no jobs"
    header = f"{s.provider}: {states}; held {s.held}; overdue {s.overdue_count}"
    yield header + (f"; unknown status {s.unknown_count}" if s.unknown_count else "")
    more = status_more(s)
    for job in s.overdue:
        error = f" - {job.last_error}" if job.last_error else ""
        yield f"  overdue {job.job_id} ({job.state}, due {job.due_at}){error}"
    yield from _more_line(more, "overdue")
    for kept in s.kept:
        yield f"  kept    {kept.job_id}: {kept.reason}"
    yield from _more_line(more, "kept")
    for failed in s.failed:
        yield f"  failed  {failed.job_id} after {failed.attempts} attempt(s): {failed.last_error}"
    yield from _more_line(more, "failed")
    for odd in s.unknown:
        yield (
            f"  unknown {odd.job_id} (status {odd.status!r}, {odd.attempts} attempt(s)): "
            f"{odd.last_error or 'not read since it was listed'}"
        )
    yield from _more_line(more, "unknown")


def _more_line(more: dict[str, int], kind: str) -> Iterator[str]:
    if more[kind]:
        yield f"  ... {more[kind]} more {kind}"


def status_tables(statuses: Sequence[ProviderStatus]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

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
        # (kind, [(job id, state, when, why), ...]): the state may hold markup; the rest not.
        sections: list[tuple[str, list[tuple[str, str, str | None, str | None]]]] = [
            (
                "overdue",
                [(j.job_id, f"overdue ({j.state})", j.due_at, j.last_error) for j in s.overdue],
            ),
            ("kept", [(k.job_id, "[yellow]kept[/]", k.kept_at, k.reason) for k in s.kept]),
            ("failed", [(f.job_id, "[red]failed[/]", f.failed_at, f.last_error) for f in s.failed]),
            (
                "unknown",
                [
                    (
                        u.job_id,
                        f"[yellow]unknown status[/] {escape(repr(u.status))}, "
                        f"{u.attempts} attempt(s)",
                        u.checked_at,
                        u.last_error or "not read since it was listed",
                    )
                    for u in s.unknown
                ],
            ),
        ]
        for kind, rows in sections:
            for job_id, state, when, why in rows:
                problems.add_row(s.provider, escape(job_id), state, when or "", escape(why or ""))
            _more_row(problems, s.provider, more, kind)
    if problems.row_count:
        console.print(problems)


def _more_row(table: Table, provider: str, more: dict[str, int], kind: str) -> None:
    if more[kind]:
        table.add_row(provider, f"... {more[kind]} more {kind}", "", "", "")
