"""The engine end to end on every store: what a user of Engine.start / result / get_execution sees."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest

import durable
from history import MemoryStore

from . import wf_samples as wf


def _key() -> str:
    return uuid.uuid4().hex


async def test_workflow_runs_steps_sync_steps_and_parallel_steps(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.arith, 4)
        assert await run.result(timeout=20) == {"s": 5, "p": 10, "pair": [11, 12]}
        execution = await engine.get_execution(run.id, include_steps=True)
    assert execution.status == "completed"
    assert execution.input == [4]
    assert [(s.name, s.status, s.attempt) for s in execution.steps] == [
        ("add", "completed", 1),
        ("multiply", "completed", 1),
        ("add", "completed", 1),
        ("add", "completed", 1),
    ]
    assert [s.args for s in execution.steps] == [[4, 1], [5, 2], [10, 1], [10, 2]]
    assert all(s.duration_ms >= 0 for s in execution.steps)
    assert execution.finished_at is not None and execution.started_at is not None


async def test_each_step_costs_one_append_when_run_alone(engine_url: str) -> None:
    # One commit per step (DESIGN.md): StepScheduled and StepCompleted go out together, and the workflow's
    # reaction to the last result (its end) joins that step's append. Nothing else runs, so no group commit
    # merges anything.
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.sequence, 6)
        assert await run.result(timeout=20) == 15
        assert engine.worker is not None
        assert engine.worker._appender.items == 6
        history = await engine.get_history(run.id)
    assert [type(r.event).__name__ for r in history[:3]] == ["RunStarted", "StepScheduled", "StepCompleted"]
    assert [r.seq for r in history] == list(range(1, 6 * 2 + 3))


async def test_retries_until_success_and_records_each_failed_attempt(engine_url: str) -> None:
    key = _key()
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.retrying, key, 2)
        assert await run.result(timeout=20) == f"{key} ok after 3"
        execution = await engine.get_execution(run.id, include_steps=True)
        history = await engine.get_history(run.id)
    (step,) = execution.steps
    assert (step.name, step.status, step.attempt) == ("flaky", "completed", 3)
    failures = [r.event for r in history if type(r.event).__name__ == "StepFailed"]
    assert [(f.attempt, f.error.type, f.retry_at is not None) for f in failures] == [
        (1, "ConnectionError", True),
        (2, "ConnectionError", True),
    ]
    assert "attempt 1 failed" in failures[0].error.message
    assert "Traceback" in failures[0].error.traceback


async def test_exhausted_retries_fail_the_run_with_the_step_error(engine_url: str) -> None:
    key = _key()
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.retrying, key, 10)
        with pytest.raises(durable.WorkflowFailed) as info:
            await run.result(timeout=20)
        execution = await engine.get_execution(run.id, include_steps=True)
    assert wf.ATTEMPTS[key] == 4
    assert info.value.error_type == "durable.StepFailed"
    assert "'flaky' failed after 4 attempts" in str(info.value)
    assert execution.status == "failed"
    assert execution.steps[0].status == "failed"
    assert execution.error is not None and "Traceback" in execution.error.traceback


async def test_non_retryable_error_stops_retries_and_workflow_can_catch_it(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.catches, "card declined")
        result = await run.result(timeout=20)
    assert result == {"caught": "durable.NonRetryableError", "message": "card declined", "attempts": 1}


async def test_workflow_exception_fails_the_run_with_its_traceback(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.boom)
        with pytest.raises(durable.WorkflowFailed) as info:
            await run.result(timeout=20)
    assert info.value.error_type == "ValueError"
    assert info.value.error_message == "the workflow itself failed"
    assert "wf_samples.py" in info.value.remote_traceback


async def test_step_timeout_fails_the_attempt(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.times_out)
        with pytest.raises(durable.WorkflowFailed) as info:
            await run.result(timeout=20)
    assert "timed out after 0.05s" in str(info.value)


async def test_duplicate_workflow_id_returns_the_existing_run(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        first = await engine.start(wf.sequence, 3, workflow_id="order-42")
        second = await engine.start(wf.sequence, 3, workflow_id="order-42")
        assert (first.id, first.created) == ("order-42", True)
        assert (second.id, second.created) == ("order-42", False)
        assert await second.result(timeout=20) == 3
        page = await engine.list_executions(workflow="sequence")
    assert [e.id for e in page] == ["order-42"]


async def test_recorded_values_and_asyncio_timers_inside_workflows(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        values = await (await engine.start(wf.values)).result(timeout=20)
        timers = await (await engine.start(wf.asyncio_timers)).result(timeout=20)
    assert datetime.fromisoformat(values["now"]).tzinfo is not None
    assert uuid.UUID(values["uuid"]).version == 4
    assert 0 <= values["random"] < 1
    assert timers == "timed out"


def slept_seconds(result: str) -> float:
    """The seconds `wf.sleeper` measured between its two ctx.now() calls ("slept 1.004" -> 1.004)."""
    word, seconds = result.split()
    assert word == "slept"
    return float(seconds)


async def parked(engine: durable.Engine, run_id: str, timeout: float = 20.0) -> durable.Execution:
    """The run once it is released, waiting, and no longer driven by the engine's worker (each is a moment after
    the last on a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        execution = await engine.get_execution(run_id)
        held = engine.worker is not None and run_id in engine.worker._drivers
        if (execution.status == "waiting" and not held) or time.monotonic() > deadline:
            return execution
        await asyncio.sleep(0.01)


