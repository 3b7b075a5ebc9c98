"""One sweep through Celery, traced into the OpenTelemetry SDK's in-memory exporter, in a
process of its own (a tracer provider is set once per process): a solo worker runs in this
process, consumes the sweep and the jobs it sends through Redis, and every finished span is
written to OUTPUT as one JSON document. tests/e2e/test_tracing.py runs it.

    RETENTION_CONFIG=retention.toml python -m tests.e2e.traced_sweep PROVIDER JOBS OUTPUT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from worker import tracing


def as_json(span: ReadableSpan) -> dict[str, Any]:
    def attributes(values: Any) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in (values or {}).items()}

    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "attributes": attributes(span.attributes),
        "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in span.events],
        "links": [attributes(link.attributes) for link in span.links],
        "resource": attributes(span.resource.attributes),
    }


def main(provider: str, jobs: int, output: Path) -> None:
    exporter = InMemorySpanExporter()
    assert tracing.configure("retention-worker", exporter=exporter)

    from celery.contrib.testing.worker import start_worker

    from worker.celery_app import app, sweep_queue
    from worker.settings import load_settings
    from worker.tasks import sweep

    settings = load_settings()
    with start_worker(
        app, pool="solo", perform_ping_check=False, shutdown_timeout=30, loglevel="WARNING"
    ):
        # As beat sends it: the trace begins at the send.
        sweep.apply_async((provider,), queue=sweep_queue(settings))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ran = [s for s in exporter.get_finished_spans() if s.name == "retention.job"]
            if len(ran) >= jobs:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # the task spans end just after the job's own
    output.write_text(json.dumps([as_json(span) for span in exporter.get_finished_spans()]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
