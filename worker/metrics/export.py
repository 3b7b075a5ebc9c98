"""After a `retention sweep` run by hand: its metrics written to node_exporter's textfile
collector and/or pushed to a Pushgateway.

Such a run (cron, a Kubernetes CronJob) records into its own process and serves nothing.
``export_after_command`` adds what it recorded to what the previous runs left at each
target, with the ledger's and the schedules' gauges as they stand now (``gauges``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from worker.logging import get_logger
from worker.metrics import recorders
from worker.metrics.gauges import (
    COMPUTED,
    FIRST_SCHEDULED,
    build_info_family,
    declared_metrics,
    ledger_families,
    read_ledger_gauges,
    schedule_families,
    schedules_of,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from worker.ledger.queries import ProviderGauges
    from worker.settings import MetricsSettings, Settings

log = get_logger(__name__)

# The Pushgateway group `retention sweep` runs push to.
PUSH_JOB = "retention-worker"

_Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class _Family:
    name: str
    type: str
    documentation: str
    samples: dict[_Key, float] = field(default_factory=dict)


_Snapshot = dict[str, _Family]

# Gauges whose newest value wins when a run's values meet the previous runs'.
_LATEST = {
    "retention_last_successful_sweep_timestamp_seconds",
    "retention_last_scrub_timestamp_seconds",
    "retention_last_clean_scrub_timestamp_seconds",
}


def _snapshot(families: Iterable[Metric], *, strip: Iterable[str] = ()) -> _Snapshot:
    drop = set(strip)
    out: _Snapshot = {}
    for metric in families:
        if not metric.name.startswith("retention_") or metric.name.endswith("_created"):
            continue
        family = out.setdefault(
            metric.name, _Family(metric.name, metric.type, metric.documentation)
        )
        for sample in metric.samples:
            if sample.name.endswith("_created"):  # creation times, per process: not merged
                continue
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in drop))
            family.samples[(sample.name, labels)] = sample.value
    return out


def _merge(previous: _Snapshot, run: _Snapshot) -> _Snapshot:
    """This run's recorded metrics added to what the previous runs left: counters and
    histograms add up, so rate() and increase() work across runs; the last-success and
    last-scrub timestamps keep the newest; other gauges take this run's value, or keep the
    previous one when this run has none (a scrub's findings)."""
    out: _Snapshot = {}
    for name in previous.keys() | run.keys():
        old, new = previous.get(name), run.get(name)
        base = new or old
        assert base is not None
        family = out[name] = _Family(base.name, base.type, base.documentation)
        family.samples = dict(old.samples) if old is not None else {}
        if new is None:
            continue
        for key, value in new.samples.items():
            before = family.samples.get(key)
            if before is None:
                family.samples[key] = value
            elif new.type in ("counter", "histogram"):
                family.samples[key] = before + value
            elif name in _LATEST:
                family.samples[key] = max(before, value)
            else:
                family.samples[key] = value
    return out


def _samples(snapshot: _Snapshot, name: str) -> list[tuple[_Key, float]]:
    family = snapshot.get(name)
    return [] if family is None else list(family.samples.items())


def _computed_snapshot(
    settings: Settings,
    ledger: list[ProviderGauges] | None,
    merged: _Snapshot,
    previous: _Snapshot,
    now: float,
) -> _Snapshot:
    successes: dict[str, float] = {}
    for (_, labels), value in _samples(merged, "retention_last_successful_sweep_timestamp_seconds"):
        successes[dict(labels).get("provider", "")] = value
    earliest: dict[tuple[str, str], float] = {}
    for (_, labels), value in _samples(previous, FIRST_SCHEDULED.name):
        named = dict(labels)
        earliest[(named.get("provider", ""), named.get("schedule", ""))] = value
    families = [
        *ledger_families(ledger),
        *schedule_families(
            schedules_of(settings), last_success=successes, started=now, earliest_first=earliest
        ),
        build_info_family(),
    ]
    return _snapshot(families)


class _Families:
    """A collector over a snapshot, for prometheus-client's text rendering and push."""

    def __init__(self, snapshot: _Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import Metric

        for name in sorted(self.snapshot):
            family = self.snapshot[name]
            metric = Metric(family.name, family.documentation, family.type)
            for (sample, labels), value in sorted(family.samples.items()):
                metric.add_sample(sample, dict(labels), value)
            yield metric


def _render(snapshot: _Snapshot) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(_Families(snapshot))
    return generate_latest(registry)


def _parse(text: str, *, only: Mapping[str, str] | None = None) -> _Snapshot:
    """A snapshot of exposition text; with ``only``, the samples carrying those labels (a
    Pushgateway's group), without them and without the ``instance`` it adds."""
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(text))
    if only:
        for family in families:
            family.samples = [
                s for s in family.samples if all(s.labels.get(k) == v for k, v in only.items())
            ]
    return _snapshot(families, strip=[*(only or {}), "instance"] if only else ())


class _Textfile:
    """node_exporter's textfile collector: one .prom file, replaced atomically."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        # Two runs at once would each add their counts to the same previous file and one
        # would be lost. The lock file's name does not end in .prom: node_exporter skips it.
        lock = self.path.with_name(f".{self.path.name}.lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> _Snapshot:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            return _parse(text)
        except ValueError as exc:
            log.warning("metrics_textfile_unreadable", path=str(self.path), error=str(exc)[:200])
            return {}

    def write(self, snapshot: _Snapshot) -> None:
        # Written beside the target and renamed over it: node_exporter never reads half a
        # file, and the temporary name does not end in .prom.
        body = _render(snapshot)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            # node_exporter runs as another user: the file must be world-readable.
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


class _Pushgateway:
    """A Pushgateway's group ``job="retention-worker"``, replaced whole on each push."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.username, self.password = parts.username, parts.password
        # The credentials go in a header, never in a URL that could be logged.
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))

    def __str__(self) -> str:
        return self.url

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        yield  # one host pushes to the group (docs/operations/metrics.md); nothing to lock

    def _auth(self) -> dict[str, str]:
        if self.username is None:
            return {}
        import base64

        token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def read(self) -> _Snapshot:
        import urllib.request  # only where a Pushgateway is configured: start-up stays quick

        request = urllib.request.Request(f"{self.url}/metrics", headers=self._auth())  # noqa: S310 - http(s) only (settings)
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            text = answer.read().decode("utf-8")
        return _parse(text, only={"job": PUSH_JOB})

    def write(self, snapshot: _Snapshot) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import default_handler, push_to_gateway

        registry = CollectorRegistry()
        registry.register(_Families(snapshot))
        auth = self._auth()

        def handler(
            url: str,
            method: str,
            timeout: float | None,
            headers: list[tuple[str, str]],
            data: bytes,
        ) -> Callable[[], None]:
            return default_handler(url, method, timeout, [*headers, *auth.items()], data)

        # PUT: the group is replaced by what was merged, so nothing is counted twice.
        push_to_gateway(self.url, job=PUSH_JOB, registry=registry, timeout=10, handler=handler)


