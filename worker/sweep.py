"""One sweep of one provider account: discover, dispatch, brake.

    lease ─▶ listing folded into the ledger (and batch lookups) ─▶ work set frozen
    ─▶ each candidate processed here on a thread pool, or fanned out to Celery workers
    ─▶ counts, the brake's word, the dead-man's-switch timestamp

* **Lease.** One sweep per provider at a time (``leases``); a sweep that finds the lease
  taken says who holds it and does nothing. A sweep that loses its lease stops dispatching.
* **Outages.** A store every job needs (the ledger, the Redis of the leases and rate limits)
  that cannot be used, by the sweep or by any of its jobs, stops the sweep: the jobs after
  it would all meet the same. It says which store and where, and exits 3
  (``errors.StoreUnavailable``); the jobs it did not reach wait for the next sweep.
* **Brake.** ``max_deletes_per_sweep`` is a budget in the ledger, opened here and taken from
  at the delete gate by every worker that serves the sweep, so every job that ends in a
  delete counts, tracked or listed, here or on another host. Once it is spent, the sweep
  stops dispatching and says so; a job past it stays archived for the next sweep.
* **Dry run.** The same candidates, planned by ``dry_run.plan_job``; nothing is written.

Where things go: a new kind of candidate is a condition in ``Queries.candidates_query``; a
new sweep-wide limit is checked in ``_dispatch_all``.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from worker.domain import JobState, ListedJob, Phase
from worker.dry_run import LocalBudget, plan_job
from worker.errors import StoreUnavailable, WorkerError
from worker.job import process_job
from worker.leases import Heartbeat
from worker.ledger import Candidate
from worker.logging import get_logger
from worker.metrics import recorders
from worker.outcomes import JobResult, Outcome, SweepReport
from worker.providers.base import Provider
from worker.settings import ProviderPolicy
from worker.tracing import traced

if TYPE_CHECKING:
    from worker.bootstrap import Runtime

log = get_logger("worker.sweep")

CANDIDATE_BATCH = 500
# Under Celery the sweep does not see its jobs' results, so it asks the ledger how much of
# the delete budget is left every this many dispatches.
BUDGET_CHECK_EVERY = 50

# Hands one job to whoever processes it, with the sweep's delete budget (None: no deletes).
Dispatch = Callable[[str, str | None], None]
OnResult = Callable[[JobResult], None]
# Told of more jobs the sweep will process (provider, how many) as it reads them, and, with
# True, that it has read them all: a progress display's total known so far.
OnFound = Callable[[str, int, bool], None]
# The same, for the sweep of one provider.
Found = Callable[[int, bool], None]


class _Runner:
    """Runs jobs on a bounded thread pool, so a sweep's memory does not grow with the backlog."""

    def __init__(self, concurrency: int, work: Callable[[str], JobResult], done: OnResult) -> None:
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="job")
        self._slots = threading.BoundedSemaphore(concurrency * 2)
        self._work = work
        self._done = done

    def submit(self, job_id: str) -> None:
        self._slots.acquire()
        context = contextvars.copy_context()  # structlog's bound values follow the job
        future = self._pool.submit(context.run, self._work, job_id)

        def finished(f: Future[JobResult]) -> None:
            try:
                self._done(f.result())
            finally:
                self._slots.release()

        future.add_done_callback(finished)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@traced(
    "retention.sweep",
    lambda rt, provider_name, **_: {
        "retention.provider": provider_name,
        "retention.dry_run": rt.dry_run,
    },
    lambda report: {
        "retention.listed": report.listed,
        "retention.dispatched": report.dispatched,
        **{f"retention.{outcome}": n for outcome, n in sorted(report.counts.items())},
    },
)
def sweep_provider(
    rt: Runtime,
    provider_name: str,
    *,
    dispatch: Dispatch | None = None,
    on_result: OnResult | None = None,
    on_found: OnFound | None = None,
    lease_ttl: timedelta | None = None,
) -> SweepReport:
    """One sweep of one provider account.

    Discovery folds the provider's listing into the ledger; then every candidate (a job
    due, resumable, or whose status must be read again) is processed here on a thread pool,
    or handed to ``dispatch`` (Celery fan-out). ``on_result`` is told of each job as it
    finishes, ``on_found`` of the jobs ahead as the sweep reads them.
    """
    started = time.monotonic()
    report = SweepReport(provider=provider_name, dry_run=rt.dry_run)
    policy = rt.settings.policy(provider_name)
    provider = rt.provider(provider_name)
    log.info("sweep_started", provider=provider_name, dry_run=rt.dry_run)
    found = _announcer(provider_name, on_found)
    if rt.dry_run:
        _dry_sweep(rt, provider, policy, report, on_result, found)
    else:
        ttl = lease_ttl or timedelta(seconds=rt.settings.worker.sweep_lease_seconds)
        _leased_sweep(rt, provider, policy, report, dispatch, on_result, found, ttl)
        if report.outage is not None:
            report.stopped_reason = (
                f"{report.outage}. The sweep stopped there; the next sweep takes up what it left"
            )
            log.error("sweep_stopped_by_outage", provider=provider_name, error=report.outage)
    report.duration_ms = int((time.monotonic() - started) * 1000)
    if not rt.dry_run:
        # A sweep "succeeds" when it ran its listing and dispatch; failed jobs are counted
        # apart. The dead-man's switch watches this timestamp.
        recorders.record_sweep(
            provider_name,
            seconds=report.duration_ms / 1000,
            succeeded=not report.busy and report.listing_error is None and report.outage is None,
        )
    summary = report.summary().to_dict()
    summary.pop("provider")
    log.info("sweep_finished", provider=provider_name, **summary)
    return report


