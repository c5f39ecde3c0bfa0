"""Workflows for the live event stream tests (``test_subscribe.py``); a worker process serves them with
``python -m durable --database-url URL worker tests.wf_live``."""

from __future__ import annotations

import asyncio
import os

import durable


@durable.step(name="live.flaky", retry=durable.Retry(max_attempts=3, backoff="constant", base=0.01))
async def flaky(key: str) -> str:
    """Fails on its first attempt, succeeds on the second (a retry in the history)."""
    info = durable.current_step()
    assert info is not None
    if info.attempt == 1:
        raise RuntimeError(f"attempt 1 of {key} fails")
    return f"ok {key}"


@durable.step(name="live.gated")
async def gated(path: str) -> str:
    """Blocks until the file ``path`` exists: the test releases it once it has seen the step start."""
    while not os.path.exists(path):
        await asyncio.sleep(0.01)
    return "released"


@durable.step(name="live.add")
async def add(x: int, y: int) -> int:
    return x + y


@durable.workflow(name="live_child")
async def live_child(ctx: durable.WorkflowContext, x: int) -> int:
    return await add(x, 1)


@durable.workflow(name="live_tour")
async def live_tour(ctx: durable.WorkflowContext, gate: str) -> dict[str, object]:
    """A retried step, a timer, published state, a wait for an event, a child run, and a step that blocks until
    the test creates the file ``gate``."""
    first = await flaky("a")
    await ctx.sleep(0.05)
    ctx.set_state("phase", "waiting for go")
    go = await ctx.wait_for_event("go")
    child = await ctx.call_workflow(live_child, 41)
    released = await gated(gate)
    return {"first": first, "go": go, "child": child, "released": released}


@durable.workflow(name="live_steps")
async def live_steps(ctx: durable.WorkflowContext, n: int) -> int:
    """``n`` quick steps."""
    total = 0
    for i in range(n):
        total = await add(total, i)
    return total


@durable.workflow(name="live_other")
async def live_other(ctx: durable.WorkflowContext) -> int:
    """Another workflow (for workflow-filtered subscriptions)."""
    return await add(1, 1)


@durable.workflow(name="live_forever")
async def live_forever(ctx: durable.WorkflowContext, n: int) -> None:
    """Continues as new once (``n`` 0 then 1), then completes."""
    await add(n, 0)
    if n == 0:
        ctx.continue_as_new(n + 1)
