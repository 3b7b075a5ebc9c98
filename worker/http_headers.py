"""How long a server asks us to wait: ``Retry-After`` and ``X-RateLimit-Reset``, read once.

A provider's API (``providers.base.HttpApi``) and a download host (``fetch``) answer 429 with
the same headers, and a broken or hostile one must not park a job for years whichever of
them sent it: both read the wait with ``retry_after_seconds``. A leaf: it imports nothing of
the worker's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# The longest a provider's Retry-After or X-RateLimit-Reset may defer a job: the pipeline's
# longest backoff. A broken or hostile header once parked a job until 2036, and a large
# enough one overflowed the timedelta the deferral is computed with.
MAX_DEFERRAL = 6 * 3600.0

# delay-seconds is 1*DIGIT (RFC 9110 10.2.3); a fraction is tolerated because some APIs send
# one. Signs, exponents, "inf" and "nan" are not numbers here: float() would take them all.
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Above this, X-RateLimit-Reset is an epoch timestamp rather than seconds (some APIs send one).
_EPOCH_AFTER = 10 * 365 * 86400.0


def retry_after_seconds(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds a provider asked us to wait, from ``Retry-After``, else ``X-RateLimit-Reset``.

    Either header may be a number of seconds or an HTTP date (RFC 9110); X-RateLimit-Reset
    may also be an epoch timestamp. The answer is finite, between 0 and ``MAX_DEFERRAL``
    whatever the header says: a date in the past is 0, a date years ahead (or a number too
    large for a float) is ``MAX_DEFERRAL``. A value that is none of these is skipped, and
    ``None`` means no usable wait was given. Never raises. ``headers`` is looked up by
    lower-case name (``httpx.Headers`` is case-insensitive); ``now`` is read as UTC if naive.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    for name in ("retry-after", "x-ratelimit-reset"):
        value = headers.get(name)
        if value is None:
            continue
        seconds = _header_seconds(value.strip(), now, epoch_allowed=name == "x-ratelimit-reset")
        if seconds is not None:
            return seconds
    return None


def _header_seconds(value: str, now: datetime, *, epoch_allowed: bool) -> float | None:
    if _SECONDS.fullmatch(value):
        seconds = float(value)  # digits only: inf at worst, never an error or a nan
        if epoch_allowed and seconds > _EPOCH_AFTER and math.isfinite(seconds):
            seconds -= now.timestamp()
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None  # neither a number nor a date: no usable wait
        if when.tzinfo is None:  # "-0000" or no zone: RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), MAX_DEFERRAL)
