"""Workflows shared by the engine and replay tests."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import durable

ATTEMPTS: dict[str, int] = {}


@durable.step
async def add(a: int, b: int) -> int:
    return a + b


@durable.step
def multiply(a: int, b: int) -> int:  # a sync step: runs in a worker thread
    return a * b


@durable.step(retry=durable.Retry(max_attempts=4, backoff="constant", base=0.01))
async def flaky(key: str, failures: int) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] <= failures:
        raise ConnectionError(f"{key}: attempt {ATTEMPTS[key]} failed")
    return f"{key} ok after {ATTEMPTS[key]}"


@durable.step(retry=durable.Retry(max_attempts=5, backoff="constant", base=0.01))
async def refuses(reason: str) -> None:
    raise durable.NonRetryableError(reason)


@durable.step(timeout=0.05, retry=durable.Retry(max_attempts=1))
async def slow_step() -> str:
    await asyncio.sleep(5)
    return "never"


@durable.workflow(name="arith")
async def arith(ctx: durable.WorkflowContext, x: int) -> dict:
    s = await add(x, 1)
    p = await multiply(s, 2)
    pair = await asyncio.gather(add(p, 1), add(p, 2))
    return {"s": s, "p": p, "pair": pair}


@durable.workflow(name="sequence")
async def sequence(ctx: durable.WorkflowContext, n: int) -> int:
    total = 0
    for i in range(n):
        total = await add(total, i)
    return total


@durable.workflow(name="retrying")
async def retrying(ctx: durable.WorkflowContext, key: str, failures: int) -> str:
    return await flaky(key, failures)


@durable.workflow(name="catches")
async def catches(ctx: durable.WorkflowContext, reason: str) -> dict:
    try:
        await refuses(reason)
    except durable.StepFailed as exc:
        return {"caught": exc.error_type, "message": exc.error_message, "attempts": exc.attempts}
    return {"caught": None}


@durable.workflow(name="boom")
async def boom(ctx: durable.WorkflowContext) -> None:
    await add(1, 1)
    raise ValueError("the workflow itself failed")


@durable.workflow(name="times_out")
async def times_out(ctx: durable.WorkflowContext) -> str:
    return await slow_step()


@durable.workflow(name="sleeper")
async def sleeper(ctx: durable.WorkflowContext, seconds: float) -> str:
    before = ctx.now()
    await ctx.sleep(timedelta(seconds=seconds))
    after = ctx.now()
    return f"slept {(after - before).total_seconds():.3f}"


@durable.workflow(name="values")
async def values(ctx: durable.WorkflowContext) -> dict:
    return {"now": ctx.now().isoformat(), "uuid": str(ctx.uuid4()), "random": ctx.random()}


@durable.workflow(name="asyncio_timers")
async def asyncio_timers(ctx: durable.WorkflowContext) -> str:
    await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(ctx.sleep(60), timeout=0.02)
    except TimeoutError:
        return "timed out"
    return "slept"


@durable.workflow(name="returns_set")
async def returns_set(ctx: durable.WorkflowContext) -> object:
    return {1, 2, object()}


@durable.workflow(name="bad_step_argument")
async def bad_step_argument(ctx: durable.WorkflowContext) -> None:
    await add(object(), 1)  # type: ignore[arg-type]


@durable.workflow(name="waits_forever")
async def waits_forever(ctx: durable.WorkflowContext) -> None:
    await asyncio.get_running_loop().create_future()  # nothing will ever resolve this
