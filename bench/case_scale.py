"""Case 3, scale: the candidates query at 1k/10k/100k jobs, and a sweep's memory.

3a. ``Queries.candidates`` (the next batch of 500 a sweep picks) on SQLite and PostgreSQL,
    with the schema's indexes and, as the peer, with its secondary indexes dropped. The
    ledger holds a realistic mix: most jobs long deleted, some not due, some running, ~3%
    due, a few failed or held; 80% Daily, 20% another account. The plan is printed.
3b. ``sweep_provider`` on a listing of N jobs (first sighting, then the next sweep), in a
    child process: seconds and peak RSS. N = 0 is the floor (imports and clients).
3c. Walking every candidate of a ledger of N due jobs (``sweep._candidate_batches``).
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.servers import SimProcess, base_settings
from bench.util import MiB, Sample, describe, fmt_mib, python, run_measured, table, verdict

QUERY_TARGET = 0.100
PG_DB = "retention_bench"
SECONDARY_INDEXES = ("ix_jobs_open", "ix_jobs_provider_state_terminal", "ix_jobs_state")
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def _rows(n: int, *, all_due: bool, seed: int = 42) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        provider = "daily" if all_due or rng.random() < 0.8 else "loom"
        roll = 0.95 if all_due else rng.random()
        row: dict[str, Any] = {
            "provider": provider,
            "job_id": f"{provider}-{i:07d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}",
            "state": "pending",
            "tracked": False,
            "held": False,
            "first_seen_at": NOW - timedelta(days=40),
            "attempts": 0,
            "updated_at": NOW - timedelta(days=1),
            "terminal_at": None,
            "last_checked_at": NOW - timedelta(days=1),
            "provider_status": "finished",
            "phase": "succeeded",
            # Every row carries the same keys: one executemany, one statement.
            "deleted_at": None,
            "last_error": None,
        }
        if roll < 0.90:  # deleted long ago: the bulk of any ledger that has run for a while
            row.update(
                state="deleted",
                terminal_at=NOW - timedelta(days=rng.randint(60, 400)),
                deleted_at=NOW - timedelta(days=rng.randint(1, 50)),
            )
        elif roll < 0.94:  # terminal, not due yet
            row.update(terminal_at=NOW - timedelta(days=rng.random() * 6))
        elif roll < 0.96:  # running, read by this sweep's listing
            row.update(provider_status="processing", phase="running", last_checked_at=NOW)
        elif roll < 0.99:  # due
            row.update(terminal_at=NOW - timedelta(days=rng.randint(8, 30)))
        elif roll < 0.995:
            row.update(state="failed", last_error="permanent")
        else:  # held while due
            row.update(held=True, terminal_at=NOW - timedelta(days=20))
        rows.append(row)
    return rows


def _fill(url: str, rows: list[dict[str, Any]]) -> Any:
    import sqlalchemy as sa

    from worker.ledger import Ledger
    from worker.ledger.schema import jobs

    ledger = Ledger.open(url)
    with ledger.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(jobs.insert(), rows[start : start + 5000])
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    return ledger


def _pg_admin_url(base: str) -> str:
    return base


def _pg_fresh(admin_url: str) -> str | None:
    """Recreate the database retention_bench; its URL, or None when PostgreSQL is not there."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))
            conn.execute(sa.text(f"CREATE DATABASE {PG_DB}"))
        engine.dispose()
    except Exception as exc:
        print(f"PostgreSQL at {admin_url} is not usable ({type(exc).__name__}); skipped")
        return None
    return str(sa.make_url(admin_url).set(database=PG_DB).render_as_string(hide_password=False))


def _time_candidates(ledger: Any, repeat: int) -> tuple[Sample, float, int]:
    """First batch timed ``repeat`` times; then one full walk (seconds, candidates)."""
    sample = Sample()
    args = {
        "now": NOW,
        "due_cutoff": NOW - timedelta(days=7),
        "refreshed_since": NOW - timedelta(minutes=1),
    }
    ledger.query.candidates("daily", **args)  # warm the cache and the pool
    for _ in range(repeat):
        started = time.perf_counter()
        ledger.query.candidates("daily", **args)
        sample.add(time.perf_counter() - started)
    started = time.perf_counter()
    after, total = 0, 0
    while True:
        batch = ledger.query.candidates("daily", after_pk=after, limit=500, **args)
        if not batch:
            break
        total += len(batch)
        after = batch[-1].pk
    return sample, time.perf_counter() - started, total


