"""Listing runs at a million: the time of each ``list_runs`` shape (first page and a deep page) and its plan.

Creates the database ``durable_bench_list`` on the local server (dropped first if it exists; never the ``test``
database), migrates it with the PostgreSQL store, fills ``durable_runs`` with generated runs in one
``INSERT … SELECT generate_series`` statement, runs ANALYZE, then for each query shape of
``engine.list_executions``:

  * times ``PostgresStore.list_runs`` (the statement of ``history._pg_listing``, the rows decoded into
    ``RunRecord``s, as a user gets them): median of several calls, first page and a deep page (a cursor taken
    halfway through the matching runs, capped at 200,000 rows in);
  * prints the plan's kind from ``EXPLAIN``: the index it reads, or SEQ SCAN (which should not appear).

    python benchmarks/bench_list.py [--runs 1000000] [--repeat 7] [--limit 50] [--url postgresql://…/postgres]
        [--keep] (leave the database for psql; otherwise it is dropped at the end)

The generated mix (fixed seed): 12 workflows with a skewed share (the first about 30%); the newest 2% unfinished
(1% running, 0.5% waiting, 0.5% pending), the others 95.5% completed, 3% failed, 0.7% cancelled, 0.8%
continued; queues 80% default and four others; 10% children of an earlier run; 20% with a dedup key
``order-<n>``; created over 30 days; run ids as in Durable (time first, then random), here 12 hex digits of
milliseconds and 14 random ones. No figure here is asserted anywhere; quote medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from history._listing import encode_cursor, run_query
from history._pg_listing import list_runs_args
from history._postgres import PostgresStore

DATABASE = "durable_bench_list"

WORKFLOWS = ["order_fulfilment", "send_email", "charge_card", "sync_inventory", "nightly_report", "onboard_user",
             "refund", "resize_image", "import_csv", "notify_slack", "close_account", "audit_export"]  # fmt: skip
STEPS = ["charge_card", "reserve_stock", "send_receipt", "fetch_page", "render_pdf", "call_api"]

def _run_id(i: str) -> str:
    """SQL of the id of run number ``i``: as Durable's ids, time first (here hex milliseconds), then random."""
    created = f"(now() - interval '30 days' + ({i} * interval '30 days') / $1)"
    return f"lpad(to_hex((extract(epoch FROM {created}) * 1000)::bigint), 12, '0') || substr(md5(({i})::text), 1, 14)"


# One statement: $1 the number of runs. Status by a uniform draw u: the thresholds give the shares above.
GENERATE = f"""
INSERT INTO durable_runs (id, workflow, status, input, result, created_at, updated_at, started_at, finished_at,
                          wake_at, next_seq, lease_owner, lease_epoch, lease_expires_at, queue, priority,
                          parent_id, dedup_key, current_step)
SELECT {_run_id("g.i")},
       (ARRAY{WORKFLOWS!r})[1 + floor(power(g.w, 2.2) * {len(WORKFLOWS)})::int],
       g.status, '{{}}'::bytea,
       CASE WHEN g.status = 'completed' THEN '1'::bytea END,
       g.created_at,
       coalesce(g.finished_at, g.started_at, g.created_at),
       g.started_at, g.finished_at,
       CASE WHEN g.status = 'waiting' THEN now() + interval '1 day' END,
       8,
       CASE WHEN g.status = 'running' THEN 'worker-1' END,
       CASE WHEN g.status = 'pending' THEN 0 ELSE 1 END,
       CASE WHEN g.status = 'running' THEN now() + interval '1 hour' END,
       CASE WHEN g.q < 0.80 THEN 'default' WHEN g.q < 0.90 THEN 'emails' WHEN g.q < 0.95 THEN 'billing'
            WHEN g.q < 0.99 THEN 'reports' ELSE 'bulk' END,
       0,
       -- one run in ten is a child; about five children per parent, an earlier run
       CASE WHEN g.i > 100 AND g.i % 10 = 3 THEN {_run_id("(g.i / 50 * 50)")} END,
       CASE WHEN g.i % 5 = 0 THEN 'order-' || g.i END,
       CASE WHEN g.status = 'running' THEN (ARRAY{STEPS!r})[1 + g.i % {len(STEPS)}]
            WHEN g.status = 'waiting' THEN CASE WHEN g.i % 2 = 0 THEN 'sleep' ELSE 'event:paid' END END
FROM (
    SELECT s.i, s.w, s.q, s.status, s.created_at,
           CASE WHEN s.status <> 'pending' THEN s.created_at + interval '40 ms' END AS started_at,
           CASE WHEN s.status IN ('completed', 'failed', 'cancelled', 'continued')
                THEN s.created_at + interval '40 ms' + s.took END AS finished_at
    FROM (
        SELECT i, random() AS w, random() AS q,
               -- unfinished runs are the newest 2%, as in a live system
               CASE WHEN i > $1 - $1 / 50 THEN
                        CASE WHEN u < 0.5 THEN 'running' WHEN u < 0.75 THEN 'waiting' ELSE 'pending' END
                    WHEN u < 0.955 THEN 'completed' WHEN u < 0.985 THEN 'failed' WHEN u < 0.992 THEN 'cancelled'
                    ELSE 'continued' END AS status,
               now() - interval '30 days' + (i * interval '30 days') / $1 AS created_at,
               make_interval(secs => 0.05 + random() * random() * 120) AS took
        FROM (SELECT i, random() AS u FROM generate_series(1, $1) AS i) AS draws
    ) AS s
) AS g"""


