"""How a sweep's result reads: one line per job, one summary per provider, one JSON document.

The CLI, the demo and ``terminal`` (rich tables at a terminal) all render from here, so a
count is named and ordered the same way wherever a person or a script reads it.

For scripts, as restic's ``--json`` does, every JSON object says what it is in
``message_type``: ``"job"`` for one job's result (a line of ``--jsonl``), ``"summary"`` for
the whole run (the one document of ``--json``, and the last line of ``--jsonl``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from worker.outcomes import JobResult, Outcome, SweepSummary, SweepTotals
from worker.redact import REDACTOR

if TYPE_CHECKING:
    from worker.ledger.queries import ProviderStatus

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


def job_record(result: JobResult) -> dict[str, Any]:
    """One job's result, for a line of ``--jsonl``."""
    record = dataclasses.asdict(result)
    record["outcome"] = result.outcome.value
    record["due_at"] = result.due_at.isoformat(timespec="seconds") if result.due_at else None
    # Errors name no credential by design; scrubbed all the same, as a log line would be.
    record["error"] = REDACTOR.scrub(result.error) if result.error else None
    return {"message_type": "job", **record}


def status_more(s: ProviderStatus) -> dict[str, int]:
    """How many jobs of each of ``retention status``'s lists it does not show (it shows the
    first few; the counts are of the whole list)."""
    return {
        "overdue": max(0, s.overdue_count - len(s.overdue)),
        "kept": max(0, s.states.get("kept", 0) - len(s.kept)),
        "failed": max(0, s.states.get("failed", 0) - len(s.failed)),
        "unknown": max(0, s.unknown_count - len(s.unknown)),
    }


def json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def json_document(summaries: Iterable[SweepSummary], *, exit_code: int | None = None) -> str:
    """The whole sweep as one JSON document: the counts added up, each provider's, and the
    exit code the command ends with."""
    document: dict[str, Any] = {"message_type": "summary", **SweepTotals.of(summaries).to_dict()}
    if exit_code is not None:
        document["exit_code"] = exit_code
    return json_line(document)