async def test_long_sleep_releases_the_run_and_holds_no_worker_memory(engine_url: str) -> None:
    async with durable.Engine(engine_url, horizon=0.2) as engine:
        run = await engine.start(wf.sleeper, 2.0)
        execution = await parked(engine, run.id)
        assert execution.status == "waiting"
        assert execution.wake_at is not None and execution.wake_at > datetime.now(UTC)
        assert engine.worker is not None and run.id not in engine.worker._drivers
        # ctx.now() after the sleep is the real firing time: never early, late by however busy the machine is.
        assert slept_seconds(await run.result(timeout=20)) >= 2.0


async def test_cancel_a_sleeping_run(engine_url: str) -> None:
    async with durable.Engine(engine_url, horizon=0.1) as engine:
        run = await engine.start(wf.sleeper, 3600)
        assert (await parked(engine, run.id)).status == "waiting"
        await engine.cancel(run.id, reason="customer changed their mind")
        with pytest.raises(durable.WorkflowCancelled) as info:
            await run.result(timeout=20)
        execution = await engine.get_execution(run.id)
        history = await engine.get_history(run.id)
    assert info.value.reason == "customer changed their mind"
    assert execution.status == "cancelled"
    assert type(history[-1].event).__name__ == "RunCancelled"


async def test_a_run_waiting_for_nothing_is_parked_not_replayed_in_a_loop(engine_url: str) -> None:
    async with durable.Engine(engine_url, poll_interval=0.05) as engine:
        run = await engine.start(wf.waits_forever)
        execution = await parked(engine, run.id)
        assert execution.status == "waiting" and execution.wake_at is not None and execution.wake_at.year == 9999
        assert engine.worker is not None and engine.worker.active_runs == 0
        await engine.cancel(run.id, reason="stop waiting")
        with pytest.raises(durable.WorkflowCancelled):
            await run.result(timeout=20)


