"""PostgreSQL's floor on this machine, from asyncpg: single-row INSERT, each its own transaction (one round trip,
one commit): median latency on one connection, and transactions/s on 1 and 4 connections (4 processes, so that
the client's CPU is not the limit).

    python -m benchmarks.pg_floor latency --url postgresql://.../fresh_db
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ._common import measurement_main, median, now, pct, python, spawn

TABLE = "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, v integer NOT NULL)"
INSERT = "INSERT INTO bench_floor (v) VALUES ($1)"


async def latency(url: str, n: int = 1000) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(TABLE)
        for i in range(50):
            await conn.execute(INSERT, i)
        times = []
        for i in range(n):
            started = now()
            await conn.execute(INSERT, i)
            times.append((now() - started) * 1000)
        select = []
        for _ in range(200):
            started = now()
            await conn.fetchval("SELECT 1")
            select.append((now() - started) * 1000)
    finally:
        await conn.close()
    return {"median_ms": median(times), "p95_ms": pct(times, 0.95), "n": n, "select1_ms": median(select)}


async def loop(url: str, seconds: float = 3.0, start_at: float = 0.0) -> dict[str, Any]:
    """One connection inserting for ``seconds`` from monotonic time ``start_at``; its count."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(INSERT, 0)
        while now() < start_at:
            await asyncio.sleep(0.001)
        end = now() + seconds
        count = 0
        while now() < end:
            await conn.execute(INSERT, count)
            count += 1
    finally:
        await conn.close()
    return {"count": count, "seconds": seconds}


async def rate(url: str, connections: int = 1, seconds: float = 3.0) -> dict[str, Any]:
    """Transactions/s over ``connections`` processes, each one connection, all starting together."""
    import asyncpg

    conn = await asyncpg.connect(url)
    await conn.execute(TABLE)
    await conn.close()
    start_at = now() + 1.5  # time for the processes to start and connect
    logs = [f"/tmp/durable-bench-floor-{i}-{time.time_ns()}.out" for i in range(connections)]
    procs = [spawn([python(), "-m", "benchmarks.pg_floor", "loop", "--url", url, "--params",
                    f'{{"seconds": {seconds}, "start_at": {start_at}}}'], log=log) for log in logs]
    total = 0
    for proc, log in zip(procs, logs, strict=True):
        await asyncio.to_thread(proc.wait, 60)
        with open(log) as f:
            for line in f:
                if line.startswith("BENCH-RESULT "):
                    import json

                    total += json.loads(line.split(" ", 1)[1])["count"]
    return {"tx_per_s": total / seconds, "connections": connections}


METRICS = {"latency": latency, "loop": loop, "rate": rate}

if __name__ == "__main__":
    measurement_main(METRICS)
