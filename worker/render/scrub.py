"""How `retention scrub` reads: a line per damaged or missing key as each job is scrubbed (at
a terminal, above a progress line), then what was scrubbed and found; or JSON, a line per job
with ``--jsonl``, and the totals with every finding."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

from worker.render.view import Feed, Format, Lines, View, json_line

if TYPE_CHECKING:
    from worker.domain import JobRow
    from worker.scrub import Finding, ScrubReport


def finding_lines(found: list[Finding]) -> list[str]:
    """One line per damaged or missing key, its problems together."""
    by_key: dict[str, list[str]] = {}
    for finding in found:
        by_key.setdefault(finding.key, []).append(finding.problem)
    lines = []
    for key, problems in by_key.items():
        missing = all(p.startswith(("missing", "the manifest is missing")) for p in problems)
        lines.append(f"{'MISSING' if missing else 'DAMAGED':<8} {key}: {'; '.join(problems)}")
    return lines


def job_record(row: JobRow, found: list[Finding]) -> dict[str, object]:
    """One job's scrub, for a line of ``--jsonl``."""
    return {
        "message_type": "job",
        "provider": row.provider,
        "job_id": row.job_id,
        "manifest_key": row.manifest_key,
        "findings": [dataclasses.asdict(f) for f in found],
    }


def scrub_feed(fmt: Format, *, quiet: bool) -> Feed[[JobRow, list[Finding]]]:
    """What a scrub shows while it runs: a JSON line per job (``--jsonl``); at a terminal, a
    progress line with each finding above it (with ``-q``, the findings alone); elsewhere
    the findings. Nothing with ``--json``."""
    if fmt is Format.JSONL:
        return Lines(lambda row, found: [json_line(job_record(row, found))])
    if fmt is Format.JSON:
        return Feed()
    if fmt is Format.RICH and not quiet:
        from worker.render.progress import ScrubProgress

        return ScrubProgress(finding_lines)
    return Lines(lambda _row, found: finding_lines(found))


class ScrubView(View):
    message_type = "summary"

    def __init__(self, result: ScrubReport, *, read_fraction: float, exit_code: int) -> None:
        self.result = result
        self.read_fraction = read_fraction
        self.exit_code = exit_code

    def lines(self) -> Iterator[str]:
        result = self.result
        text = f"scrubbed {result.jobs} job(s), {result.files} file(s)"
        if self.read_fraction:
            text += f"; read back {result.read} ({result.bytes_read} bytes)"
            if result.cold_skipped:
                text += f", {result.cold_skipped} in cold storage not read"
        keys = len({(f.provider, f.job_id, f.key) for f in result.findings})
        yield text + (f"; {keys} key(s) damaged or missing" if keys else "; all intact")

    def fields(self) -> dict[str, object]:
        result = self.result
        return {
            "jobs": result.jobs,
            "files": result.files,
            "read": result.read,
            "bytes_read": result.bytes_read,
            "cold_skipped": result.cold_skipped,
            "clean": result.clean,
            "findings": [dataclasses.asdict(f) for f in result.findings],
            "exit_code": self.exit_code,
        }
