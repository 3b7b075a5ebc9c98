"""What a command's exit code tells the script that ran it, and which of several wins.

rclone, restic and Velero set the convention: 0 means all good. A script can then tell "try
again later" (3) from "a person must look" (1) and from "fix the command or the file" (2).

    code  meaning
    0     all good (a sweep that found its provider's lease taken did nothing, also 0)
    1     some jobs failed, were deferred or were kept at the provider; for other commands,
          what was asked did not fully succeed (a check failed, a restored file differs,
          the scrub found damage, a job to retry was not failed)
    2     usage or configuration error
    3     a provider, the archive, the ledger or Redis was unreachable, or a provider's
          listing failed
    4     the delete brake (max_deletes_per_sweep) stopped the sweep
    130   interrupted (Ctrl-C, SIGINT)

When several apply, the first in ``PRECEDENCE`` wins: 2 > 130 > 3 > 4 > 1 > 0. Usage comes
first because nothing ran; an interrupted run's counts are incomplete; an unreachable
provider hides whatever else a sweep would have found; the brake is a limit being reached,
which a person should raise or accept, and outranks single jobs.

"Unreachable" (3), exactly: a provider's listing failed (for any reason: it could not be
reached, refused the credentials, or answered nonsense), or every job of a provider that the
sweep tried was deferred because the provider or the archive could not be reached
(``is_unreachable``), or a store every job needs (the ledger, or the Redis that
``[broker] url`` names) could not be used during the sweep, even once (``outage``): the jobs
after it would all have met the same. Or a command stopped on such an error. A leaf module:
the CLI, the job and the tests read it.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.errors import ArchiveError, ProviderUnavailable, StoreUnavailable, VerifyError
from worker.outcomes import SweepSummary

OK = 0
INCOMPLETE = 1
USAGE = 2
UNREACHABLE = 3
BRAKED = 4
INTERRUPTED = 130

PRECEDENCE = (USAGE, INTERRUPTED, UNREACHABLE, BRAKED, INCOMPLETE, OK)

MEANINGS = {
    OK: "all good",
    INCOMPLETE: "some jobs failed, were deferred or kept; or not all asked was done",
    USAGE: "usage or configuration error",
    UNREACHABLE: "a provider, the archive, the ledger or Redis was unreachable, or a listing "
    "failed",
    BRAKED: "the delete brake (max_deletes_per_sweep) stopped the sweep",
    INTERRUPTED: "interrupted (Ctrl-C)",
}


def help_text() -> str:
    """The table, for ``--help`` (click keeps the lines of a ``\\b`` paragraph as they are)."""
    lines = ["\b", "Exit codes (when several apply: 2 > 130 > 3 > 4 > 1 > 0):"]
    lines += [f"  {code:<4} {MEANINGS[code]}" for code in sorted(MEANINGS)]
    return "\n".join(lines)


def most_severe(codes: Iterable[int]) -> int:
    found = set(codes)
    return next((code for code in PRECEDENCE if code in found), OK)


def sweep_code(summary: SweepSummary) -> int:
    """One provider's sweep as an exit code. A busy sweep (another holds the lease) is 0:
    the one running does the work, and an overlapping cron run is no failure."""
    if summary.unreachable:
        return UNREACHABLE
    if summary.braked:
        return BRAKED
    if summary.failed or summary.deferred or summary.kept:
        return INCOMPLETE
    return OK


def sweep_exit_code(summaries: Iterable[SweepSummary]) -> int:
    return most_severe(sweep_code(s) for s in summaries)


def outage(exc: BaseException) -> str | None:
    """What a store every job needs (the ledger, Redis) said when it could not be used, if
    that is why ``exc`` was raised: not the job's own failure, but one the jobs after it would
    all meet."""
    return exc.message if isinstance(exc, StoreUnavailable) else None


def is_unreachable(exc: BaseException) -> bool:
    """The provider, the archive, the ledger or Redis could not be reached, or answered with
    a server error: a later attempt may well succeed, and nobody needs to change anything."""
    if isinstance(exc, ProviderUnavailable | StoreUnavailable):
        return True
    if not isinstance(exc, ArchiveError) or isinstance(exc, VerifyError):
        return False
    cause = exc.__cause__
    if cause is None:
        return False
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(cause, BotoCoreError):  # no connection, a timeout, a bad endpoint
        return True
    if isinstance(cause, ClientError):
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return isinstance(status, int) and status >= 500
    return False
