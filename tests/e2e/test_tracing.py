"""Traces: one Celery sweep of two jobs gives one trace that follows each job across the
Celery hop, with a span for each provider request and each S3 call, and no secret anywhere
in it (the SDK's in-memory exporter, behind the worker's scrubbing gate)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REDIS_URL, ROOT, config_data, daily_provider, write_config
from worker import tracing
from worker.redact import register_secrets
from worker.simulators.daily import DailySimulator
from worker.simulators.s3server import LOCAL_CREDENTIALS, S3Server

pytestmark = [pytest.mark.redis, pytest.mark.slow]

Span = dict[str, Any]


def children(spans: list[Span], parent: Span, name: str | None = None) -> list[Span]:
    return [
        s
        for s in spans
        if s["parent_id"] == parent["span_id"] and (name is None or s["name"] == name)
    ]


def descendants(spans: list[Span], parent: Span) -> Iterator[Span]:
    for child in children(spans, parent):
        yield child
        yield from descendants(spans, child)


def url_of(span: Span) -> str:
    attributes = span["attributes"]
    return str(attributes.get("url.full") or attributes.get("http.url") or "")


def every_value(spans: list[Span]) -> Iterator[tuple[str, str]]:
    """Every attribute of every span, span event, link and resource, as (key, text)."""
    for span in spans:
        groups = [span["attributes"], span["resource"], *span["links"]]
        groups += [event["attributes"] for event in span["events"]]
        for group in groups:
            for key, value in group.items():
                for item in value if isinstance(value, list) else [value]:
                    yield key, str(item)


@pytest.fixture
def spans(
    daily_sim: DailySimulator,
    bucket: str,
    s3_server: S3Server,
    sqlite_url: str,
    tmp_path: Path,
    celery_queue: str,
) -> list[Span]:
    # given: two due Daily jobs whose outputs come from signed download links
    for n in range(2):
        daily_sim.add_job(transcription=[("txt", f"transcript {n}".encode())])
    config = write_config(
        tmp_path / "retention.toml",
        config_data(
            bucket=bucket,
            endpoint_url=s3_server.endpoint_url,
            ledger_url=sqlite_url,
            providers={"daily": daily_provider(daily_sim)},
            broker={"url": REDIS_URL, "queue": celery_queue},
        )
        | {"metrics": {"enabled": False}},
    )
    # when: one sweep runs through Celery, traced
    run = subprocess.run(
        [sys.executable, "-m", "tests.e2e.traced_sweep", "daily", "2", str(tmp_path / "spans")],
        cwd=ROOT,
        env={**os.environ, "RETENTION_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found: list[Span] = json.loads((tmp_path / "spans").read_text())
    return found


def test_one_sweep_of_two_jobs_is_one_trace_across_the_celery_hop(
    spans: list[Span], daily_sim: DailySimulator
) -> None:
    # then: every span is in one trace, begun where the sweep was sent
    assert len({s["trace_id"] for s in spans}) == 1
    (root,) = [s for s in spans if s["parent_id"] is None]
    assert (root["name"], root["kind"]) == ("apply_async/retention.sweep", "PRODUCER")
    (task,) = children(spans, root, "run/retention.sweep")
    assert task["kind"] == "CONSUMER"
    (sweep,) = children(spans, task, "retention.sweep")
    assert sweep["attributes"]["retention.provider"] == "daily"
    assert sweep["attributes"]["retention.dispatched"] == 2
    assert all(s["resource"]["service.name"] == "retention-worker" for s in spans)
    # and the sweep's listing is a request to the provider, under the sweep
    listing = [s for s in children(spans, sweep) if s["scope"].endswith("httpx")]
    assert listing
    assert all(url_of(s).startswith(daily_sim.base_url) for s in listing)

    # and each job crosses the hop: sent by the sweep, run by the worker, as a child of the send
    sends = children(spans, sweep, "apply_async/retention.process_job")
    assert len(sends) == 2
    jobs = set()
    for send in sends:
        (run,) = children(spans, send, "run/retention.process_job")
        (job,) = children(spans, run, "retention.job")
        jobs.add(job["attributes"]["retention.job_id"])
        assert job["attributes"]["retention.outcome"] == "deleted"
        below = list(descendants(spans, job))
        # with a span for each request to the provider: the job, its links, the download,
        # the delete...
        requests = [s for s in below if s["scope"].endswith("httpx")]
        methods = {
            s["attributes"].get("http.request.method") or s["attributes"].get("http.method")
            for s in requests
        }
        assert {"GET", "DELETE"} <= methods
        assert any("/files/" in url_of(s) for s in requests)  # the signed download
        # and for each S3 call: the files, the manifest, the receipt
        s3 = [s for s in below if s["scope"].endswith("botocore")]
        names = {s["name"] for s in s3}
        assert "S3.PutObject" in names, names
        assert len(names) > 1, names  # and what verifies them
    assert len(jobs) == 2


def test_no_span_attribute_holds_a_secret_or_a_query_string(
    spans: list[Span], daily_sim: DailySimulator
) -> None:
    secrets = {
        daily_sim.api_key,
        LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        *daily_sim.issued_signatures,
    }
    assert daily_sim.issued_signatures  # the downloads were signed links
    values = list(every_value(spans))
    assert len(values) > 100
    for key, text in values:
        for secret in secrets:
            assert secret not in text, (key, text)
        # URLs keep their path, never their query string (signed links carry credentials)
        for url in re.findall(r"[a-z][a-z0-9+.-]*://\S+", text):
            assert "?" not in url, (key, text)


def test_attributes_are_cleaned_whatever_instrumentation_set_them() -> None:
    register_secrets(["s3cr3t-api-key-1234"])
    signed = "https://files.example/a/b.mp4?X-Amz-Signature=abc&X-Amz-Credential=AKIA"
    assert tracing.clean(signed) == "https://files.example/a/b.mp4"
    assert tracing.clean(f"GET {signed} failed") == "GET https://files.example/a/b.mp4 failed"
    assert tracing.clean("key s3cr3t-api-key-1234 refused") == "key [redacted] refused"
    assert tracing.clean("hunter22", "authorization") == "[redacted]"
    assert tracing.clean((signed, "plain")) == ("https://files.example/a/b.mp4", "plain")
    assert tracing.clean(3) == 3


def test_tracing_is_off_unless_the_standard_variables_ask_for_it() -> None:
    assert not tracing.requested({})
    assert not tracing.requested({"OTEL_SERVICE_NAME": "retention"})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert tracing.requested({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.requested({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.requested(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}
    )
