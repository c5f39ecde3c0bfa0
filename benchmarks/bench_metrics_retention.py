"""Run metrics and retention on a generated table: how long ``engine.get_metrics`` takes over a day of runs among
many, and how fast ``engine.cleanup`` deletes old runs with their histories (and how long each batch holds its
locks). Prints figures; asserts nothing.

The runs are generated straight into the tables (PostgreSQL: ``generate_series``; SQLite: a recursive CTE), 5
events each, over 60 days: 1/60 of them in the last day, most finished, 5% failed, 1% still running.

    python benchmarks/bench_metrics_retention.py [--runs 200000] [--url postgresql://... | sqlite:///...]

Without ``--url`` it makes (and drops) a fresh PostgreSQL database ``bench_retain_*`` on ``BENCH_POSTGRES_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import durable
from benchmarks._common import fresh_database

_PG_FILL = """
INSERT INTO durable_runs (id, workflow, status, input, created_at, updated_at, started_at, finished_at, next_seq)
SELECT 'r' || i, 'wf' || (i % 5),
       CASE WHEN i % 100 = 0 THEN 'running' WHEN i % 20 = 0 THEN 'failed' ELSE 'completed' END,
       '1', t, t, t + interval '10 ms',
       CASE WHEN i % 100 = 0 THEN NULL ELSE t + (10 + i % 1000) * interval '1 ms' END, 6
FROM (SELECT i, now() - (i::float8 / $1) * interval '60 days' AS t FROM generate_series(1, $1) AS i) AS g;
INSERT INTO durable_events (run_id, seq, at, type, data)
SELECT 'r' || i, s, now(), 'step_completed', '{"type":"step_completed"}'
FROM generate_series(1, $1) AS i, generate_series(1, 5) AS s;
ANALYZE durable_runs; ANALYZE durable_events;
"""

_SQLITE_FILL = """
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?1)
INSERT INTO durable_runs (id, workflow, status, input, created_at, updated_at, started_at, finished_at, next_seq)
SELECT 'r' || i, 'wf' || (i % 5),
       CASE WHEN i % 100 = 0 THEN 'running' WHEN i % 20 = 0 THEN 'failed' ELSE 'completed' END,
       x'31', t, t, t + 10000, CASE WHEN i % 100 = 0 THEN NULL ELSE t + (10 + i % 1000) * 1000 END, 6
FROM (SELECT i, ?2 - CAST(i * 60.0 * 86400e6 / ?1 AS INTEGER) AS t FROM g)"""

_SQLITE_EVENTS = """
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?1),
               s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 5)
INSERT INTO durable_events (run_id, seq, at, type, data) SELECT 'r' || i, n, ?2, 'step_completed', x'7b7d' FROM g, s"""


async def fill(url: str, runs: int) -> None:
    if url.startswith("sqlite"):
        import sqlite3

        path = url.removeprefix("sqlite:///")
        now_us = time.time_ns() // 1000
        db = sqlite3.connect(path)
        with db:
            db.execute(_SQLITE_FILL, (runs, now_us))
            db.execute(_SQLITE_EVENTS, (runs, now_us))
        db.execute("ANALYZE")
        db.close()
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for statement in filter(str.strip, _PG_FILL.split(";")):
            await conn.execute(statement, runs) if "$1" in statement else await conn.execute(statement)
    finally:
        await conn.close()


async def timed(make: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await make()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def measure(url: str, runs: int) -> None:
    async with durable.Engine(url, worker=False) as engine:  # creates the schema
        pass
    start = time.perf_counter()
    await fill(url, runs)
    print(f"{runs:,} runs ({runs * 5:,} events) over 60 days generated in {time.perf_counter() - start:.1f} s")
    async with durable.Engine(url, worker=False) as engine:
        day = await engine.get_metrics(period="24h")
        print(f"last 24 h: {day.total:,} runs, success {day.success_rate:.1%}, p95 {day.p95_ms:.0f} ms")
        for label, call in (
            ("get_metrics(period='24h'), all workflows + breakdown", lambda: engine.get_metrics(period="24h")),
            ("get_metrics('wf1', period='24h')", lambda: engine.get_metrics("wf1", period="24h")),
            ("get_metrics(period='7d'), all workflows + breakdown", lambda: engine.get_metrics(period="7d")),
        ):
            print(f"{label}: median {await timed(call):.1f} ms")
        dry = await engine.cleanup(completed_older_than="30d", failed_older_than="30d", dry_run=True)
        print(f"cleanup dry run: {dry.describe()}")
        for size, age in ((1000, "40d"), (5000, "20d")):  # each deletes about a third of the runs
            t0 = time.perf_counter()
            report = await engine.cleanup(completed_older_than=age, failed_older_than=age, batch_size=size)
            elapsed = time.perf_counter() - t0
            print(f"cleanup older than {age}, batch_size={size}: {report.total:,} runs in {elapsed:.2f} s "
                  f"({report.total / elapsed:,.0f} runs/s, {report.total * 6 / elapsed:,.0f} rows/s), "
                  f"{report.batches} batches, {elapsed * 1000 / report.batches:.0f} ms per batch (one transaction)")
        print(f"after: get_metrics(period='24h') median {await timed(lambda: engine.get_metrics(period='24h')):.1f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--url", help="a database of its own (default: a fresh PostgreSQL database)")
    args = parser.parse_args()
    if args.url:
        await measure(args.url, args.runs)
        return
    async with fresh_database("retain") as url:
        await measure(url, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