def _targets(config: MetricsSettings) -> list[_Textfile | _Pushgateway]:
    targets: list[_Textfile | _Pushgateway] = []
    if config.textfile:
        targets.append(_Textfile(config.textfile))
    if config.pushgateway_url:
        targets.append(_Pushgateway(config.pushgateway_url.get_secret_value()))
    return targets


# What this process already added to each target: a second export in one process adds
# only what was counted since, never the same counts twice.
_sent: dict[str, _Snapshot] = {}


def _not_yet_sent(run: _Snapshot, sent: _Snapshot) -> _Snapshot:
    out: _Snapshot = {}
    for name, family in run.items():
        before = sent.get(name)
        out[name] = _Family(family.name, family.type, family.documentation)
        for key, value in family.samples.items():
            if before is not None and family.type in ("counter", "histogram"):
                value -= before.samples.get(key, 0.0)  # noqa: PLW2901 - the part not yet sent
            out[name].samples[key] = value
    return out


def _own_snapshot() -> _Snapshot:
    """What this process recorded (a `retention sweep` keeps its metrics in memory)."""
    from prometheus_client import REGISTRY

    recorders.metrics()  # every family exists, even one this run never touched
    run = _snapshot(REGISTRY.collect())
    if not recorders.scrubbed_here():
        for name in recorders.SCRUB_GAUGES:
            run.pop(name, None)
    return run


def export_after_command(settings: Settings) -> list[str]:
    """After a `retention sweep` run (not a dry run): write this run's metrics to ``[metrics]
    textfile`` and/or push them to ``[metrics] pushgateway_url``, each added to what the
    previous runs left there, with the ledger's and the schedules' gauges as they stand now.

    Counters and histograms are added to the target's, so they grow across runs as a served
    counter would; each count is added once, however often this is called in one process.
    An export that fails is logged (``metrics_export_failed``) and does not change the
    command's outcome: the sweep itself ran, and the dead-man's switch notices exports that
    stop. Returns the targets written, for the caller's log.
    """
    targets = _targets(settings.metrics)
    if not targets:
        return []
    run = _own_snapshot()
    now = time.time()
    try:
        ledger: list[ProviderGauges] | None = read_ledger_gauges(settings)
    except Exception as exc:  # any failure: exported as retention_ledger_up 0
        log.warning("metrics_ledger_unreadable", error=f"{type(exc).__name__}: {exc}"[:300])
        ledger = None
    written = []
    for target in targets:
        try:
            with target.locked():
                # Only what this version declares is carried on: a metric since renamed
                # (retention_bytes_archived_total) or another tool's does not linger.
                known = declared_metrics()
                previous = {k: v for k, v in target.read().items() if k in known}
                merged = _merge(previous, _not_yet_sent(run, _sent.get(str(target), {})))
                # Computed anew each time: a previous run's ledger counts are never kept,
                # not even when the ledger cannot be read now (retention_ledger_up 0 says so).
                for declared in COMPUTED:
                    merged.pop(declared.name, None)
                merged.update(_computed_snapshot(settings, ledger, merged, previous, now))
                target.write(merged)
        except (OSError, ValueError) as exc:
            log.warning(
                "metrics_export_failed",
                target=str(target),
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
        else:
            _sent[str(target)] = run
            written.append(str(target))
    return written
