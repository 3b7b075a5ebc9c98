"""How `retention check` reads: a line per check as it completes ("ok", "warn" or "FAILED"),
each capability of the archive's server noted under its line; or one document of them all."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

from worker.render.view import View

if TYPE_CHECKING:
    from worker.check import CheckRun

MARKS = {"ok": "ok", "warn": "warn", "failed": "FAILED"}


class CheckView(View):
    message_type = "check"

    def __init__(self, run: CheckRun) -> None:
        self.run = run

    def lines(self) -> Iterator[str]:
        for check in self.run:
            yield f"{MARKS[check.level]:<6}  {check.name}: {check.detail}"
            for note in check.notes:
                yield f"        {MARKS[note.level]:<6}  {note.name}: {note.detail}"

    def fields(self) -> dict[str, object]:
        checks = [dataclasses.asdict(check) for check in self.run]
        return {"ok": not self.run.failed, "checks": checks}
