"""How the ledger's operator commands read: what was tracked, held, released or put back in
line, and the schema a migration left."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

from worker.render.view import View


class TrackView(View):
    message_type = "track"

    def __init__(
        self,
        provider: str,
        job_ids: Sequence[str],
        new: Collection[str],
        held: Collection[str] = (),
    ) -> None:
        self.provider = provider
        self.job_ids = job_ids
        self.new = new
        self.held = held

    def lines(self) -> Iterator[str]:
        line = f"tracking {len(self.job_ids)} job(s) of {self.provider}; {len(self.new)} new"
        yield line + (f"; {len(self.held)} newly held" if self.held else "")

    def fields(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "tracking": list(self.job_ids),
            "new": sorted(self.new),
            "held": sorted(self.held),
        }


class HoldView(View):
    """A hold put on (``held``) or lifted, and whether that changed anything."""

    message_type = "hold"

    def __init__(self, provider: str, job_id: str, *, held: bool, changed: bool) -> None:
        self.provider = provider
        self.job_id = job_id
        self.held = held
        self.changed = changed

    def lines(self) -> Iterator[str]:
        job = f"{self.provider} job {self.job_id}"
        if self.held:
            yield f"{job} is held" + ("" if self.changed else " (it already was)")
        else:
            yield f"{job} " + ("released" if self.changed else "was not held")

    def fields(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "job_id": self.job_id,
            "held": self.held,
            "changed": self.changed,
        }


class RetryView(View):
    """A job put back in line for the next sweep; if it was not failed, the command's error
    says so on stderr, and there is no line here."""

    message_type = "retry"

    def __init__(self, provider: str, job_id: str, *, retried: bool) -> None:
        self.provider = provider
        self.job_id = job_id
        self.retried = retried

    def lines(self) -> Iterator[str]:
        if self.retried:
            yield f"{self.provider} job {self.job_id} will be tried again on the next sweep"

    def fields(self) -> dict[str, object]:
        return {"provider": self.provider, "job_id": self.job_id, "retried": self.retried}


class MigrateView(View):
    message_type = "migrate"

    def __init__(self, revision: str | None) -> None:
        self.revision = revision

    def lines(self) -> Iterator[str]:
        yield f"the ledger is at schema {self.revision}"

    def fields(self) -> dict[str, object]:
        return {"schema": self.revision}
