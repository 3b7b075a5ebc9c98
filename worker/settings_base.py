"""The building blocks of every settings model: a strict base and the shared field checks.

``worker/settings.py`` builds the configuration file's sections from them, and each provider's
spec module (``worker/specs/``, or a plug-in's) its ``[providers.NAME]`` table.
They sit below both, so a provider's settings can be read without the rest of the settings,
and the settings can collect every provider's model without an import cycle. Nothing here
imports more than pydantic.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

# Provider names appear in S3 keys, Celery arguments, metric labels and environment variable
# names (where a hyphen is not allowed), so they are held to the narrowest useful alphabet.
# A provider type (the `type` key) is held to the same.
PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_CRON_FIELD = re.compile(r"^[0-9a-zA-Z*/,-]+$")
_RATE = re.compile(r"^\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|s|m|h|d)s?\s*$")


class Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored line: a typo in `retain_days` must not
    # fall back to a default that deletes sooner than the policy says.
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_cron(value: str | None) -> str | None:
    if value is None:
        return None
    fields = value.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(
            "must be a five-field cron expression such as '0 * * * *' "
            "(minute hour day-of-month month day-of-week)"
        )
    return " ".join(fields)


def check_rate(value: str | None) -> str | None:
    if value is not None and not _RATE.match(value):
        raise ValueError("must look like '20/second', '100/minute' or '60 per 3 seconds'")
    return value


def check_http_url(value: str, example: str) -> str:
    """An http(s) URL without query or credentials, trailing slashes removed; ``example``
    shows the reader what is meant."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL such as {example}")
    if parts.query or parts.username or parts.password:
        raise ValueError("must not carry a query string or credentials")
    return value.rstrip("/")