def _leased_sweep(
    rt: Runtime,
    provider: Provider,
    policy: ProviderPolicy,
    report: SweepReport,
    dispatch: Dispatch | None,
    on_result: OnResult | None,
    found: Found,
    ttl: timedelta,
) -> None:
    """The real sweep, under the provider's sweep lease; nothing at all without it."""
    lease = rt.sweep_lease(provider.name, ttl)
    try:
        if not lease.acquire():
            holder = lease.holder()
            report.busy = True
            report.busy_detail = holder.describe(rt.clock()) if holder else None
            log.info(
                "sweep_already_running",
                provider=provider.name,
                holder=holder.owner if holder else None,
                detail=report.busy_detail,
                lease=lease.where,
            )
            return
    except StoreUnavailable as exc:
        # Never a lease taken elsewhere instead: another worker may hold this one where it
        # is kept, and two sweeps would run at once (shared_redis).
        report.outage = exc.message
        return
    seconds = ttl.total_seconds()
    try:
        with Heartbeat(lease.renew, interval=seconds / 3, lapses_after=seconds) as beat:
            _real_sweep(rt, provider, policy, report, dispatch, on_result, found, beat.lost)
    except StoreUnavailable as exc:  # the sweep's own reads and writes: the listing, its jobs
        report.outage = report.outage or exc.message
    finally:
        try:
            lease.release()
        except StoreUnavailable as exc:
            # The lease expires by itself within its TTL; what the sweep did stands.
            log.warning("sweep_lease_release_failed", provider=provider.name, error=str(exc))


def _discover(
    provider: Provider, report: SweepReport, page_seen: Callable[[list[ListedJob]], None]
) -> None:
    try:
        for page in provider.list_jobs():
            report.listed += len(page)
            page_seen(page)
    except StoreUnavailable:
        raise  # not the listing's failure: the sweep stops (_leased_sweep)
    except WorkerError as exc:
        report.listing_error = str(exc) if exc.provider else f"{provider.name}: {exc}"
        report.listing_failed_permanently = exc.permanent
        log.error(
            "listing_failed",
            provider=provider.name,
            error=report.listing_error,
            permanent=exc.permanent,
        )


def _announcer(provider: str, on_found: OnFound | None) -> Found:
    def found(n: int, last: bool = False) -> None:
        if on_found is not None:
            on_found(provider, n, last)

    return found


def _candidate_batches(
    rt: Runtime,
    provider: str,
    *,
    start: datetime,
    cutoff: datetime,
    refreshed_since: datetime,
    resume: bool,
) -> Iterator[tuple[list[Candidate], bool]]:
    """The ledger's candidates in primary-key batches, so memory stays flat at any backlog;
    each with whether it is the last."""
    after = 0
    while True:
        batch = rt.ledger.query.candidates(
            provider,
            now=start,
            due_cutoff=cutoff,
            refreshed_since=refreshed_since,
            resume=resume,
            after_pk=after,
            limit=CANDIDATE_BATCH,
        )
        last = len(batch) < CANDIDATE_BATCH
        yield batch, last
        if last:
            return
        after = batch[-1].pk