async def build(server: str, runs: int) -> str:
    """Create, migrate and fill the benchmark database; return its URL."""
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    url = urlunsplit(urlsplit(server)._replace(path=f"/{DATABASE}"))
    store = PostgresStore(url, listen=False)
    await store.open()  # the schema, every migration included
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.execute("SELECT setseed(0.42)")
        # The insert trigger would queue a NOTIFY per row; this database has no listener.
        await conn.execute("ALTER TABLE durable_runs DISABLE TRIGGER durable_runs_created")
        await conn.execute(GENERATE, runs)
        await conn.execute("ALTER TABLE durable_runs ENABLE TRIGGER durable_runs_created")
        filled = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE durable_runs")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('durable_runs'))")
        counts = await conn.fetch("SELECT status, count(*) FROM durable_runs GROUP BY 1 ORDER BY 2 DESC")
    finally:
        await conn.close()
    mix = ", ".join(f"{status} {count}" for status, count in counts)
    print(f"{runs} runs generated in {filled:.1f} s (table and indexes {size}); {mix}")
    return url


async def samples(url: str) -> dict[str, Any]:
    """Values that real filters would use: a parent with children, an id prefix, a dedup key, times."""
    conn = await asyncpg.connect(url)
    try:
        total = await conn.fetchval("SELECT count(*) FROM durable_runs")
        parent = await conn.fetchval("SELECT parent_id FROM durable_runs WHERE parent_id IS NOT NULL "
                                     "ORDER BY created_at DESC LIMIT 1 OFFSET $1", total // 200)  # fmt: skip
        some_id = await conn.fetchval("SELECT id FROM durable_runs ORDER BY created_at LIMIT 1 OFFSET $1",
                                      total // 8)  # fmt: skip
        key = await conn.fetchval("SELECT dedup_key FROM durable_runs WHERE dedup_key IS NOT NULL "
                                  "ORDER BY created_at LIMIT 1 OFFSET $1", total // 20)  # fmt: skip
        newest = await conn.fetchval("SELECT max(created_at) FROM durable_runs")
    finally:
        await conn.close()
    return {"parent": parent, "id_prefix": some_id[:10], "key": key, "newest": newest}


def shapes(s: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The query shapes measured: (label, list_runs arguments)."""
    day = s["newest"] - timedelta(days=10)
    return [
        ("everything, newest first", {}),
        ("workflow (the most common)", {"workflow": "order_fulfilment"}),
        ("workflow (the least common)", {"workflow": "audit_export"}),
        ("status failed", {"status": "failed"}),
        ("workflow + status failed", {"workflow": "send_email", "status": "failed"}),
        ("status running", {"status": "running"}),
        ("statuses pending/running/waiting", {"status": ["pending", "running", "waiting"]}),
        ("statuses failed/cancelled", {"status": ["failed", "cancelled"]}),
        ("current_step (running runs)", {"current_step": "charge_card"}),
        ("current_step sleep", {"current_step": "sleep"}),
        ("queue billing (5% of runs)", {"queue": "billing"}),
        ("queue bulk + status failed", {"queue": "bulk", "status": "failed"}),
        ("parent_id (children)", {"parent_id": s["parent"]}),
        ("search: run id prefix (10)", {"search": s["id_prefix"]}),
        ("search: dedup key", {"search": s["key"]}),
        ("search: short prefix 'order-1'", {"search": "order-1"}),
        ("started in the last hour", {"started_after": s["newest"] - timedelta(hours=1)}),
        ("started within one day, 10 days ago", {"started_after": day, "started_before": day + timedelta(days=1)}),
        ("workflow + day window", {"workflow": "refund", "started_after": day,
                                   "started_before": day + timedelta(days=1)}),
        ("order -started_at", {"order_by": "-started_at"}),
        ("order -finished_at", {"order_by": "-finished_at"}),
        ("order finished_at (oldest first)", {"order_by": "finished_at"}),
        ("status failed, order -finished_at", {"status": "failed", "order_by": "-finished_at"}),
        ("workflow (least common), -finished_at", {"workflow": "audit_export", "order_by": "-finished_at"}),
        ("order -updated_at (not indexed)", {"order_by": "-updated_at"}),
    ]  # fmt: skip


def plan_kind(plan: dict[str, Any]) -> str:
    """The scans of an EXPLAIN plan: index names read, SEQ SCAN, and a Sort when the rows are sorted."""
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node["Node Type"]
        if kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan"):
            found.append(f"{'bitmap ' if kind.startswith('Bitmap') else ''}{node['Index Name']}")
        elif kind == "Seq Scan":
            found.append(f"SEQ SCAN {node['Relation Name']}")
        elif kind in ("Sort", "Incremental Sort"):
            found.append(kind.lower())
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return ", ".join(dict.fromkeys(found))


async def deep_cursor(conn: Any, args: dict[str, Any], limit: int) -> str | None:
    """A cursor halfway through the runs matching ``args`` (at most 200,000 in), as a user reaches by paging."""
    query = run_query(limit=limit, **args)
    sql, params = list_runs_args(query)
    total = await conn.fetchval(f"SELECT count(*) FROM ({sql}) AS matching", 400_001, *params[1:])
    offset = min(total // 2, 200_000)
    if offset < limit:
        return None
    key, direction = query.order_key, "DESC" if query.descending else "ASC"
    row = await conn.fetchrow(
        f"SELECT {key}, id FROM ({sql}) AS m ORDER BY {key} {direction}, id {direction} OFFSET {offset} LIMIT 1",
        offset + 1, *params[1:],
    )  # fmt: skip
    return encode_cursor(query.order, row[0], row[1])


async def measure(url: str, repeat: int, limit: int) -> list[tuple[str, float, float | None, str, int]]:
    store = PostgresStore(url, listen=False, min_size=1, max_size=1)
    await store.open()
    conn = await asyncpg.connect(url)
    results = []
    try:
        for label, args in shapes(await samples(url)):
            sql, params = list_runs_args(run_query(limit=limit, **args))
            [plan] = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params))
            first: list[float] = []
            deep: list[float] = []
            cursor = await deep_cursor(conn, args, limit)
            count = 0
            for _ in range(repeat):
                started = time.perf_counter()
                page = await store.list_runs(limit=limit, **args)
                first.append((time.perf_counter() - started) * 1000)
                count = len(page.runs)
                if cursor is not None:
                    started = time.perf_counter()
                    await store.list_runs(limit=limit, cursor=cursor, **args)
                    deep.append((time.perf_counter() - started) * 1000)
            results.append((label, statistics.median(first), statistics.median(deep) if deep else None,
                            plan_kind(plan), count))  # fmt: skip
    finally:
        await conn.close()
        await store.close()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--url", default=os.environ.get("BENCH_POSTGRES_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--keep", action="store_true", help="leave the database for inspection")
    args = parser.parse_args()
    if urlsplit(args.url).path.strip("/") == "test":
        raise SystemExit("point --url at the server's maintenance database (postgres), not at the test database")
    url = await build(args.url, args.runs)
    try:
        results = await measure(url, args.repeat, args.limit)
    finally:
        if not args.keep:
            admin = await asyncpg.connect(args.url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
            finally:
                await admin.close()
    print(f"\nlist_runs, {args.limit} per page, median of {args.repeat} (ms; deep: a cursor halfway in, "
          f"at most 200,000 runs deep), at {datetime.now(UTC):%Y-%m-%d}:")
    print(f"{'shape':40} {'first':>7} {'deep':>7} {'rows':>5}  plan")
    for label, first, deep, plan, count in results:
        deep_text = f"{deep:7.2f}" if deep is not None else "      -"
        print(f"{label:40} {first:7.2f} {deep_text} {count:5}  {plan}")


if __name__ == "__main__":
    asyncio.run(main())
