"""Waiting on the world, end to end on every store: events, inputs, children, state, cancellation, sagas,
whole-run timeouts and continue-as-new."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

import durable

from . import wf_world as wf


def _order() -> str:
    return uuid.uuid4().hex[:8]


async def _until(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _status(engine: durable.Engine, run_id: str) -> str:
    return (await engine.get_execution(run_id)).status


# -- external events --------------------------------------------------------------------------------------------


async def test_event_sent_before_the_wait_is_kept_and_a_filtered_one_stays_queued(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.waits_for_payment, "o-1", 30)
        await engine.send_event(run.id, "payment_confirmed", {"order_id": "other", "amount": 1})
        await engine.send_event(run.id, "payment_confirmed", {"order_id": "o-1", "amount": 42})
        assert await run.result(timeout=20) == {"paid": 42}
        history = await engine.get_history(run.id)
    received = [r.event for r in history if type(r.event).__name__ == "MessageReceived"]
    assert [json.loads(bytes(e.payload))["order_id"] for e in received] == ["other", "o-1"]


async def test_event_sent_while_the_run_waits_wakes_it(engine_url: str) -> None:
    async with durable.Engine(engine_url, horizon=0.1) as engine:
        run = await engine.start(wf.waits_for_payment, "o-2", 3600)
        await _until(lambda: _status_is(engine, run.id, "waiting"))
        await engine.send_event(run.id, "payment_confirmed", {"order_id": "o-2", "amount": 7})
        assert await run.result(timeout=20) == {"paid": 7}


async def _status_is(engine: durable.Engine, run_id: str, status: str) -> bool:
    return await _status(engine, run_id) == status


async def test_wait_timeout_raises_or_returns_the_default(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        timed_out = await engine.start(wf.waits_for_payment, "o-3", 0.2)
        with pytest.raises(durable.WorkflowFailed) as info:
            await timed_out.result(timeout=20)
        defaulted = await engine.start(wf.waits_with_default)
        assert await defaulted.result(timeout=20) == "gave up"
    assert info.value.error_type == "durable.WaitTimeout"


async def test_two_waits_in_parallel_each_get_their_event(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.event_loop_gather)
        await engine.send_event(run.id, "b", "B")
        await engine.send_event(run.id, "a", "A")
        assert await run.result(timeout=20) == ["A", "B"]


async def test_sending_to_unknown_or_finished_runs_is_a_clear_error(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        with pytest.raises(durable.RunNotFound, match="no run with id 'missing'"):
            await engine.send_event("missing", "x", {})
        run = await engine.start(wf.waits_with_default)
        await run.result(timeout=20)
        with pytest.raises(durable.RunAlreadyFinished, match="completed"):
            await engine.send_event(run.id, "never", 1)


# -- human input ------------------------------------------------------------------------------------------------


async def test_pending_input_is_listed_validated_answered_once(engine_url: str) -> None:
    async with durable.Engine(engine_url, horizon=0.1) as engine:
        run = await engine.start(wf.approval, 3600)
        await _until(lambda: _has_pending(engine, run.id))
        (pending,) = await engine.list_pending_inputs(run.id)
        assert (pending.key, pending.prompt) == ("manager_approval", "Approve order?")
        assert json.loads(pending.spec) == {"type": "single_choice", "choices": ["approve", "reject"]}
        with pytest.raises(durable.InputValidationError) as bad:
            await engine.provide_input(run.id, "manager_approval", "maybe")
        assert "must be one of ['approve', 'reject']" in str(bad.value)
        assert len(await engine.list_pending_inputs(run.id)) == 1  # still pending
        with pytest.raises(durable.InputNotPending, match="inputs this run waits for: 'manager_approval'"):
            await engine.provide_input(run.id, "nope", 1)
        await engine.provide_input(run.id, "manager_approval", "approve")
        with pytest.raises(durable.InputAlreadyProvided):
            await engine.provide_input(run.id, "manager_approval", "reject")
        assert await run.result(timeout=20) == "approve"
        execution = await engine.get_execution(run.id)
        assert execution.state == {"decision": "approve"}
        assert await engine.list_pending_inputs(run.id) == []
        with pytest.raises(durable.RunAlreadyFinished):
            await engine.provide_input(run.id, "manager_approval", "reject")


async def _has_pending(engine: durable.Engine, run_id: str) -> bool:
    return bool(await engine.list_pending_inputs(run_id))


async def test_form_input_errors_are_reported_field_by_field(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.laptop_form)
        await _until(lambda: _has_pending(engine, run.id))
        with pytest.raises(durable.InputValidationError) as bad:
            await engine.provide_input(run.id, "laptop", {"laptop": "amiga", "notes": "x" * 20, "color": "red"})
        assert bad.value.errors == {
            "color": "is not a field of this form",
            "laptop": "must be one of ['mac', 'thinkpad'], got 'amiga'",
            "notes": "must be at most 10 characters, got 20",
        }
        await engine.provide_input(run.id, "laptop", {"laptop": "mac"})
        assert await run.result(timeout=20) == {"laptop": "mac"}


async def test_the_same_input_asked_again_in_a_loop_takes_a_new_answer(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.asks_twice)
        for answer in ("first", "second"):
            await _until(lambda: _has_pending(engine, run.id))
            await engine.provide_input(run.id, "next", answer)
            if answer == "first":
                await _until(lambda: _prompt_is(engine, run.id, "round 1?"))
        assert await run.result(timeout=20) == ["first", "second"]


async def _prompt_is(engine: durable.Engine, run_id: str, prompt: str) -> bool:
    return any(p.prompt == prompt for p in await engine.list_pending_inputs(run_id))


async def test_input_timeout_returns_the_timeout_value(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.approval, 0.2)
        assert await run.result(timeout=20) == "auto_reject"
        assert await engine.list_pending_inputs(run.id) == []


# -- children ---------------------------------------------------------------------------------------------------


async def test_child_results_failures_and_links(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.parent)
        result = await run.result(timeout=30)
        execution = await engine.get_execution(run.id)
        started = await engine.get_handle(result["started"]).result(timeout=20)
        child = await engine.get_execution(execution.children[0])
    assert result["total"] == 5
    assert result["failure"] == ["ValueError", "the child broke"]
    assert started == 30
    assert len(execution.children) == 3 and result["started"] in execution.children
    assert child.parent_id == run.id


async def test_cancelling_a_parent_cancels_its_waiting_child(engine_url: str) -> None:
    async with durable.Engine(engine_url, horizon=0.1) as engine:
        run = await engine.start(wf.parent_of_sleeper)
        await _until(lambda: _has_children(engine, run.id))
        child_id = (await engine.get_execution(run.id)).children[0]
        await _until(lambda: _status_is(engine, child_id, "waiting"))
        await engine.cancel(run.id, reason="order withdrawn")
        with pytest.raises(durable.WorkflowCancelled):
            await run.result(timeout=20)
        with pytest.raises(durable.WorkflowCancelled) as child:
            await engine.get_handle(child_id).result(timeout=20)
    assert "order withdrawn" in child.value.reason


async def _has_children(engine: durable.Engine, run_id: str) -> bool:
    return bool((await engine.get_execution(run_id)).children)


# -- state, cancellation, sagas, timeouts, continue-as-new -------------------------------------------------------


async def test_state_is_visible_while_the_run_is_in_flight(engine_url: str) -> None:
    async with durable.Engine(engine_url, horizon=0.1) as engine:
        run = await engine.start(wf.publishes_state)
        await _until(lambda: _status_is(engine, run.id, "waiting"))
        assert (await engine.get_execution(run.id)).state == {"stage": "waiting", "progress": {"done": 1, "of": 2}}
        await engine.send_event(run.id, "go", "done")
        assert await run.result(timeout=20) == "done"


async def test_cancellation_reaches_the_code_which_may_clean_up_with_steps(engine_url: str) -> None:
    order = _order()
    async with durable.Engine(engine_url, horizon=0.1) as engine:
        run = await engine.start(wf.cleans_up, order)
        await _until(lambda: _status_is(engine, run.id, "waiting"))
        await engine.cancel(run.id, reason="customer asked")
        with pytest.raises(durable.WorkflowCancelled) as info:
            await run.result(timeout=20)
        execution = await engine.get_execution(run.id, include_steps=True)
    assert info.value.reason == "customer asked"
    assert [(s.name, s.result) for s in execution.steps] == [("note", "cleanup after: customer asked")]


async def test_a_failed_saga_runs_its_compensations_in_reverse_order(engine_url: str) -> None:
    order = _order()
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.saga, order)
        with pytest.raises(durable.WorkflowFailed, match="shipping failed"):
            await run.result(timeout=20)
        execution = await engine.get_execution(run.id, include_steps=True)
    assert [s.name for s in execution.steps] == ["charge", "charge", "explode", "refund", "refund"]
    assert [s.args for s in execution.steps if s.name == "refund"] == [[order, 20], [order, 10]]
    assert [line for line in wf.LEDGER if order in line] == [
        f"charge {order} 10", f"charge {order} 20", f"refund {order} 20", f"refund {order} 10",
    ]


async def test_a_cancelled_saga_compensates(engine_url: str) -> None:
    order = _order()
    async with durable.Engine(engine_url, horizon=0.1) as engine:
        run = await engine.start(wf.saga_cancelled, order)
        await _until(lambda: _status_is(engine, run.id, "waiting"))
        await engine.cancel(run.id)
        with pytest.raises(durable.WorkflowCancelled):
            await run.result(timeout=20)
    assert f"refund {order} 5" in wf.LEDGER


async def test_a_run_past_its_timeout_is_stopped_and_compensated(engine_url: str) -> None:
    order = _order()
    async with durable.Engine(engine_url, horizon=0.1) as engine:
        run = await engine.start(wf.slow_with_timeout, order)
        with pytest.raises(durable.WorkflowFailed) as info:
            await run.result(timeout=20)
    assert info.value.error_type == "durable.WorkflowTimeout"
    assert f"refund {order} 7" in wf.LEDGER


async def test_continue_as_new_chains_runs_and_result_follows_the_chain(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.counter, 0, 3, workflow_id=f"count-{_order()}")
        assert await run.result(timeout=30) == 3
        first = await engine.get_execution(run.id)
        last = await engine.get_execution(f"{run.id}~3")
        history = await engine.get_history(run.id)
    assert first.status == "continued" and first.continued_as == f"{run.id}~1"
    assert last.status == "completed" and last.continued_from == f"{run.id}~2"
    assert len(history) == 4  # started, step scheduled + completed, continued: bounded per run


async def test_a_wait_timeout_fires_after_a_worker_restart(engine_url: str) -> None:
    from history import MemoryStore

    shared = {"store": MemoryStore()} if engine_url == "memory://" else {"url": engine_url}
    async with durable.Engine(**shared, horizon=0.1) as first:
        run = await first.start(wf.waits_for_payment, "o-restart", 1.0)
        await _until(lambda: _status_is(first, run.id, "waiting"))
    await asyncio.sleep(1.2)  # the wait's timeout passes while no worker runs
    async with durable.Engine(**shared, poll_interval=60) as second:  # no poll could rescue it in time
        with pytest.raises(durable.WorkflowFailed) as info:
            await second.get_handle(run.id).result(timeout=20)
    assert info.value.error_type == "durable.WaitTimeout"


async def test_cancel_from_another_process_reaches_a_running_step_at_once(engine_url: str) -> None:
    if not engine_url.startswith("postgresql"):
        pytest.skip("only PostgreSQL notifies other processes; on SQLite the worker's next heartbeat tells it")
    # The worker's lease is 60 s, so its heartbeat (every 20 s) cannot be what tells it of the cancellation.
    async with (
        durable.Engine(engine_url, lease_seconds=60) as worker,
        durable.Engine(engine_url, worker=False) as client,
    ):
        run = await worker.start(wf.runs_long_step)
        await _until(lambda: _status_is(client, run.id, "running"))
        await asyncio.sleep(0.2)  # the step is running
        await client.cancel(run.id, reason="from another process")
        with pytest.raises(durable.WorkflowCancelled):
            await client.get_handle(run.id).result(timeout=8)