def _candidates(
    batches: Iterator[tuple[list[Candidate], bool]], found: Found
) -> Iterator[Candidate]:
    """The candidates one at a time, telling ``found`` of each batch as it is read."""
    for batch, last in batches:
        found(len(batch), last)
        yield from batch


def _reporter(report: SweepReport, on_result: OnResult | None) -> OnResult:
    def done(result: JobResult) -> None:
        report.add(result)
        if on_result is not None:
            on_result(result)

    return done


def _look_up_stale(
    rt: Runtime,
    provider: Provider,
    refreshed_since: datetime,
    fold: Callable[[list[ListedJob]], None],
) -> None:
    """Read the status of jobs the listing did not cover, ``lookup_batch_size`` at a time.

    What a lookup does not return (or a lookup that fails) is left for ``process_job`` to read
    one by one; only that fresh read can decide a job is gone.
    """
    after = 0
    while True:
        rows = rt.ledger.query.stale(
            provider.name,
            refreshed_since=refreshed_since,
            now=rt.clock(),
            after_pk=after,
            limit=provider.lookup_batch_size,
        )
        if not rows:
            return
        after = rows[-1][0]
        asked = {job_id for _, job_id in rows}
        try:
            found = [item for item in provider.lookup(sorted(asked)) if item.job_id in asked]
        except StoreUnavailable:
            raise
        except WorkerError as exc:
            log.warning("lookup_failed", provider=provider.name, error=str(exc))
            return
        fold(found)


def _brake_message(limit: int) -> str:
    return (
        f"max_deletes_per_sweep ({limit}) reached; the remaining due jobs wait for the next "
        "sweep. Raise max_deletes_per_sweep if this backlog is expected"
    )


def _real_sweep(
    rt: Runtime,
    provider: Provider,
    policy: ProviderPolicy,
    report: SweepReport,
    dispatch: Dispatch | None,
    on_result: OnResult | None,
    found: Found,
    lease_lost: threading.Event,
) -> None:
    listing_started = rt.clock()

    def fold(page: list[ListedJob]) -> None:
        report.new += rt.ledger.discovery.record_listing(provider.name, page, rt.clock())
        # Listed as running: its status is fresh and it is not dispatched, but it was looked at.
        report.count(Outcome.NOT_TERMINAL, sum(i.phase == Phase.RUNNING for i in page))

    _discover(provider, report, fold)
    if report.listed:
        log.info("jobs_discovered", provider=provider.name, listed=report.listed, new=report.new)
    if provider.lookup_batch_size:
        _look_up_stale(rt, provider, listing_started, fold)
    # The work set is frozen here, once discovery is done: a job that becomes due while the
    # sweep runs waits for the next sweep (GitLab's `expired_before(@start_at)`).
    start = rt.clock()
    cutoff = start - timedelta(days=policy.retain_days)
    # A read-only sweep deletes nothing, so it has no budget to spend, and nothing to do for
    # jobs already archived: they neither count against the brake nor stand in line.
    budget = None
    if not policy.read_only:
        budget = uuid.uuid4().hex
        rt.ledger.coord.open_budget(budget, provider.name, policy.max_deletes_per_sweep, now=start)
    batches = _candidate_batches(
        rt,
        provider.name,
        start=start,
        cutoff=cutoff,
        refreshed_since=listing_started,
        resume=not policy.read_only,
    )
    candidates = _candidates(batches, found)
    braked = _dispatch_all(
        rt, provider.name, policy, report, candidates, dispatch, on_result, budget, lease_lost
    )
    if braked:
        report.braked = True
        report.stopped_reason = report.stopped_reason or _brake_message(
            policy.max_deletes_per_sweep
        )
        log.warning(
            "max_deletes_reached", provider=provider.name, limit=policy.max_deletes_per_sweep
        )
    held, not_due = rt.ledger.query.waiting(provider.name, due_cutoff=cutoff)
    report.count(Outcome.HELD, held)
    report.count(Outcome.NOT_DUE, not_due)