async def test_list_executions_filters_and_pages(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        runs = [await engine.start(wf.sequence, i) for i in range(5)]
        for run in runs:
            await run.result(timeout=20)
        failed = await engine.start(wf.boom)
        with pytest.raises(durable.WorkflowFailed):
            await failed.result(timeout=20)
        first = await engine.list_executions(workflow="sequence", limit=2)
        second = await engine.list_executions(workflow="sequence", limit=2, cursor=first.next_cursor)
        third = await engine.list_executions(workflow="sequence", limit=2, cursor=second.next_cursor)
        only_failed = await engine.list_executions(status="failed")
    listed = [e.id for e in [*first, *second, *third]]
    assert sorted(listed) == sorted(r.id for r in runs) and len(set(listed)) == 5
    assert third.next_cursor is None
    assert [e.id for e in only_failed] == [failed.id]


async def test_bad_input_is_refused_before_anything_is_stored(engine_url: str) -> None:
    async with durable.Engine(engine_url, worker=False) as engine:
        with pytest.raises(durable.PayloadError, match=r"input of workflow 'sequence'.*type object"):
            await engine.start(wf.sequence, object())
        with pytest.raises(TypeError, match="workflow 'sequence' takes"):
            await engine.start(wf.sequence, 1, 2)
        with pytest.raises(durable.UnknownWorkflowError, match="no workflow is registered as 'nope'"):
            await engine.start("nope")
        with pytest.raises(durable.RunNotFound, match="no run with id 'missing'"):
            await engine.get_execution("missing")
        with pytest.raises(ValueError, match="unknown status"):
            await engine.list_executions(status="exploded")
        assert len(await engine.list_executions()) == 0


async def test_unserializable_step_argument_or_result_fails_clearly(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.returns_set)
        with pytest.raises(durable.WorkflowFailed) as info:
            await run.result(timeout=20)
    assert info.value.error_type == "durable.PayloadError"
    assert "result of workflow 'returns_set'" in info.value.error_message
    assert "type object" in info.value.error_message


async def test_unserializable_step_argument_fails_the_run_naming_the_step(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(wf.bad_step_argument)
        with pytest.raises(durable.WorkflowFailed) as info:
            await run.result(timeout=20)
        history = await engine.get_history(run.id)
    assert "the arguments of step 'add' cannot be stored" in info.value.error_message
    assert "type object" in info.value.error_message
    assert [type(r.event).__name__ for r in history] == ["RunStarted", "RunFailed"]


async def test_result_timeout_leaves_the_run_going() -> None:
    async with durable.Engine(store=MemoryStore(), horizon=0.1) as engine:
        run = await engine.start(wf.sleeper, 0.6)
        with pytest.raises(durable.ResultTimeout, match=r"did not finish within 0\.1s"):
            await run.result(timeout=0.1)
        assert slept_seconds(await run.result(timeout=10)) >= 0.6


async def test_a_restarted_engine_fires_an_overdue_timer_at_once() -> None:
    store = MemoryStore()
    async with durable.Engine(store=store, horizon=0.1) as engine:
        run = await engine.start(wf.sleeper, 1.0)
        execution = await parked(engine, run.id)
        assert execution.status == "waiting" and execution.wake_at is not None
    await asyncio.sleep(max(0.0, (execution.wake_at - datetime.now(UTC)).total_seconds()) + 0.3)  # due, no worker
    # A fallback poll of a minute: only the worker's start-up claim can finish the run within the timeout.
    async with durable.Engine(store=store, horizon=0.1, poll_interval=60) as engine:
        slept = await engine.get_handle(run.id).result(timeout=10)
    assert slept_seconds(slept) >= 1.3  # ctx.now() after the sleep is the real (late) firing time


async def test_a_dead_workers_run_is_taken_over_when_its_lease_expires_not_a_poll_later(engine_url: str) -> None:
    shared = {"store": MemoryStore()} if engine_url == "memory://" else {"url": engine_url}
    async with durable.Engine(**shared, worker=False) as client:
        run = await client.start(wf.sequence, 3)
        # A worker claims the run and dies at once: its lease (1 s) is never renewed and never released.
        [claim] = await client.store.claim("dead-worker", ["sequence"], 1, 1.0)
        assert claim.run.id == run.id
    # With a fallback poll of a minute, only the lease expiry as a known wake time lets a worker finish in time.
    async with durable.Engine(**shared, poll_interval=60) as engine:
        assert await engine.get_handle(run.id).result(timeout=20) == 3
        execution = await engine.get_execution(run.id)
    assert execution.worker is None and execution.status == "completed"
