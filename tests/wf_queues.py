"""Workflows for the queue tests: they record when and in what order their bodies run."""

from __future__ import annotations

import asyncio
import time

import durable

ORDER: list[str] = []
ACTIVE: dict[str, int] = {"now": 0, "max": 0}


@durable.step
async def record(tag: str) -> str:
    ORDER.append(tag)
    return tag


@durable.step
async def busy(seconds: float) -> float:
    ACTIVE["now"] += 1
    ACTIVE["max"] = max(ACTIVE["max"], ACTIVE["now"])
    try:
        await asyncio.sleep(seconds)
    finally:
        ACTIVE["now"] -= 1
    return time.time()


@durable.workflow(name="q_record")
async def q_record(ctx: durable.WorkflowContext, tag: str) -> str:
    return await record(tag)


@durable.workflow(name="q_busy")
async def q_busy(ctx: durable.WorkflowContext, seconds: float) -> float:
    return await busy(seconds)