def _plan(ledger: Any) -> str:
    """The database's plan for the candidates query, in one line."""
    import sqlalchemy as sa

    captured: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM jobs" in statement and "ORDER BY jobs.id" in statement:
            captured.append((statement, parameters))

    sa.event.listen(ledger.engine, "before_cursor_execute", grab)
    try:
        ledger.query.candidates(
            "daily",
            now=NOW,
            due_cutoff=NOW - timedelta(days=7),
            refreshed_since=NOW - timedelta(minutes=1),
        )
    finally:
        sa.event.remove(ledger.engine, "before_cursor_execute", grab)
    statement, parameters = captured[-1]
    raw = ledger.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if ledger.db.is_postgres:
            cursor.execute("EXPLAIN " + statement, parameters)
            lines = [r[0].strip() for r in cursor.fetchall()]
            keep = [ln for ln in lines if "Scan" in ln or "Sort" in ln or "Limit" in ln]
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            keep = [str(r[-1]) for r in cursor.fetchall()]
        cursor.close()
    finally:
        raw.close()
    return " / ".join(keep)


def _drop_indexes(ledger: Any) -> None:
    import sqlalchemy as sa

    with ledger.engine.begin() as conn:
        for name in SECONDARY_INDEXES:
            conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
        conn.execute(sa.text("ANALYZE"))


def query_case(options: Any, work: Path) -> dict[str, Any]:
    backends: list[tuple[str, str | None]] = [("sqlite", "sqlite")]
    if options.pg:
        backends.append(("postgresql", options.pg))
    rows_out, data = [], {}
    plans: list[str] = []
    repeat = max(5, options.repeat * 4)
    for name, admin in backends:
        for n in options.scale:
            if name == "sqlite":
                url = f"sqlite:///{work / f'query-{n}.db'}"
            else:
                assert admin is not None
                fresh = _pg_fresh(admin)
                if fresh is None:
                    break
                url = fresh
            rows = _rows(n, all_due=False)
            ledger = _fill(url, rows)
            try:
                indexed, walk_s, found = _time_candidates(ledger, repeat)
                plan = _plan(ledger)
                _drop_indexes(ledger)
                bare, bare_walk, _ = _time_candidates(ledger, repeat)
                bare_plan = _plan(ledger)
            finally:
                ledger.close()
            # The typical pick, as for any latency target; the range shows the outliers.
            ok = indexed.median < QUERY_TARGET
            rows_out.append(
                [
                    name,
                    f"{n:,}",
                    f"{found:,}",
                    describe(indexed),
                    describe(bare),
                    f"{walk_s * 1e3:.0f} ms / {bare_walk * 1e3:.0f} ms",
                    verdict(ok),
                ]
            )
            plans.append(f"- {name} {n:,}: with indexes: {plan}\n  without: {bare_plan}")
            data[f"{name}-{n}"] = {
                "indexed": indexed.as_dict(),
                "no_index": bare.as_dict(),
                "walk_seconds": walk_s,
                "walk_seconds_no_index": bare_walk,
                "candidates": found,
                "plan": plan,
                "plan_no_index": bare_plan,
                "ok": ok,
            }
    print(
        table(
            f"3a. Picking the next due batch (Queries.candidates, limit 500), n={repeat} each",
            [
                "ledger",
                "jobs",
                "due (daily)",
                "with indexes",
                "peer: secondary indexes dropped",
                "walk all batches (idx / none)",
                "< 100 ms",
            ],
            rows_out,
        )
    )
    print("\nquery plans:\n" + "\n".join(plans))
    return data


