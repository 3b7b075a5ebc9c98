"""`retention check`: is everything this configuration needs reachable and right?

One line per check: the configuration, the archive bucket, the ledger (and whether
migrations are pending), the broker, and each provider's credentials with the cheapest
authenticated request it has. Every failure says what is wrong and what to do.

The archive's line has notes under it, one per capability of its server: Object Lock,
versioning and, unless the check is a health check (``probe=False``), what a probe found by
writing and removing a few tiny objects under ``{prefix}.retention-probe/``: conditional
writes, the checksums the server stores, its multipart ETag form, SSE-KMS when configured.
It ends with the settings this server needs. A line is "ok", "warn" (the server lacks an
optional feature, or a setting could be better; the worker still works) or "failed" (with
this configuration the worker cannot archive safely here).

``assess`` is the pure part: from what the probe found and the settings, the notes and the
recommended settings; the tests give it plain data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from worker.errors import (
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    WorkerError,
)
from worker.settings import ArchiveSettings, Settings

if TYPE_CHECKING:
    from worker.archive import Capabilities

Level = Literal["ok", "warn", "failed"]
_RANK: dict[Level, int] = {"ok": 0, "warn": 1, "failed": 2}


@dataclass(frozen=True)
class Note:
    """One capability under a check's line."""

    name: str
    level: Level
    detail: str


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    level: Level = "ok"
    notes: tuple[Note, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, name: str, detail: str, notes: tuple[Note, ...] = ()) -> Check:
        """A check whose level is its worst note's."""
        level = worst(note.level for note in notes)
        return cls(name, level != "failed", detail, level, notes)


def worst(levels: Iterator[Level] | tuple[Level, ...] | list[Level]) -> Level:
    found: Level = "ok"
    for level in levels:
        if _RANK[level] > _RANK[found]:
            found = level
    return found


def _shown_url(url: str) -> str:
    # Not SQLAlchemy's hide_password, which leaves a ?password= that psycopg reads in clear.
    from worker.redact import mask_url

    return mask_url(url)


def _failure(name: str, exc: Exception) -> Check:
    if isinstance(exc, WorkerError):
        return Check(name, False, str(exc), "failed")
    from worker.redact import REDACTOR  # a library's own error: say which, without a traceback

    return Check(name, False, REDACTOR.scrub(f"{type(exc).__name__}: {exc}"), "failed")


def _attempt(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, True, probe())
    except Exception as exc:
        return _failure(name, exc)


class CheckRun:
    """The checks, each as it completes, and once they have all run, whether any failed."""

    def __init__(self, checks: Iterator[Check]) -> None:
        self._checks = checks
        self.failed = False

    def __iter__(self) -> Iterator[Check]:
        for check in self._checks:
            self.failed = self.failed or not check.ok
            yield check


def check_all(
    settings: Settings, source: Path, *, providers: bool = True, probe: bool = True
) -> CheckRun:
    """`retention check`: first the schedules, then everything the configuration names.

    A schedule beat would refuse is a configuration error (ConfigError, exit 2), as `config
    validate` says, raised before any check runs: init containers gate on this command, and
    beat would exit 2 behind them."""
    from worker.schedules import check_schedules

    check_schedules(settings, source)
    return CheckRun(run_checks(settings, source, providers=providers, probe=probe))


def run_checks(
    settings: Settings, source: Path | str, *, providers: bool = True, probe: bool = True
) -> Iterator[Check]:
    """``probe=False`` writes nothing anywhere (a container health check)."""
    names = ", ".join(settings.providers) or "none"
    yield Check("config", True, f"{source}: providers {names}")
    try:
        yield _archive(settings, probe=probe)
    except Exception as exc:
        yield _failure("archive", exc)
    yield _attempt("ledger", lambda: _ledger(settings))
    yield _attempt("broker", lambda: _broker(settings))
    if providers:
        for name in settings.providers:
            yield _attempt(f"provider {name}", functools.partial(_provider, settings, name))


