"""Jobs handed to the worker by id: what `retention track`, the ``retention.track`` Celery
task and ``worker.client.track`` accept, checked in one place before the ledger records it.

Loom and Unsiloed have no list endpoint, and DatoCMS tracks are found only under the uploads
the configuration names, so for those the worker knows a job only once it is tracked. An
application hands its ids over as it submits jobs, through Celery or the helper; a person
uses the command. All three take the same request:

* ``provider``: a ``[providers.NAME]`` of the configuration (not a type);
* ``job_ids``: a list of ids, each held to its adapter's rules
  (``BaseProvider.job_id_problem``): Huawei MPC's are numbers, DatoCMS's are
  ``UPLOAD_ID/TRACK_ID``, every id is one archive folder as it stands;
* ``hold``: put a legal hold on each (never lifts one: `retention release` does);
* ``reason``: why, for the audit trail (with ``hold``);
* ``finished_at``: when the jobs finished, if the caller knows (ISO 8601 with an offset),
  so their retention clock starts then rather than when the worker first sees them finished.

A request is checked whole before anything is recorded: one bad id refuses it all
(``TrackRefused``, naming every problem), so a corrected request sent again is the only
retry needed. Recording is idempotent (``OperatorCommands.track``): a request delivered twice
(Celery's at-least-once) records each change once, and the audit trail shows each change
with who made it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from worker.errors import ConfigError, TrackRefused
from worker.providers import job_id_problem
from worker.settings_base import PROVIDER_NAME

if TYPE_CHECKING:
    from worker.ledger import Ledger
    from worker.ledger.operator import Tracked
    from worker.settings import Settings

TASK_NAME = "retention.track"
# Ids in one task message, and in one ledger transaction: a message stays small (kombu holds
# it in memory, Redis in a list), and a transaction short. worker.client.track and
# `retention track --from-file` split longer lists.
MAX_IDS = 1000
# A finish time this far ahead of the worker's clock is a clock or a unit that is wrong.
CLOCK_SKEW = timedelta(minutes=5)
MAX_REASON = 300
# Problems named in a refusal; the count says how many more there were.
SHOWN_PROBLEMS = 20
OPTIONS = ("hold", "reason", "finished_at")


@dataclass(frozen=True, slots=True)
class TrackRequest:
    provider: str
    job_ids: tuple[str, ...]
    hold: bool = False
    reason: str | None = None
    finished_at: datetime | None = None

    def arguments(self) -> tuple[list[Any], dict[str, Any]]:
        """The ``retention.track`` task's JSON arguments for this request."""
        options: dict[str, Any] = {}
        if self.hold:
            options["hold"] = True
        if self.reason is not None:
            options["reason"] = self.reason
        if self.finished_at is not None:
            options["finished_at"] = self.finished_at.isoformat()
        return [self.provider, list(self.job_ids)], options

    def batches(self, size: int = MAX_IDS) -> list[TrackRequest]:
        """The same request, split into requests of at most ``size`` ids."""
        ids = self.job_ids
        return [
            TrackRequest(self.provider, ids[i : i + size], self.hold, self.reason, self.finished_at)
            for i in range(0, len(ids), size)
        ]


def refuse(provider: object, problems: Sequence[str]) -> TrackRefused:
    shown = list(problems[:SHOWN_PROBLEMS])
    if len(problems) > SHOWN_PROBLEMS:
        shown.append(f"... and {len(problems) - SHOWN_PROBLEMS} more")
    lines = "\n  ".join(shown)
    return TrackRefused(
        f"nothing was tracked:\n  {lines}",
        # Named first only when it could be a name; any other value is not repeated as it is.
        provider=provider if isinstance(provider, str) and PROVIDER_NAME.match(provider) else None,
        hint="Correct the request and send it again (tracking is idempotent)",
    )


