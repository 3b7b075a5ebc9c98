"""How the report of deleted jobs reads: a line or a table row per job, CSV for spreadsheets,
or one JSON document (``message_type`` "report", the period it covers, and the rows under
``jobs``), every column of ``reports.REPORT_FIELDS``. Rows are printed as the ledger yields
them, so a report of a million jobs is never held whole."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from worker.render.view import View, human_bytes, json_line

if TYPE_CHECKING:
    from worker.reports import ReportRow


class ReportView(View):
    message_type = "report"

    def __init__(
        self, rows: Iterable[ReportRow], *, since: datetime, provider: str | None = None
    ) -> None:
        self.rows = rows
        self.since = since
        self.provider = provider

    def lines(self) -> Iterator[str]:
        for row in self.rows:
            yield (
                f"{row['provider']}  {row['job_id']}  due {row['due_at']}  archived "
                f"{row['archived_at']}  deleted {row['deleted_at']}  {row['files']} "
                f"file(s) {row['bytes']} bytes  {row['manifest_key']}  "
                f"{row['provider_answer']} ({row['provider_status_code']})"
            )

    def rich(self) -> None:
        report_table(self.rows)

    def fields(self) -> dict[str, object]:
        return {**self._period(), "jobs": list(self.rows)}

    def _period(self) -> dict[str, object]:
        return {"since": self.since.isoformat(timespec="seconds"), "provider": self.provider}

    def json(self) -> Iterator[str]:
        # The document's own keys first, then its rows a line each, as they come.
        head = json_line({"message_type": self.message_type, **self._period()})
        yield head.removesuffix("}") + ', "jobs": ['
        for n, row in enumerate(self.rows):
            yield ("," if n else "") + "\n" + json.dumps(row, sort_keys=True)
        yield "\n]}\n"

    def csv(self) -> None:
        from worker.reports import REPORT_FIELDS

        writer = csv.DictWriter(sys.stdout, fieldnames=REPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({**row, "archive_keys": ";".join(row["archive_keys"])})


def report_table(rows: Iterable[ReportRow]) -> int:
    from rich.console import Console
    from rich.table import Table

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