def _dispatch_all(
    rt: Runtime,
    provider: str,
    policy: ProviderPolicy,
    report: SweepReport,
    candidates: Iterator[Candidate],
    dispatch: Dispatch | None,
    on_result: OnResult | None,
    budget: str | None,
    lease_lost: threading.Event,
) -> bool:
    """Hand each candidate out (to this process's pool unless ``dispatch`` fans out), until
    they run out, the lease is lost, or the delete budget is spent; True if it was."""
    braked = threading.Event()
    done = _reporter(report, on_result)

    def seen(result: JobResult) -> None:
        if result.outcome == Outcome.STOPPED:
            braked.set()
        done(result)

    runner = None
    if dispatch is None:
        local = runner = _Runner(
            policy.concurrency, lambda job_id: _process(rt, provider, job_id, budget), seen
        )

        def dispatch(job_id: str, _budget: str | None) -> None:
            local.submit(job_id)

    try:
        for n, candidate in enumerate(candidates):
            if report.outage is not None:  # a job met it; the ones after would too
                break
            if lease_lost.is_set():
                report.stopped_reason = (
                    "the sweep lost its lease (another sweep took over, or the lease store "
                    "was unreachable); it stopped dispatching"
                )
                log.warning("sweep_lease_lost", provider=provider)
                break
            # Under Celery no result comes back here: ask the ledger now and then.
            ask = budget is not None and n > 0 and n % BUDGET_CHECK_EVERY == 0
            if ask and budget is not None and rt.ledger.coord.budget_left(budget) == 0:
                braked.set()
            if braked.is_set():
                break
            report.dispatched += 1
            dispatch(candidate.job_id, budget)
    finally:
        if runner is not None:
            runner.close()
    return braked.is_set() or bool(report.counts[Outcome.STOPPED])


def _process(rt: Runtime, provider: str, job_id: str, budget: str | None) -> JobResult:
    """``process_job``, and the ledger out of reach before the job's claim was taken or its
    failure recorded (nothing else escapes it) as the job's result, so the sweep stops."""
    try:
        return process_job(rt, provider, job_id, budget=budget)
    except StoreUnavailable as exc:
        log.warning("job_not_processed", provider=provider, job_id=job_id, error=str(exc))
        error = str(exc.for_job(provider, job_id))
        return JobResult(
            provider, job_id, Outcome.DEFERRED, error=error, unreachable=True, outage=exc.message
        )


def _dry_sweep(
    rt: Runtime,
    provider: Provider,
    policy: ProviderPolicy,
    report: SweepReport,
    on_result: OnResult | None,
    found: Found,
) -> None:
    """The same decisions as a real sweep, read-only: the listing is planned page by page
    (it is not folded into the ledger), then the ledger's own candidates."""
    start = rt.clock()
    cutoff = start - timedelta(days=policy.retain_days)
    seen: set[str] = set()
    budget = LocalBudget(policy.max_deletes_per_sweep)
    done = _reporter(report, on_result)
    runner = _Runner(
        policy.concurrency,
        lambda job_id: plan_job(rt, provider.name, job_id, budget=budget),
        done,
    )

    def plan_page(page: list[ListedJob]) -> None:
        found(len(page), False)
        for item in page:
            seen.add(item.job_id)
            row = rt.ledger.query.get(provider.name, item.job_id)
            if item.phase == Phase.RUNNING and (row is None or row.state == JobState.PENDING):
                # Listed as running: no read needed to know a real sweep would leave it.
                held = row is not None and row.held
                outcome = Outcome.HELD if held else Outcome.NOT_TERMINAL
                done(JobResult(provider.name, item.job_id, outcome))
            else:
                runner.submit(item.job_id)

    try:
        _discover(provider, report, plan_page)
        for batch, last in _candidate_batches(
            rt,
            provider.name,
            start=start,
            cutoff=cutoff,
            refreshed_since=start,
            resume=not policy.read_only,
        ):
            fresh = [c.job_id for c in batch if c.job_id not in seen]
            found(len(fresh), last)
            for job_id in fresh:
                runner.submit(job_id)
    finally:
        runner.close()
    if report.counts[Outcome.STOPPED]:
        report.stopped_reason = _brake_message(policy.max_deletes_per_sweep)