def _archive(settings: Settings, *, probe: bool) -> Check:
    from worker.archive import Archive, make_s3_client

    s = settings.archive
    archive = Archive(make_s3_client(s), s)
    lock = archive.check_bucket()  # ArchiveError: unreachable, or Object Lock as configured
    notes = [
        Note(
            "Object Lock",
            "warn" if "not supported" in lock else "ok",
            lock.removeprefix("Object Lock: "),
        ),
    ]
    try:
        notes.append(_versioning_note(archive.versioning(), s))
    except WorkerError as exc:  # informational: a policy without s3:GetBucketVersioning
        notes.append(Note("versioning", "warn", f"not read: {exc}"))
    detail = f"s3://{s.bucket} reachable; {lock}"
    if not probe:
        return Check.of("archive", detail + " (no probe objects written)", tuple(notes))
    found, recommended = assess(archive.probe(), s)
    notes += found
    notes.append(_settings_note(recommended, s))
    return Check.of("archive", detail, tuple(notes))


def _versioning_note(state: str, s: ArchiveSettings) -> Note:
    if state == "Enabled":
        return Note("versioning", "ok", "on: files are verified and restored at their version")
    if s.object_lock_mode:
        # Object Lock implies versioning; a bucket without it fails the lock check instead.
        return Note("versioning", "ok", state)
    return Note("versioning", "ok", f"{state}: each key holds one object")


def _settings_note(recommended: dict[str, str], s: ArchiveSettings) -> Note:
    current = _current(s)
    shown = ", ".join(f"{key} = {value}" for key, value in recommended.items())
    changes = [key for key, value in recommended.items() if current[key] != value]
    if not changes:
        return Note("settings", "ok", f"this server needs {shown} (as configured)")
    return Note(
        "settings",
        "warn",
        f"this server needs {shown} in [archive] (the configuration differs in "
        f"{', '.join(changes)})",
    )


