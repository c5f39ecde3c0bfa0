"""Core engine figures on one machine: per-step latency and throughput, beside PostgreSQL's own floor.

Prints, for each database given (default: the local PostgreSQL and a SQLite file):
  * the floor: median single-row INSERT+COMMIT from asyncpg (Postgres only);
  * a 3-step workflow of trivial async steps, started and awaited one at a time: median and p95 ms;
  * ms per step from a 100-step workflow (median of several runs);
  * throughput: N 3-step workflows started at once, workflows/s and steps/s until all complete, started with N
    ``engine.start`` calls one after another, with N concurrent ``engine.start`` calls (``asyncio.gather``: a
    web server's requests), and with one ``engine.start_many`` (and the rate of the starting alone, each way).

    python benchmarks/bench_core.py [--runs 200] [--burst 2000] [--url postgresql://...]

Each Postgres measurement uses a fresh database. No figure here is asserted anywhere; quote medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

import durable


@durable.step
async def noop(i: int) -> int:
    return i + 1


@durable.workflow(name="bench_three_steps")
async def three_steps(ctx: durable.WorkflowContext, x: int) -> int:
    x = await noop(x)
    x = await noop(x)
    return await noop(x)


@durable.workflow(name="bench_many_steps")
async def many_steps(ctx: durable.WorkflowContext, n: int) -> int:
    x = 0
    for _ in range(n):
        x = await noop(x)
    return x


async def fresh_postgres(base: str) -> str:
    name = f"durable_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(base)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return base.rsplit("/", 1)[0] + "/" + name


async def drop_postgres(url: str) -> None:
    base, name = url.rsplit("/", 1)
    conn = await asyncpg.connect(base + "/postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def postgres_floor(url: str, n: int = 500) -> float:
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigserial primary key, v int)")
    times = []
    for i in range(n):
        started = time.perf_counter()
        await conn.execute("INSERT INTO bench_floor (v) VALUES ($1)", i)
        times.append(time.perf_counter() - started)
    await conn.close()
    return statistics.median(times) * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sequential(url: str, runs: int) -> tuple[float, float, float]:
    async with durable.Engine(url) as engine:
        for i in range(10):  # warm up: connections, prepared statements
            await (await engine.start(three_steps, i)).result(timeout=30)
        times = []
        for i in range(runs):
            started = time.perf_counter()
            await (await engine.start(three_steps, i)).result(timeout=30)
            times.append((time.perf_counter() - started) * 1000)
        per_step = []
        for _ in range(5):
            started = time.perf_counter()
            await (await engine.start(many_steps, 100)).result(timeout=60)
            per_step.append((time.perf_counter() - started) * 1000 / 100)
    return statistics.median(times), pct(times, 0.95), statistics.median(per_step)


HOW = {"one by one": "x start, one by one", "concurrent": "x start, concurrently", "many": "start_many"}
"""The ways ``burst`` starts its runs, and how the output names them."""


async def burst(url: str, count: int, how: str) -> tuple[float, float]:
    """Start ``count`` workflows (``start`` each, awaited in turn or all at once, or one ``start_many``) and
    await them all: the rate of the starting alone, and workflows/s from the first start to the last result."""
    async with durable.Engine(url, concurrency=500) as engine:
        await (await engine.start(three_steps, 0)).result(timeout=30)
        started = time.perf_counter()
        if how == "many":
            handles = await engine.start_many(three_steps, [(i,) for i in range(count)])
        elif how == "concurrent":
            handles = list(await asyncio.gather(*(engine.start(three_steps, i) for i in range(count))))
        else:
            handles = [await engine.start(three_steps, i) for i in range(count)]
        starting = time.perf_counter() - started
        for handle in handles:
            await handle.result(timeout=600)
        return count / starting, count / (time.perf_counter() - started)


async def bursts(url: str, count: int, is_postgres: bool) -> dict[str, tuple[float, float]]:
    """``burst`` each way (``HOW``), each on a fresh database."""
    rates = {}
    for how in HOW:
        if is_postgres:
            db = await fresh_postgres(url)
            try:
                rates[how] = await burst(db, count, how)
            finally:
                await drop_postgres(db)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                rates[how] = await burst(f"sqlite:///{tmp}/b.db", count, how)
    return rates


async def measure(url: str, label: str, runs: int, count: int, is_postgres: bool) -> None:
    if is_postgres:
        db = await fresh_postgres(url)
        try:
            floor = await postgres_floor(db)
            med, p95, step = await sequential(db, runs)
        finally:
            await drop_postgres(db)
        print(f"{label}: INSERT+COMMIT floor median {floor:.3f} ms")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            med, p95, step = await sequential(f"sqlite:///{tmp}/a.db", runs)
        floor = None
    rates = await bursts(url, count, is_postgres)
    print(f"{label}: 3-step workflow, one at a time: median {med:.2f} ms, p95 {p95:.2f} ms ({runs} runs)")
    ratio = f" = {step / floor:.1f}x one commit" if floor else ""
    print(f"{label}: per step (100-step workflow): {step:.3f} ms{ratio}")
    for how, name in HOW.items():
        starts, rate = rates[how]
        print(
            f"{label}: {count} 3-step workflows at once ({name}): {rate:.0f} workflows/s, {rate * 3:.0f} steps/s "
            f"(starting alone: {starts:.0f} runs/s)"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--url", default=os.environ.get("DURABLE_TEST_POSTGRES_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    await measure(args.url, "postgres", args.runs, args.burst, True)
    if not args.skip_sqlite:
        await measure("sqlite", "sqlite", args.runs, args.burst, False)


if __name__ == "__main__":
    asyncio.run(main())
