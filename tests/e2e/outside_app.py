"""An application that hands its jobs to the worker knowing only the broker's URL and the
queue: Celery, and nothing of this project (importing it fails here, on purpose).

    python -I outside_app.py BROKER_URL QUEUE REQUESTS_JSON

REQUESTS_JSON is a list of ``{"args": [...], "kwargs": {...}}``, each sent as
``retention.track`` by name, in turn, waiting for each answer. One JSON line per request on
stdout: ``{"task_id", "answer"}``, or ``{"task_id", "error_type", "error"}``; then one line
``{"modules": [...]}`` naming every module of this project that got imported (none).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import sys
from collections.abc import Sequence
from types import ModuleType

PROJECT = ("worker", "tests", "bench")


class _NotThisProject(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".", maxsplit=1)[0] in PROJECT:
            raise ImportError(f"an outside application cannot import {fullname}")
        return None


sys.meta_path.insert(0, _NotThisProject())

from celery import Celery  # noqa: E402 - after the guard, which must see every import


def main(broker: str, queue: str, requests: str) -> None:
    app = Celery("outside-app", broker=broker, backend=broker)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    for request in json.loads(requests):
        result = app.send_task(
            "retention.track", args=request["args"], kwargs=request.get("kwargs"), queue=queue
        )
        try:
            line = {"task_id": result.id, "answer": result.get(timeout=90)}
        except Exception as exc:  # what the worker refused, as a client sees it
            line = {"task_id": result.id, "error_type": type(exc).__name__, "error": str(exc)}
        print(json.dumps(line), flush=True)
    ours = sorted(m for m in sys.modules if m.split(".", maxsplit=1)[0] in PROJECT)
    print(json.dumps({"modules": ours}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