def _toml(value: str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"'


def _current(s: ArchiveSettings) -> dict[str, str]:
    return {
        "checksum_mode": _toml(s.checksum_mode),
        "if_none_match": _toml(s.if_none_match),
        "verify": _toml(s.verify),
    }


def assess(caps: Capabilities, s: ArchiveSettings) -> tuple[list[Note], dict[str, str]]:
    """The notes on what the probe found, and the settings this server needs."""
    recommended = _current(s)
    notes: list[Note] = []
    if caps.write_error is not None:
        notes.append(
            Note(
                "writes",
                "failed",
                f"a probe object could not be written under {caps.prefix}: it "
                f"{caps.write_error}. Grant the worker deploy/iam/base.json's actions on the "
                "bucket",
            )
        )
        return notes, recommended
    notes.append(_checksum_note(caps, s, recommended))
    notes.append(_conditional_note(caps, s, recommended))
    notes.append(_multipart_note(caps))
    if s.sse_kms_key_id:
        notes.append(_kms_note(caps))
    notes.append(_verify_note(caps, s, recommended))
    if caps.left_behind:
        notes.append(
            Note(
                "probe objects",
                "warn",
                f"{len(caps.left_behind)} could not be removed: {'; '.join(caps.left_behind[:3])}."
                " They are a few bytes each; a bucket's default retention keeps them until it "
                f"ends, and a lifecycle rule on {caps.prefix} removes them after",
            )
        )
    return notes, recommended


def _checksum_note(caps: Capabilities, s: ArchiveSettings, recommended: dict[str, str]) -> Note:
    if caps.checksum_wrong:
        return Note(
            "checksums",
            "failed",
            f"the server returned {caps.checksum_wrong}, which is not the probe object's: "
            "nothing it reports can be trusted to verify an archive",
        )
    if caps.checksums_rejected:
        recommended["checksum_mode"] = _toml("when_required")
        level: Level = "failed" if s.checksum_mode == "when_supported" else "ok"
        return Note(
            "checksums",
            level,
            f"a write carrying an additional checksum {caps.checksums_rejected}; one without "
            'was accepted: this server needs checksum_mode = "when_required"',
        )
    if s.checksum_mode == "when_required":
        return Note("checksums", "ok", 'not sent (checksum_mode = "when_required")')
    if caps.checksums_stored:
        stored = ", ".join(caps.checksums_stored)
        return Note(
            "checksums",
            "ok",
            f"stored and returned ({stored}): an upload is verified without a second read",
        )
    return Note(
        "checksums",
        "warn",
        "accepted but not stored or returned: uploads are verified by ETag, or read back",
    )


def _conditional_note(caps: Capabilities, s: ArchiveSettings, recommended: dict[str, str]) -> Note:
    detail = f" ({caps.conditional_detail})" if caps.conditional_detail else ""
    if caps.conditional == "enforced":
        recommended["if_none_match"] = _toml(True)
        if s.if_none_match:
            return Note("conditional writes", "ok", "If-None-Match: * is enforced")
        return Note(
            "conditional writes",
            "warn",
            "If-None-Match: * is enforced, but if_none_match = false: set it to true so an "
            "archived object is never overwritten",
        )
    recommended["if_none_match"] = _toml(False)
    if caps.conditional == "rejected":
        return Note(
            "conditional writes",
            "failed" if s.if_none_match else "ok",
            f"If-None-Match: * is refused{detail}: every write would fail; this server needs "
            "if_none_match = false",
        )
    if caps.conditional == "ignored":
        return Note(
            "conditional writes",
            "warn",
            f"If-None-Match: * is ignored{detail}: this server can overwrite an archived "
            "object; only the job's claim keeps two writers apart. Set if_none_match = false "
            "to say so",
        )
    return Note("conditional writes", "warn", "not tested")


def _multipart_note(caps: Capabilities) -> Note:
    form = caps.multipart_etag
    parts = ""
    if caps.multipart_checksum_acknowledged is True:
        parts = (
            "; it acknowledges a multipart upload's CRC32, so parts go with their CRC32 alone "
            "and no MD5 is computed"
        )
    elif caps.multipart_checksum_acknowledged is False:
        parts = (
            "; it does not acknowledge a multipart upload's CRC32, so parts carry Content-MD5 "
            "and the body is hashed with MD5 too"
        )
    if form == "md5-of-md5s":
        return Note(
            "multipart ETag", "ok", f"S3's MD5-of-part-MD5s-N, recomputed from the parts{parts}"
        )
    if form == "whole-md5":
        return Note(
            "multipart ETag",
            "ok",
            f"the whole object's MD5 (not S3's form), recomputed from the bytes streamed{parts}",
        )
    if form == "failed":
        return Note(
            "multipart ETag", "failed", f"{caps.multipart_detail}: files over one part fail"
        )
    if form == "untested":
        return Note("multipart ETag", "warn", "not tested")
    return Note(
        "multipart ETag",
        "warn",
        f"{caps.multipart_detail or 'none'}: not a form recomputable from the bytes",
    )


def _kms_note(caps: Capabilities) -> Note:
    if caps.sse_kms == "applied":
        return Note("SSE-KMS", "ok", f"{caps.sse_kms_detail}; copies are verified by checksum")
    if caps.sse_kms == "rejected":
        return Note(
            "SSE-KMS",
            "failed",
            f"a write with SSE-KMS {caps.sse_kms_detail}: check the key and the worker's "
            "kms:GenerateDataKey and kms:Decrypt on it (deploy/iam/sse-kms.json)",
        )
    return Note(
        "SSE-KMS",
        "failed",
        f"{caps.sse_kms_detail}: archived objects would not be encrypted with the key configured",
    )


def _verify_note(caps: Capabilities, s: ArchiveSettings, recommended: dict[str, str]) -> Note:
    checksum_mode = recommended["checksum_mode"].strip('"')
    by_checksum = bool(caps.checksums_stored) and checksum_mode == "when_supported"
    by_etag = (
        caps.single_etag == "md5"
        and caps.multipart_etag in ("md5-of-md5s", "whole-md5")
        # AWS gives an SSE-KMS object an ETag that is not its MD5.
        and not (s.sse_kms_key_id and caps.sse_kms == "applied")
    )
    if by_checksum or by_etag:
        recommended["verify"] = _toml("auto")
        how = "stored checksums" if by_checksum else "ETags"
        if s.verify == "read_back":
            return Note(
                "verify",
                "warn",
                f'{how} prove every upload here; verify = "read_back" reads each back anyway',
            )
        if s.verify == "checksum" and not by_checksum:
            return Note(
                "verify", "failed", 'this server returns no checksums: verify = "checksum" fails'
            )
        if s.verify == "etag" and not by_etag:
            return Note("verify", "failed", 'this server\'s ETags prove nothing: "etag" fails')
        return Note("verify", "ok", f"by {how}, without a second read")
    recommended["verify"] = _toml("read_back")
    if s.verify in ("checksum", "etag"):
        return Note(
            "verify",
            "failed",
            f'neither checksums nor ETags prove an upload here: verify = "{s.verify}" fails',
        )
    return Note(
        "verify",
        "warn" if s.verify == "auto" else "ok",
        "neither checksums nor ETags prove an upload here: each object is read back once",
    )


def _ledger(settings: Settings) -> str:
    from worker.errors import LedgerError
    from worker.ledger import SCHEMA_REVISION, Ledger, make_engine

    url = settings.ledger.url
    engine = make_engine(url)
    try:
        revision = Ledger(engine).schema_revision()
    except Exception as exc:
        raise LedgerError(
            f"cannot open the ledger at {_shown_url(url)} ({type(exc).__name__})",
            hint="Check [ledger] url, the database server and its credentials",
        ) from None
    finally:
        engine.dispose()
    if revision == SCHEMA_REVISION:
        return f"{_shown_url(url)}: schema {revision}, no migrations pending"
    pending = (
        f"{_shown_url(url)}: schema {revision or 'empty'}, migrations pending to {SCHEMA_REVISION}"
    )
    if settings.ledger.auto_migrate:
        return f"{pending} (applied automatically at first use)"
    raise LedgerError(pending, hint="Run `retention migrate`")


def _broker(settings: Settings) -> str:
    import redis

    url = settings.broker.url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return f"{_shown_url(url)}: not Redis; not checked"
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise WorkerError(
            f"cannot reach the broker at {_shown_url(url)} ({type(exc).__name__})",
            hint="Only the Celery worker and `sweep --enqueue` need it; check [broker] url",
        ) from None
    finally:
        client.close()
    return f"{_shown_url(url)} answers (queue {settings.broker.queue})"


def _provider(settings: Settings, name: str) -> str:
    from worker.providers import build_provider
    from worker.redact import register_secrets

    register_secrets(settings.secret_values())
    config = settings.provider(name)
    provider = build_provider(name, config)
    try:
        provider.check_credentials()
    except ProviderError as exc:
        raise _as_check(exc, name) from exc
    finally:
        provider.close()
    return f"{config.type} at {config.base_url}: credentials accepted"


def _as_check(exc: ProviderError, name: str) -> ProviderError:
    """The provider's error with a hint for a check. A sweep's errors end in what becomes
    of the job ("tried again", "read again on a later sweep"); a check has no job, only a
    configuration and a network to look at."""
    import httpx

    if isinstance(exc, ProviderRejected):  # its hint already names the credentials
        return exc
    if isinstance(exc, RateLimited):
        hint = "Run the check again once the provider's rate limit allows"
    elif isinstance(exc.__cause__, httpx.TransportError):
        hint = (
            f"Check providers.{name}.base_url, and that this host reaches it (DNS, firewall, "
            "proxy, TLS)"
        )
    elif isinstance(exc, ProviderUnavailable):
        hint = "The provider is failing; run the check again later"
    else:
        hint = f"Check providers.{name}.base_url, and that it is the provider's API"
    return type(exc)(exc.message, provider=exc.provider or name, hint=hint)
