"""A parent run that fans out N children (``asyncio.gather`` of ``ctx.call_workflow``) and waits for them all:
seconds from start to result, and children per second, on PostgreSQL (a fresh database per round) and SQLite.

Each child is one trivial step, so the figure is mostly the engine's own cost of creating, claiming, running and
reporting back N runs. Rounds alternate nothing (run it against two trees to compare); quote medians.

    python benchmarks/bench_fan_out.py [--children 500] [--rounds 3] [--url postgresql://…/server_db]

No figure here is asserted anywhere.
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


@durable.step(name="fan.double")
async def double(x: int) -> int:
    return 2 * x


@durable.workflow(name="fan.child")
async def child(ctx: durable.WorkflowContext, x: int) -> int:
    return await double(x)


@durable.workflow(name="fan.parent")
async def parent(ctx: durable.WorkflowContext, n: int) -> int:
    return sum(await asyncio.gather(*(ctx.call_workflow(child, i) for i in range(n))))


async def one_round(url: str, n: int) -> float:
    async with durable.Engine(url, workflows=[parent, child], concurrency=500) as engine:
        started = time.perf_counter()
        assert await (await engine.start(parent, n)).result(timeout=600) == n * (n - 1)
        return time.perf_counter() - started


async def postgres_round(server: str, n: int) -> float:
    name = f"bench_fan_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            return await one_round(server.rsplit("/", 1)[0] + f"/{name}", n)
        finally:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


async def main(n: int, rounds: int, server: str) -> None:
    for label in ("postgres", "sqlite"):
        times = []
        for _ in range(rounds):
            if label == "postgres":
                times.append(await postgres_round(server, n))
            else:
                with tempfile.TemporaryDirectory() as folder:
                    times.append(await one_round(f"sqlite:///{folder}/fan.db", n))
        median = statistics.median(times)
        print(f"{label}: a parent fanning out {n} children, start to result: median {median:.2f} s "
              f"({n / median:.0f} children/s; rounds {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", default=os.environ.get("BENCH_POSTGRES_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    asyncio.run(main(args.children, args.rounds, args.url))
