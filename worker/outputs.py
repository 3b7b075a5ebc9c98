"""A job's outputs: as a fresh read lists them, as the archive recorded them, and how the
two compare.

The delete rests on this comparison: a read that lists an output the archive lacks, or one
the provider declares changed (another size, digest, ETag or version, or a job that ran
again), keeps the delete from being sent (``domain.next_step``, ``delete.delete_job``). Pure
values, no I/O; below the domain, which builds its reads from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NotRequired, TypedDict

from worker.json_types import JSONValue


@dataclass(frozen=True, slots=True)
class Output:
    """One output a read of the job lists, as the provider describes it: its name under the
    job's folder and whatever it declares of its content (size, digest, ETag, version)."""

    name: str
    size: int | None = None
    sha256: str | None = None
    etag: str | None = None
    version: str | None = None

    def declared(self) -> tuple[int | None, str | None, str | None, str | None]:
        return (self.size, self.sha256, self.etag, self.version)


class OutputRecord(TypedDict):
    """One archived output as the ledger keeps it (``archived_outputs``)."""

    name: str
    key: str
    size: int | None
    sha256: str | None
    etag: str | None
    version: str | None
    # Set when the job ran again at the provider after this was archived.
    rerun: NotRequired[bool]


def archived_outputs_json(outputs: Sequence[Output], keys: Mapping[str, str]) -> list[OutputRecord]:
    """What the ledger keeps of an archive's outputs: each one's name, the key that holds it
    and what the provider declared of it. A later read is compared with this."""
    return [
        {
            "name": o.name,
            "key": keys[o.name],
            "size": o.size,
            "sha256": o.sha256,
            "etag": o.etag,
            "version": o.version,
        }
        for o in outputs
    ]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One output as the archive recorded it."""

    output: Output
    key: str
    # The job ran again at the provider after this was archived: what the file holds now is
    # not known to be what was archived, so it is fetched again.
    rerun: bool = False


def recorded_outputs(value: JSONValue) -> dict[str, Recorded] | None:
    """The ledger's record of an archive's outputs, by name; None when there is none (a job
    archived before outputs were recorded) or it cannot be read: nothing is proved then."""
    if not isinstance(value, list):
        return None
    found: dict[str, Recorded] = {}
    for entry in value:
        if not isinstance(entry, dict):
            return None
        name, key, size = entry.get("name"), entry.get("key"), entry.get("size")
        declared = [entry.get(field) for field in ("sha256", "etag", "version")]
        if not (isinstance(name, str) and isinstance(key, str)):
            return None
        if not (size is None or isinstance(size, int)):
            return None
        if not all(v is None or isinstance(v, str) for v in declared):
            return None
        sha256, etag, version = (v if isinstance(v, str) else None for v in declared)
        output = Output(name, size, sha256, etag, version)
        found[output.name] = Recorded(output, key, bool(entry.get("rerun")))
    return found


def marked_rerun(value: JSONValue) -> JSONValue:
    """The record of an archive's outputs with every one marked as run again."""
    if not isinstance(value, list):
        return value
    return [dict(e, rerun=True) if isinstance(e, dict) else e for e in value]


@dataclass(frozen=True, slots=True)
class OutputChanges:
    """How a fresh read's outputs differ from what the archive recorded."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    # The archive recorded no outputs to compare with (archived by an earlier version).
    unrecorded: bool = False

    @property
    def new_at_provider(self) -> bool:
        """The provider holds something the archive does not: the delete would destroy it."""
        return self.unrecorded or bool(self.added or self.changed)

    @property
    def any(self) -> bool:
        return self.new_at_provider or bool(self.removed)

    def describe(self) -> str:
        if self.unrecorded:
            return "the archive recorded no outputs to compare the provider's with"
        parts = []
        for label, names in (
            ("new output(s)", self.added),
            ("changed", self.changed),
            ("no longer listed", self.removed),
        ):
            if names:
                shown = ", ".join(names[:5]) + (
                    f" and {len(names) - 5} more" if len(names) > 5 else ""
                )
                parts.append(f"{label}: {shown}")
        return "; ".join(parts) or "no change"


def compare_outputs(recorded: JSONValue, fresh: Sequence[Output]) -> OutputChanges:
    """What a fresh read lists against the archive: names added, changed (any declared size,
    digest, ETag or version that differs, or a file of a job that ran again) and removed."""
    known = recorded_outputs(recorded)
    if known is None:
        return OutputChanges(unrecorded=True)
    names = {o.name for o in fresh}
    added = tuple(o.name for o in fresh if o.name not in known)
    changed = tuple(
        o.name
        for o in fresh
        if o.name in known
        and (known[o.name].rerun or known[o.name].output.declared() != o.declared())
    )
    removed = tuple(sorted(set(known) - names))
    return OutputChanges(added, changed, removed)
