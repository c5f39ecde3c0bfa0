"""Temporal's benchmark workflows and activities (a module of its own, light to import: Temporal's workflow
sandbox re-imports it for every workflow run)."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

from temporalio import activity, workflow

HANG = os.environ.get("BENCH_HANG") == "1"
HANG_FILE = os.environ.get("BENCH_HANG_FILE", "")
TIMEOUT = timedelta(seconds=30)


@activity.defn
async def noop(i: int) -> int:
    return i + 1


@activity.defn
async def mark() -> float:
    return time.perf_counter()


@activity.defn
async def maybe_hang(i: int) -> int:
    if HANG:
        with open(HANG_FILE, "a") as f:  # one byte per activity now hanging: the benchmark counts them
            f.write("x")
        await asyncio.sleep(3600)
    return i + 1


@workflow.defn(name="three_steps")
class ThreeSteps:
    @workflow.run
    async def run(self, x: int) -> int:
        for _ in range(3):
            x = await workflow.execute_activity(noop, x, start_to_close_timeout=TIMEOUT)
        return x


@workflow.defn(name="many_steps")
class ManySteps:
    @workflow.run
    async def run(self, n: int) -> int:
        x = 0
        for _ in range(n):
            x = await workflow.execute_activity(noop, x, start_to_close_timeout=TIMEOUT)
        return x


@workflow.defn(name="first_step")
class FirstStep:
    @workflow.run
    async def run(self) -> float:
        return await workflow.execute_activity(mark, start_to_close_timeout=TIMEOUT)


@workflow.defn(name="recovery_wf")
class RecoveryWf:
    @workflow.run
    async def run(self, x: int, lease: float) -> int:
        timeout = timedelta(seconds=lease)
        x = await workflow.execute_activity(noop, x, start_to_close_timeout=timeout)
        x = await workflow.execute_activity(maybe_hang, x, start_to_close_timeout=timeout)
        return await workflow.execute_activity(noop, x, start_to_close_timeout=timeout)


WORKFLOWS = [ThreeSteps, ManySteps, FirstStep, RecoveryWf]
ACTIVITIES = [noop, mark, maybe_hang]
