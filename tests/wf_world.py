"""Workflows that wait on the world: events, inputs, children, state, cancellation, sagas, continue-as-new."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import durable

LEDGER: list[str] = []


@durable.step
async def note(text: str) -> str:
    LEDGER.append(text)
    return text


@durable.step
async def refund(order: str, amount: int) -> str:
    LEDGER.append(f"refund {order} {amount}")
    return "refunded"


@durable.step(compensate=refund)
async def charge(order: str, amount: int) -> str:
    LEDGER.append(f"charge {order} {amount}")
    return f"ch-{order}-{amount}"


@durable.step(retry=durable.Retry(max_attempts=1))
async def explode(order: str) -> None:
    raise RuntimeError(f"shipping failed for {order}")


@durable.workflow(name="waits_for_payment")
async def waits_for_payment(ctx: durable.WorkflowContext, order_id: str, timeout: float) -> dict:
    payment = await ctx.wait_for_event(
        "payment_confirmed", timeout=timeout, filter=lambda e: e["order_id"] == order_id
    )
    return {"paid": payment["amount"]}


@durable.workflow(name="waits_with_default")
async def waits_with_default(ctx: durable.WorkflowContext) -> object:
    return await ctx.wait_for_event("never", timeout=0.2, default="gave up")


@durable.workflow(name="approval")
async def approval(ctx: durable.WorkflowContext, timeout: float) -> object:
    decision = await ctx.wait_for_input(
        "manager_approval",
        prompt="Approve order?",
        type="single_choice",
        choices=["approve", "reject"],
        timeout=timedelta(seconds=timeout),
        timeout_value="auto_reject",
    )
    ctx.set_state("decision", decision)
    return decision


@durable.workflow(name="laptop_form")
async def laptop_form(ctx: durable.WorkflowContext) -> object:
    return await ctx.wait_for_input(
        "laptop",
        prompt="Which laptop?",
        type="form",
        fields=[
            {"name": "laptop", "type": "select", "options": ["mac", "thinkpad"], "required": True},
            {"name": "notes", "type": "text", "max_length": 10},
        ],
    )


@durable.workflow(name="child_adds")
async def child_adds(ctx: durable.WorkflowContext, a: int, b: int) -> int:
    await note(f"child {a}+{b}")
    return a + b


@durable.workflow(name="child_fails")
async def child_fails(ctx: durable.WorkflowContext) -> None:
    raise ValueError("the child broke")


@durable.workflow(name="child_sleeps")
async def child_sleeps(ctx: durable.WorkflowContext) -> str:
    await ctx.sleep(3600)
    return "woke"


@durable.workflow(name="parent")
async def parent(ctx: durable.WorkflowContext) -> dict:
    total = await ctx.call_workflow(child_adds, 2, 3)
    handle = await ctx.start_workflow(child_adds, 10, 20)
    try:
        await ctx.call_workflow(child_fails)
    except durable.ChildWorkflowFailed as exc:
        failure = [exc.error_type, exc.error_message]
    return {"total": total, "started": handle.id, "failure": failure}


@durable.workflow(name="parent_of_sleeper")
async def parent_of_sleeper(ctx: durable.WorkflowContext) -> str:
    return await ctx.call_workflow(child_sleeps)


@durable.workflow(name="publishes_state")
async def publishes_state(ctx: durable.WorkflowContext) -> str:
    ctx.set_state("stage", "charging")
    await note("charged")
    ctx.set_state("stage", "waiting")
    ctx.set_state("progress", {"done": 1, "of": 2})
    return await ctx.wait_for_event("go")


@durable.workflow(name="cleans_up")
async def cleans_up(ctx: durable.WorkflowContext, order: str) -> str:
    try:
        await ctx.sleep(3600)
    except durable.Cancelled:
        await note(f"cleanup after: {ctx.cancel_reason}")
        raise
    return "slept"


@durable.workflow(name="saga")
async def saga(ctx: durable.WorkflowContext, order: str) -> None:
    await charge(order, 10)
    await charge(order, 20)
    await explode(order)


@durable.workflow(name="saga_cancelled")
async def saga_cancelled(ctx: durable.WorkflowContext, order: str) -> None:
    await charge(order, 5)
    await ctx.sleep(3600)


@durable.workflow(name="slow_with_timeout", timeout=timedelta(seconds=0.5))
async def slow_with_timeout(ctx: durable.WorkflowContext, order: str) -> str:
    await charge(order, 7)
    await ctx.sleep(3600)
    return "never"


@durable.workflow(name="counter")
async def counter(ctx: durable.WorkflowContext, n: int, upto: int) -> int:
    await note(f"count {n}")
    if n < upto:
        ctx.continue_as_new(n + 1, upto)
    return n


@durable.workflow(name="event_loop_gather")
async def event_loop_gather(ctx: durable.WorkflowContext) -> list:
    return list(await asyncio.gather(ctx.wait_for_event("a"), ctx.wait_for_event("b")))


@durable.workflow(name="asks_twice")
async def asks_twice(ctx: durable.WorkflowContext) -> list:
    answers = []
    for round_ in range(2):
        answers.append(await ctx.wait_for_input("next", prompt=f"round {round_}?"))
    return answers


@durable.step
async def long_step(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@durable.workflow(name="runs_long_step")
async def runs_long_step(ctx: durable.WorkflowContext) -> str:
    return await long_step(30)
