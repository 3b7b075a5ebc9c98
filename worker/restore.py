"""`retention restore`: an archived job's files back, each checked against its manifest.

Each file is read at the version that was verified (in a versioned bucket, a newer version
or a delete marker at the key does not change what is restored) and hashed as it is read; its
size and SHA-256 must match the manifest. A newer version or a delete marker at the key is
reported, never silently accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.archive import Archive
from worker.errors import WorkerError
from worker.keys import MANIFEST_NAME, RECEIPT_NAME, job_folder
from worker.manifest import ManifestFile, parse_manifest
from worker.settings import Settings


@dataclass(frozen=True)
class Restored:
    key: str
    path: Path | None
    size: int
    ok: bool
    problem: str | None = None
    # Something a person should know that does not make the file wrong (a newer version).
    note: str | None = None


def restore(
    archive: Archive, settings: Settings, provider: str, job_id: str, *, to: Path | None
) -> Iterator[Restored]:
    """Read every file of an archived job back, verifying it against the manifest; write it
    under ``to`` (keys relative to the job's folder) unless ``to`` is None."""
    folder = job_folder(settings.archive.prefix, provider, job_id)
    manifest_key = folder + MANIFEST_NAME
    document = archive.get_json(manifest_key)
    if document is None:
        raise WorkerError(
            f"there is no manifest at s3://{archive.bucket}/{manifest_key}",
            provider=provider,
            job_id=job_id,
            hint="Check the provider name and job id (`retention report` lists deleted jobs)",
        )
    files = parse_manifest(document, provider=provider, job_id=job_id, key=manifest_key)
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
        root = to.resolve()
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
        yield _restore_one(archive, entry, path)
    if to is not None:
        for name in (MANIFEST_NAME, RECEIPT_NAME):
            if archive.get_json(folder + name) is not None:
                with (root / name).open("wb") as out:
                    archive.read_back_sha256(folder + name, sink=out.write)


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
