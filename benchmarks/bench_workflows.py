"""Durable's benchmark workflows, importable by worker processes:
``python -m durable worker benchmarks.bench_workflows --database-url URL``.

``BENCH_HANG=1`` in a worker's environment makes ``maybe_hang`` block forever there: the recovery benchmark
kills that worker with every run stuck in its second step, and a second worker (without it) finishes them.
"""

from __future__ import annotations

import asyncio
import os
import time

import durable

HANG = os.environ.get("BENCH_HANG") == "1"


@durable.step
async def noop(i: int) -> int:
    return i + 1


@durable.step
async def mark() -> float:
    """When the step body ran (CLOCK_MONOTONIC, comparable across processes of this machine)."""
    return time.perf_counter()


@durable.step
async def maybe_hang(i: int) -> int:
    if HANG:
        await asyncio.sleep(3600)
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


@durable.workflow(name="bench_first_step")
async def first_step(ctx: durable.WorkflowContext) -> float:
    return await mark()


@durable.workflow(name="bench_recovery")
async def recovery(ctx: durable.WorkflowContext, x: int) -> int:
    x = await noop(x)
    x = await maybe_hang(x)
    return await noop(x)
