"""`retention restore`: an archived job's files back, each checked against its manifest.

Each file is read at the version that was verified (in a versioned bucket, a newer version
or a delete marker at the key does not change what is restored) and hashed as it is read; its
size and SHA-256 must match the manifest. A newer version or a delete marker at the key is
reported, never silently accepted.

A file in a cold storage class (GLACIER, DEEP_ARCHIVE, an Intelligent-Tiering archive tier)
cannot be read until a RestoreObject finishes, which takes minutes to 48 hours by tier. Every
cold file of the job gets its restore started at once (``[archive] restore_tier``, for
``restore_days``), so the wait is the longest one's, not their sum. Without ``wait`` the
files already readable are restored and the others are reported as waiting, saying when to
come back; with ``wait`` the command polls until they are readable, or until ``wait`` seconds
have passed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.archive import Archive, Thaw
from worker.errors import ConfigError, WorkerError
from worker.keys import RECEIPT_NAME, job_folder, manifest_key_for
from worker.manifest import ManifestFile, parse_manifest
from worker.settings import Settings

# How long AWS documents a restore to take, by storage class and tier
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/restoring-objects-retrieval-options.html).
TYPICAL = {
    ("GLACIER", "Expedited"): "1-5 minutes",
    ("GLACIER", "Standard"): "3-5 hours",
    ("GLACIER", "Bulk"): "5-12 hours",
    ("DEEP_ARCHIVE", "Standard"): "within 12 hours",
    ("DEEP_ARCHIVE", "Bulk"): "within 48 hours",
}
# Polling a thaw: first at once (a restore may already be done), then ever less often.
FIRST_POLL_SECONDS = 10.0
LONGEST_POLL_SECONDS = 300.0
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Restored:
    key: str
    path: Path | None
    size: int
    ok: bool
    problem: str | None = None
    # Something a person should know that does not make the file wrong (a newer version).
    note: str | None = None
    # The file is thawing from cold storage: when to come back.
    waiting: str | None = None


class RestoreRun:
    """A job's files, each as it is restored (or verified), and how many of them were,
    differ or are missing, or wait for a thaw, once they have all been read."""

    def __init__(self, files: Iterator[Restored]) -> None:
        self._files = files
        self.restored = self.problems = self.waiting = 0

    def __iter__(self) -> Iterator[Restored]:
        for item in self._files:
            if item.ok:
                self.restored += 1
            elif item.waiting:
                self.waiting += 1
            else:
                self.problems += 1
            yield item

    @property
    def total(self) -> int:
        return self.restored + self.problems + self.waiting

    @property
    def ok(self) -> bool:
        return not (self.problems or self.waiting)


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``30s``, ``15m``, ``12h`` or ``2d``; ConfigError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"{text!r} is not a duration", hint="Write it like 90s, 15m, 12h or 2d")
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def thaw_message(thaw: Thaw, days: int) -> str:
    """What a person waiting for ``thaw`` should know: what was done, and when to come back."""
    where = thaw.storage_class or "an archive tier"
    typical = TYPICAL.get((thaw.storage_class or "", thaw.tier or ""))
    if typical is None:
        when = "which AWS documents as taking minutes to 48 hours by tier"
    elif typical.startswith("within"):
        when = f"typically ready {typical}"
    else:
        when = f"typically ready in {typical}"
    verb = "was started" if thaw.state == "started" else "is in progress"
    return (
        f"in {where}: a {thaw.tier} restore {verb}, {when}; the thawed copy stays readable "
        f"{days} days. Run this command again then, or pass --wait"
    )


def restore_job(
    archive: Archive,
    settings: Settings,
    provider: str,
    job_id: str,
    *,
    to: Path | None,
    wait: float | None = None,
) -> RestoreRun:
    """`retention restore`: every file of the job, restored under ``to`` or (None) verified."""
    return RestoreRun(restore(archive, settings, provider, job_id, to=to, wait=wait))


def restore(
    archive: Archive,
    settings: Settings,
    provider: str,
    job_id: str,
    *,
    to: Path | None,
    wait: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Restored]:
    """Read every file of an archived job back, verifying it against the manifest; write it
    under ``to`` (keys relative to the job's folder) unless ``to`` is None. Cold files are
    thawed first; ``wait`` is how many seconds to wait for them (None: not at all)."""
    folder = job_folder(settings.archive.prefix, provider, job_id)
    manifests = _manifests(archive, folder)
    # The newest lists every file archived for the job, earlier archives' copies included.
    manifest_key = manifests[-1]
    deadline = None if wait is None else clock() + wait
    days = settings.archive.restore_days
    thaw = archive.thaw(manifest_key)
    if thaw is None:
        raise WorkerError(
            f"there is no manifest at s3://{archive.bucket}/{manifest_key}",
            provider=provider,
            job_id=job_id,
            hint="Check the provider name and job id (`retention report` lists deleted jobs)",
        )
    if thaw.state != "readable":
        # Manifests are written in a readable class; an archive from before
        # manifest_storage_class existed may still hold a cold one.
        still = _await(archive, {manifest_key: (None, thaw)}, deadline, sleep, clock)
        if still:
            raise WorkerError(
                f"the manifest s3://{archive.bucket}/{manifest_key} is "
                + thaw_message(still[manifest_key], days),
                provider=provider,
                job_id=job_id,
            )
    document = archive.get_json(manifest_key)
    files = parse_manifest(document, provider=provider, job_id=job_id, key=manifest_key)
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
        root = to.resolve()
    wanted: list[tuple[ManifestFile, Path | None]] = []
    for entry in files:
        if not entry.key.startswith(folder):
            yield Restored(entry.key, None, 0, False, "the manifest lists a key outside the job")
            continue
        path = None
        if to is not None:
            path = (root / entry.key[len(folder) :]).resolve()
            if not path.is_relative_to(root):
                yield Restored(entry.key, None, 0, False, "refused: it would land outside --to")
                continue
        wanted.append((entry, path))
    # Every cold file's restore starts now, so they thaw side by side.
    cold: dict[str, tuple[str | None, Thaw]] = {}
    for entry, _ in wanted:
        try:
            state = archive.thaw(entry.key, entry.version_id)
        except WorkerError:
            continue  # reported when the file is read
        if state is not None and state.state != "readable":
            cold[entry.key] = (entry.version_id, state)
    waiting = _await(archive, cold, deadline, sleep, clock) if cold else {}
    for entry, path in wanted:
        if entry.key in waiting:
            message = thaw_message(waiting[entry.key], days)
            if wait is not None:
                message = f"still thawing after waiting {wait:.0f} s: " + message
            yield Restored(entry.key, path, 0, False, waiting=message)
        else:
            yield _restore_one(archive, entry, path)
    if to is not None:
        for key in (*manifests, folder + RECEIPT_NAME):
            present = archive.thaw(key, start=False)
            if present is not None and present.state == "readable":
                with (root / key[len(folder) :]).open("wb") as out:
                    archive.read_back_sha256(key, sink=out.write)


def _manifests(archive: Archive, folder: str) -> list[str]:
    """The job's manifests, oldest first: ``manifest.json``, then one per later archive (a job
    archived again after it changed at the provider)."""
    found = [manifest_key_for(folder, 1)]
    while archive.stat(manifest_key_for(folder, len(found) + 1)) is not None:
        found.append(manifest_key_for(folder, len(found) + 1))
    return found


def _await(
    archive: Archive,
    cold: dict[str, tuple[str | None, Thaw]],
    deadline: float | None,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> dict[str, Thaw]:
    """Poll until every key in ``cold`` is readable or ``deadline`` passes; the keys still
    thawing, with their state. Without a deadline nothing is polled: a restore just started
    is never done yet."""
    pending = {key: thaw for key, (_, thaw) in cold.items()}
    if deadline is None:
        return pending
    pause = FIRST_POLL_SECONDS
    while True:
        for key in list(pending):
            version = cold[key][0]
            now = archive.thaw(key, version, start=False)
            if now is None or now.state == "readable":
                del pending[key]  # readable, or gone: reading it says which
            else:
                # Keep the first answer's "started": it tells the person what was done.
                first = pending[key]
                pending[key] = first if first.state == "started" else now
        if not pending:
            return pending
        left = deadline - clock()
        if left <= 0:
            return pending
        sleep(min(pause, left))
        pause = min(pause * 2, LONGEST_POLL_SECONDS)


def _restore_one(archive: Archive, entry: ManifestFile, path: Path | None) -> Restored:
    key, size, sha256, version = entry.key, entry.size, entry.sha256, entry.version_id
    try:
        note = archive.superseded(key, version)
        if path is None:
            got_size, got_sha = archive.read_back_sha256(key, version)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                got_size, got_sha = archive.read_back_sha256(key, version, sink=out.write)
    except WorkerError as exc:
        return Restored(key, path, 0, False, f"missing or unreadable: {exc}")
    if got_size != size:
        return Restored(key, path, got_size, False, f"{got_size} bytes, the manifest says {size}")
    if got_sha != sha256:
        return Restored(
            key,
            path,
            got_size,
            False,
            f"SHA-256 {got_sha[:16]}..., the manifest says {sha256[:16]}...",
        )
    return Restored(key, path, got_size, True, note=note)
