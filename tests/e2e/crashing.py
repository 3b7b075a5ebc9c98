"""Run the `retention` command, but SIGKILL this process at one named step boundary.

    python -m tests.e2e.crashing POINT [retention arguments...]

The patch wraps one method so the process dies the first time that boundary is crossed:
no cleanup, no `finally`, no answer recorded, exactly like a kill -9 or an OOM kill.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from worker import cli
from worker.archive import Archive
from worker.ledger.writes import JobWrites
from worker.providers.daily import DailyProvider


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_before(owner: Any, name: str, when: Callable[..., bool] = lambda *a, **k: True) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            die()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def kill_after(owner: Any, name: str, when: Callable[..., bool] = lambda *a, **k: True) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if when(*args, **kwargs):
            die()
        return result

    setattr(owner, name, wrapper)


def is_manifest(_self: Any, key: str, *_: Any, **__: Any) -> bool:
    return key.endswith("manifest.json")


def after_download() -> None:
    # Every byte read from the provider (a single PUT's body), nothing written to S3 yet.
    kill_before(Archive, "_put_single")
    # The first part read (a multipart upload starts with its first part in hand).
    kill_before(Archive, "_put_multipart")


POINTS: dict[str, Callable[[], None]] = {
    "after_download": after_download,
    # Written to S3, not verified yet.
    "after_upload": lambda: kill_before(Archive, "_verify"),
    # Verified, not recorded in the ledger yet.
    "after_verify": lambda: kill_after(Archive, "_verify"),
    # The manifest written, the job not marked archived yet.
    "after_manifest": lambda: kill_after(Archive, "put_json", is_manifest),
    # The provider deleted the job; its answer never recorded.
    "after_delete_sent": lambda: kill_after(DailyProvider, "delete"),
    # The answer recorded; custom-bucket cleanup and the receipt not done yet.
    "after_provider_deleted": lambda: kill_after(JobWrites, "record_provider_deleted"),
}


def main() -> None:
    point, args = sys.argv[1], sys.argv[2:]
    if point == "while_polling":
        from worker.providers.datocms import DatoCmsProvider

        kill_before(DatoCmsProvider, "poll_delete")
    else:
        POINTS[point]()
    sys.argv = ["retention", *args]
    cli.main()


if __name__ == "__main__":
    main()
