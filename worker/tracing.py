"""Traces: OpenTelemetry, optional (``retention-worker[otel]``) and off unless asked for.

Tracing is on when the standard variables ask for an exporter (``OTEL_TRACES_EXPORTER``, or
an OTLP endpoint: ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``),
``OTEL_SDK_DISABLED`` is not true, and the extra is installed. The SDK reads the rest
itself: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, the sampler, the OTLP headers.
Where it is off, nothing of OpenTelemetry is imported: `retention status` and `--help` stay
quick.

What a trace holds: the maintained instrumentations give the Celery hop (a sweep's task, each
``retention.process_job`` it sends, linked through the task's headers, from beat's send to the
job's run), httpx's requests (the providers' APIs, downloads) and botocore's (S3);
``traced`` adds a span per sweep (``retention.sweep``) and per job (``retention.job``), so a
`retention sweep` run by hand gets its own trace as well.

What a trace never holds: a secret. Every attribute of every span and span event passes
through ``scrubbed`` on its way to the exporter: URLs lose their query strings (signed links
carry credentials there), and the log redactor (``worker.redact``) removes the configured
credentials and anything shaped like one.

Under Celery's prefork pool, each child sets tracing up after the fork (``celery_app``, on
``worker_process_init``: the SDK's export thread does not survive a fork), and beat does so on
``beat_init``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from worker.redact import REDACTOR

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

P = ParamSpec("P")
R = TypeVar("R")

TRACER_NAME = "retention-worker"

# A URL's query string and fragment, wherever a URL stands in a value.
_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#\"'<>]+)[?#][^\s\"'<>]*")

_lock = threading.Lock()
_configured_pid: int | None = None


def requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OTEL_* variables ask for traces to be exported."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def enabled() -> bool:
    """Whether this process exports traces (``configure`` set them up here)."""
    return _configured_pid == os.getpid()


def configure(service: str, *, exporter: SpanExporter | None = None) -> bool:
    """Set tracing up in this process, once, if the environment asks for it (or an
    ``exporter`` is given, as the tests give the SDK's in-memory one). False, and nothing
    imported, when it does not; False with a warning when the extra is not installed."""
    global _configured_pid  # noqa: PLW0603 - one tracer provider per process
    if exporter is None and not requested():
        return False
    with _lock:
        if _configured_pid == os.getpid():
            return True
        try:
            _install(service, exporter)
        except ImportError as exc:
            from worker.logging import get_logger

            get_logger(__name__).warning(
                "tracing_unavailable",
                error=str(exc),
                hint="OTEL_* variables ask for traces, but OpenTelemetry is not installed: "
                "pip install 'retention-worker[otel]'",
            )
            return False
        _configured_pid = os.getpid()
        return True


def _install(service: str, exporter: SpanExporter | None) -> None:
    from opentelemetry import trace
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # A service name given by OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES (which
    # Resource.create reads) wins over ours, which would otherwise override it.
    named = os.environ.get("OTEL_SERVICE_NAME") or re.search(
        r"(^|,)\s*service\.name=", os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    )
    resource = Resource.create() if named else Resource.create({SERVICE_NAME: service})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        # Given (the tests' in-memory exporter): every span there as it ends.
        provider.add_span_processor(SimpleSpanProcessor(scrubbed(exporter)))
    else:
        provider.add_span_processor(BatchSpanProcessor(scrubbed(_environment_exporter())))
    trace.set_tracer_provider(provider)
    instrumentors = (
        CeleryInstrumentor(),  # type: ignore[no-untyped-call]  # unannotated upstream
        HTTPXClientInstrumentor(),
        BotocoreInstrumentor(),  # type: ignore[no-untyped-call]
    )
    for instrumentor in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)


def _environment_exporter() -> SpanExporter:
    """The exporter OTEL_TRACES_EXPORTER names: OTLP over HTTP (the default) or console."""
    name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    first = name.split(",")[0].strip()
    if first == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if first not in ("otlp", "otlp_proto_http"):
        from worker.logging import get_logger

        get_logger(__name__).warning(
            "tracing_exporter_unsupported",
            exporter=first,
            hint="OTEL_TRACES_EXPORTER may be otlp (OTLP over HTTP) or console; using otlp",
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def flush(timeout_millis: int = 5000) -> None:
    """Export what has ended (before a command exits; a Celery child before it is recycled)."""
    if not enabled():
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(timeout_millis)


# -- keeping secrets out ---------------------------------------------------------------------


def clean(value: Any, key: str | None = None) -> Any:
    """An attribute's value fit to export: no URL query string, no secret."""
    if isinstance(value, str):
        return REDACTOR.scrub_value(_QUERY.sub(r"\1", value), key)
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return tuple(clean(v, key) for v in value)
    return REDACTOR.scrub_value(value, key) if key is not None else value


def clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: clean(v, k) for k, v in (attributes or {}).items()}


def scrubbed(exporter: SpanExporter) -> SpanExporter:
    """``exporter``, handed every span with its attributes, its events' and its links' cleaned
    (``clean``): the one gate between the instrumentations, ours included, and whatever
    receives the traces."""
    from opentelemetry.sdk.trace.export import SpanExporter

    class Scrubbed(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return exporter.export([_scrubbed(span) for span in spans])

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return Scrubbed()


def _scrubbed(span: ReadableSpan) -> ReadableSpan:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link

    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=clean_attributes(span.attributes),
        events=[
            Event(event.name, clean_attributes(event.attributes), event.timestamp)
            for event in span.events
        ],
        links=[Link(link.context, clean_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


# -- our own spans ----------------------------------------------------------------------------


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A span around the block when tracing is on (yields it, else None)."""
    if not enabled():
        yield None
        return
    from opentelemetry import trace

    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, attributes=dict(attributes or {})) as current:
        yield current


def traced(
    name: str,
    attributes: Callable[..., Mapping[str, Any]],
    result: Callable[[Any], Mapping[str, Any]] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A span named ``name`` around each call, with ``attributes(*args, **kwargs)`` and, when
    it returns, ``result(returned)``. Nothing when tracing is off."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not enabled():
                return fn(*args, **kwargs)
            with span(name, attributes(*args, **kwargs)) as current:
                returned = fn(*args, **kwargs)
                if result is not None and current is not None:
                    current.set_attributes(dict(result(returned)))
                return returned

        return wrapper

    return decorate
