"""How `retention restore` reads: a line per file as it is restored or verified ("ok",
"WAITING" for a thaw, "PROBLEM"), then what became of them all; or one document."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

from worker.render.view import View

if TYPE_CHECKING:
    from worker.restore import RestoreRun


class RestoreView(View):
    message_type = "restore"

    def __init__(self, run: RestoreRun, provider: str, job_id: str, *, verify_only: bool) -> None:
        self.run = run
        self.provider = provider
        self.job_id = job_id
        self.verb = "verified" if verify_only else "restored"

    def lines(self) -> Iterator[str]:
        for item in self.run:
            where = str(item.path) if item.path else item.key
            if item.ok:
                yield f"ok        {where}  {item.size} bytes"
                if item.note:
                    yield f"  note: {item.note}"
            elif item.waiting:
                yield f"WAITING   {where}: {item.waiting}"
            else:
                yield f"PROBLEM   {where}: {item.problem}"
        run = self.run
        summary = (
            f"{self.provider} job {self.job_id}: {run.restored} of {run.total} file(s) {self.verb}"
        )
        if run.problems:
            summary += f"; {run.problems} missing or different"
        if run.waiting:
            summary += f"; {run.waiting} waiting for a restore from cold storage"
        yield summary

    def fields(self) -> dict[str, object]:
        files = [dataclasses.asdict(item) for item in self.run]
        return {
            "provider": self.provider,
            "job_id": self.job_id,
            "mode": self.verb,
            "ok": self.run.ok,
            "files": files,
            self.verb: self.run.restored,
            "problems": self.run.problems,
            "waiting": self.run.waiting,
        }