def _child(argv: list[str], work: Path) -> dict[str, Any]:
    result_path = work / f"scale-{uuid.uuid4().hex}.json"
    child = run_measured([python(), "-m", "bench.scale_child", *argv, "--result", str(result_path)])
    if child.code != 0 or not result_path.exists():
        raise RuntimeError(f"scale child failed ({child.code}): {child.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    result["maxrss"] = max(child.maxrss_bytes, result.get("vmhwm", 0))
    return result


def memory_case(options: Any, work: Path) -> dict[str, Any]:
    from bench.servers import S3Endpoint

    # Nothing is archived here: the S3 client is built but never called.
    unused = S3Endpoint("none", "http://127.0.0.1:9", 0, {}, True, False, lambda: None)
    sizes = [0, *options.scale]
    repeat = max(1, min(options.repeat, 3))
    first: dict[int, tuple[Sample, Sample]] = {n: (Sample(), Sample()) for n in sizes}
    again: dict[int, tuple[Sample, Sample]] = {n: (Sample(), Sample()) for n in sizes}
    with SimProcess() as sim:
        for n in sizes:
            sim.reset()
            if n:
                sim.add_jobs(n, outputs=False)
            for _ in range(repeat):
                run_id = uuid.uuid4().hex[:10]
                config = base_settings(
                    endpoint=unused,
                    bucket="bench-unused",
                    prefix="",
                    ledger_url=f"sqlite:///{work / run_id}.db",
                    sim=sim,
                    retain_days=30,
                )
                path = work / f"{run_id}.json"
                path.write_text(json.dumps(config))
                for target in (first, again):
                    result = _child(["discover", "--config", str(path)], work)
                    target[n][0].add(result["seconds"])
                    target[n][1].add(result["maxrss"])
                print(
                    f"  listing of {n:,}: first sweep {first[n][0].values[-1]:.1f} s, "
                    f"next {again[n][0].values[-1]:.1f} s",
                    flush=True,
                )
    floor = first[0][1].median
    rows = []
    for n in sizes:
        rows.append(
            [
                f"{n:,}",
                describe(first[n][0]),
                fmt_mib(first[n][1].high),
                describe(again[n][0]),
                fmt_mib(again[n][1].high),
                f"+{(max(first[n][1].high, again[n][1].high) - floor) / MiB:.0f} MiB",
            ]
        )
    print(
        table(
            f"3b. Sweep of a listing of N jobs (none due), n={repeat}: time and peak RSS",
            [
                "listed jobs",
                "first sweep (all new)",
                "peak RSS",
                "next sweep (all known)",
                "peak RSS",
                "over the N=0 floor",
            ],
            rows,
        )
    )
    walk_rows, walk_data = [], {}
    for n in options.scale:
        url = f"sqlite:///{work / f'walk-{n}.db'}"
        _fill(url, _rows(n, all_due=True)).close()
        seconds, rss = Sample(), Sample()
        for _ in range(repeat):
            result = _child(["walk", "--ledger", url], work)
            seconds.add(result["seconds"])
            rss.add(result["maxrss"])
        walk_rows.append(
            [f"{n:,}", f"{result['candidates']:,}", describe(seconds), fmt_mib(rss.high)]
        )
        walk_data[n] = {"seconds": seconds.as_dict(), "maxrss": rss.as_dict()}
    print(
        table(
            "3c. Walking every candidate of a ledger of N due jobs (batches of 500)",
            ["jobs", "candidates", "time", "peak RSS"],
            walk_rows,
        )
    )
    largest = max(options.scale)
    growth = max(first[largest][1].high, again[largest][1].high) - floor
    print(
        f"\nsweep peak RSS growth from 0 to {largest:,} listed jobs: {growth / MiB:.0f} MiB "
        f"(flat means a few MiB, not proportional to N)"
    )
    return {
        "discover_first": {
            n: {"seconds": s.as_dict(), "maxrss": r.as_dict()} for n, (s, r) in first.items()
        },
        "discover_next": {
            n: {"seconds": s.as_dict(), "maxrss": r.as_dict()} for n, (s, r) in again.items()
        },
        "walk": walk_data,
        "growth_bytes": growth,
    }


def run(options: Any) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        queries = query_case(options, work)
        memory = memory_case(options, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"queries": queries, "memory": memory}