def parse_request(
    provider: object,
    job_ids: object,
    extra: Sequence[object] = (),
    options: Mapping[str, object] | None = None,
    *,
    max_ids: int | None = MAX_IDS,
) -> TrackRequest:
    """A request from JSON values (a task's arguments), its types checked and its finish time
    parsed; TrackRefused naming every problem. Ids may be JSON numbers (Huawei MPC's are)."""
    options = dict(options or {})
    problems: list[str] = []
    if not isinstance(provider, str) or not PROVIDER_NAME.match(provider):
        problems.append(
            'the first argument must be the name of a [providers.NAME] table, such as "loom"'
        )
    if extra:
        problems.append(f"{len(extra)} argument(s) too many: send [provider, [job_id, ...]]")
    ids: list[str] = []
    if isinstance(job_ids, list | tuple):
        for n, item in enumerate(job_ids, start=1):
            if isinstance(item, int) and not isinstance(item, bool):
                ids.append(str(item))
            elif isinstance(item, str):
                ids.append(item)
            else:
                problems.append(f"id {n} is a {type(item).__name__}, not a string")
        if not job_ids:
            problems.append("the list of job ids is empty")
        elif max_ids is not None and len(job_ids) > max_ids:
            problems.append(f"{len(job_ids)} ids in one request; send at most {max_ids}")
    else:
        # A string would be taken a character at a time: refused, not guessed at.
        problems.append('the second argument must be a list of job ids, such as ["R123"]')
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        problems.append(
            f"unknown option(s) {', '.join(unknown)}; the options are {', '.join(OPTIONS)}"
        )
    hold = options.get("hold", False)
    if not isinstance(hold, bool):
        problems.append("hold must be true or false")
        hold = False
    reason = options.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        problems.append(f"reason must be a text of at most {MAX_REASON} characters")
        reason = None
    finished_at, problem = parse_finish_time(options.get("finished_at"))
    if problem:
        problems.append(problem)
    if problems:
        raise refuse(provider, problems)
    assert isinstance(provider, str)  # for the type checker: a problem otherwise
    return TrackRequest(provider, tuple(ids), hold, reason, finished_at)


def parse_finish_time(value: object) -> tuple[datetime | None, str | None]:
    """An ISO 8601 time with its offset (``2025-06-01T12:00:00Z``), or a problem."""
    if value is None:
        return None, None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None, f"finished_at {value!r} is not an ISO 8601 time"
    else:
        return None, "finished_at must be an ISO 8601 time such as 2025-06-01T12:00:00Z"
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        # A time without an offset could be any of 26 hours: refused rather than taken as UTC.
        return None, "finished_at must carry its UTC offset (such as Z or +02:00)"
    return parsed, None


def check_request(
    settings: Settings,
    request: TrackRequest,
    *,
    now: datetime,
    label: Callable[[int], str] | None = None,
) -> None:
    """Hold the request to the configuration: its provider is configured, each id is one its
    adapter can have, its finish time is not ahead of ``now``. TrackRefused naming every
    problem; ``label(i)`` names where the i-th id came from (``line 7: ``)."""
    try:
        account = settings.provider(request.provider)
    except ConfigError as exc:
        raise refuse(request.provider, [exc.message + ". " + (exc.hint or "")]) from None
    problems = []
    for i, job_id in enumerate(request.job_ids):
        problem = job_id_problem(account, job_id)
        if problem is not None:
            where = label(i) if label is not None else ""
            problems.append(f"{where}job id {job_id!r} {problem}")
    if request.finished_at is not None and request.finished_at > now + CLOCK_SKEW:
        problems.append(
            f"finished_at {request.finished_at.isoformat()} is in the future "
            f"(the worker's clock says {now.isoformat(timespec='seconds')})"
        )
    if problems:
        raise refuse(request.provider, problems)


def track_jobs(
    settings: Settings,
    ledger: Ledger,
    request: TrackRequest,
    *,
    now: datetime,
    actor: str | None = None,
    detail: Mapping[str, Any] | None = None,
    label: Callable[[int], str] | None = None,
) -> list[Tracked]:
    """Check the whole request, then record it, ``MAX_IDS`` ids a transaction; what each
    transaction changed. ``detail`` goes into each audit event (the task's id, say)."""
    check_request(settings, request, now=now, label=label)
    return [
        ledger.operator.track(
            batch.provider,
            batch.job_ids,
            now=now,
            hold=batch.hold,
            reason=batch.reason,
            finished_at=batch.finished_at,
            actor=actor,
            detail=detail,
        )
        for batch in request.batches()
    ]
