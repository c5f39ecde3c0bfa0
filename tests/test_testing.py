"""``durable.testing``: what a user testing their workflows sees — virtual time that skips, injected step
failures and mocks, and helpers that wait for a run's completion or failure."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

import durable
from durable.testing import RunBlocked, TestEngine, VirtualClock
from history import StepCompleted, StepFailed, TimerFired

START = datetime(2030, 1, 1, tzinfo=UTC)

# -- workflows under test -------------------------------------------------------------------------------------


@durable.step(retry=durable.Retry(max_attempts=3, backoff="constant", base=30.0))
async def charge_payment(order_id: str, amount: float) -> str:
    return f"charged {order_id} {amount}"


@durable.step
def send_email(to: str) -> str:
    raise AssertionError("the real email step must not run in these tests")


@durable.workflow(name="testing_reminder")
async def reminder(ctx: durable.WorkflowContext, days: float) -> list[str]:
    before = ctx.now()
    await ctx.sleep(timedelta(days=days))
    after = ctx.now()
    return [before.isoformat(), after.isoformat()]


@durable.workflow(name="testing_order")
async def order(ctx: durable.WorkflowContext, order_id: str) -> dict[str, str]:
    started = ctx.now()
    receipt = await charge_payment(order_id, 12.5)
    return {"receipt": receipt, "started": started.isoformat(), "ended": ctx.now().isoformat()}


@durable.workflow(name="testing_notify")
async def notify(ctx: durable.WorkflowContext, to: str) -> str:
    return await send_email(to)


@durable.workflow(name="testing_wall_clock")
async def reads_wall_clock(ctx: durable.WorkflowContext) -> float:
    return time.time()


@durable.workflow(name="testing_sleep_then_charge")
async def sleep_then_charge(ctx: durable.WorkflowContext, order_id: str) -> str:
    await ctx.sleep(timedelta(hours=1))
    return await charge_payment(order_id, 1.0)


EXECUTIONS: dict[str, int] = {}


@durable.workflow(name="testing_changes_on_replay")
async def changes_on_replay(ctx: durable.WorkflowContext, key: str) -> str:
    # Global state read in workflow code: a different branch on the replay after the sleep.
    EXECUTIONS[key] = EXECUTIONS.get(key, 0) + 1
    if EXECUTIONS[key] == 1:
        await charge_payment(key, 1.0)
    await ctx.sleep(timedelta(minutes=5))
    return "done"


# -- time skipping --------------------------------------------------------------------------------------------


@pytest.mark.timeout(5)
async def test_sleeping_two_days_completes_at_once_in_virtual_time() -> None:
    async with TestEngine(workflows=[reminder], start=START) as engine:
        before, after = await engine.run(reminder, 2)
        assert engine.now() >= START + timedelta(days=2)
    assert datetime.fromisoformat(before) == START
    assert datetime.fromisoformat(after) - datetime.fromisoformat(before) >= timedelta(days=2)


async def test_runs_wake_in_virtual_time_order_each_after_exactly_its_own_sleep() -> None:
    async with TestEngine(workflows=[reminder], start=START) as engine:
        runs = [await engine.start(reminder, days) for days in (3, 1, 2)]
        results = await asyncio.gather(*(engine.wait_completed(run) for run in runs))
        histories = [await engine.history(run) for run in runs]
    for days, (before, after) in zip((3, 1, 2), results, strict=True):
        assert datetime.fromisoformat(before) == START  # nothing skipped while the runs were ready
        assert datetime.fromisoformat(after) - datetime.fromisoformat(before) == timedelta(days=days)
    fired_at = [next(r.at for r in history if isinstance(r.event, TimerFired)) for history in histories]
    assert fired_at == [START + timedelta(days=d) for d in (3, 1, 2)]


async def test_a_delayed_start_runs_when_the_virtual_clock_reaches_it() -> None:
    async with TestEngine(workflows=[reminder], start=START) as engine:
        before, _ = await engine.run(reminder, 0, delay=timedelta(days=7))
    assert datetime.fromisoformat(before) == START + timedelta(days=7)


async def test_without_auto_skip_the_test_moves_the_clock() -> None:
    async with TestEngine(workflows=[reminder], start=START, auto_skip=False) as engine:
        run = await engine.start(reminder, 1 / 24)
        with pytest.raises(durable.ResultTimeout, match="auto_skip=False"):
            await engine.wait_completed(run, timeout=0.2)
        assert engine.now() == START
        await engine.advance(timedelta(minutes=59))
        with pytest.raises(durable.ResultTimeout):
            await engine.wait_completed(run, timeout=0.1)
        engine.clock.advance(timedelta(minutes=1))
        _, after = await engine.wait_completed(run)
    assert datetime.fromisoformat(after) == START + timedelta(hours=1)


def test_the_virtual_clock_only_moves_forward() -> None:
    clock = VirtualClock(START)
    assert clock() == START
    assert clock.advance(timedelta(seconds=90)) == START + timedelta(seconds=90)
    assert clock.advance_to(START) == START + timedelta(seconds=90)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        VirtualClock(datetime(2030, 1, 1))


@durable.workflow(name="testing_waits_forever")
async def waits_forever(ctx: durable.WorkflowContext) -> None:
    await asyncio.get_running_loop().create_future()  # nothing will ever resolve this


async def test_a_run_waiting_for_nothing_does_not_move_the_clock() -> None:
    async with TestEngine(workflows=[waits_forever, reminder], start=START) as engine:
        parked = await engine.start(waits_forever)
        with pytest.raises(durable.ResultTimeout):
            await engine.wait_completed(parked, timeout=0.2)
        assert engine.now() == START
        _, after = await engine.run(reminder, 1)
        assert datetime.fromisoformat(after) == engine.now() == START + timedelta(days=1)


# -- step failures and mocks ----------------------------------------------------------------------------------


async def test_fail_step_makes_retries_visible_in_the_history_and_skips_their_delays() -> None:
    async with TestEngine(workflows=[order], start=START) as engine:
        engine.fail_step("charge_payment", times=2, error=ConnectionError("boom"))
        run = await engine.start(order, "o-1")
        result = await engine.wait_completed(run)
        history = await engine.history(run)
        assert engine.step_attempts["charge_payment"] == 3
    assert result["receipt"] == "charged o-1 12.5"
    failures = [r for r in history if isinstance(r.event, StepFailed)]
    assert [(f.event.attempt, f.event.error.type, f.event.error.message) for f in failures] == [
        (1, "ConnectionError", "boom"),
        (2, "ConnectionError", "boom"),
    ]
    assert all(f.event.retry_at is not None for f in failures)
    (completed,) = [r for r in history if isinstance(r.event, StepCompleted)]
    assert completed.event.attempt == 3
    # Two 30 s backoffs, skipped: the workflow saw a minute pass.
    elapsed = datetime.fromisoformat(result["ended"]) - datetime.fromisoformat(result["started"])
    assert elapsed == timedelta(seconds=60)


async def test_wait_failed_returns_the_error_of_a_step_that_failed_for_good() -> None:
    async with TestEngine(workflows=[order], start=START) as engine:
        engine.fail_step("charge_payment", times=3, error=ConnectionError("card network down"))
        failed = await engine.wait_failed(await engine.start(order, "o-2"))
    assert isinstance(failed, durable.WorkflowFailed)
    assert failed.error_type == "durable.StepFailed"
    assert "'charge_payment' failed after 3 attempts: ConnectionError: card network down" in failed.error_message


async def test_wait_completed_raises_for_a_failed_run_and_wait_failed_for_a_completed_one() -> None:
    async with TestEngine(workflows=[order], start=START) as engine:
        engine.fail_step("charge_payment", times=3)
        with pytest.raises(durable.WorkflowFailed, match="injected failure of step 'charge_payment'"):
            await engine.run(order, "o-3")
        with pytest.raises(AssertionError, match="was expected to fail, but it ended completed"):
            await engine.wait_failed(await engine.start(order, "o-4"))


async def test_mock_step_replaces_the_body_and_its_result_is_recorded() -> None:
    async with TestEngine(workflows=[notify]) as engine:
        engine.mock_step("send_email", returns="queued")
        assert await engine.run(notify, "ada@example.com") == "queued"

        async def fake(to: str) -> str:
            return f"sent to {to}"

        engine.mock_step("send_email", call=fake)
        run = await engine.start(notify, "grace@example.com")
        assert await engine.wait_completed(run) == "sent to grace@example.com"
        history = await engine.history(run)
    assert [bytes(r.event.result) for r in history if isinstance(r.event, StepCompleted)] == [
        b'"sent to grace@example.com"'
    ]
    with pytest.raises(TypeError, match="either returns"):
        TestEngine().mock_step("send_email")


# -- what the test engine catches -----------------------------------------------------------------------------


async def test_the_determinism_guards_are_on_in_the_test_engine() -> None:
    async with TestEngine(workflows=[reads_wall_clock]) as engine:
        failed = await engine.wait_failed(await engine.start(reads_wall_clock))
    assert failed.error_type.endswith("WorkflowCodeError")
    assert "time.time() inside workflow 'testing_wall_clock'" in failed.error_message


async def test_code_that_changes_on_replay_is_reported_as_blocked() -> None:
    # Every wait replays the run from its history, so non-determinism the guards cannot see still shows.
    async with TestEngine(workflows=[changes_on_replay]) as engine:
        run = await engine.start(changes_on_replay, "k-1")
        with pytest.raises(RunBlocked, match="diverged from its history") as blocked:
            await engine.wait_completed(run)
    assert blocked.value.run_id == run.id


async def test_a_retry_after_a_sleep_completes() -> None:
    async with TestEngine(workflows=[sleep_then_charge], start=START, timeout=2.0) as engine:
        engine.fail_step("charge_payment", times=1)
        assert await engine.run(sleep_then_charge, "o-5") == "charged o-5 1.0"


@durable.step
async def _logs_and_returns(value: int) -> int:
    print(f"printed {value}")
    return value


@durable.workflow(name="testing_logged_sleeper")
async def _logged_sleeper(ctx: durable.WorkflowContext, value: int) -> int:
    ctx.logger.warning("before the sleep")
    await ctx.sleep(timedelta(hours=1))  # released and replayed: the warning must not be captured twice
    return await _logs_and_returns(value)


async def test_the_engine_s_observability_methods_are_on_the_test_engine() -> None:
    async with TestEngine(workflows=[_logged_sleeper]) as engine:
        run = await engine.start(_logged_sleeper, 7)
        assert await engine.wait_completed(run) == 7
        lines = [(line.step, line.attempt, line.message) for line in await engine.get_logs(run.id)]
        assert lines == [(None, None, "before the sleep"), ("_logs_and_returns", 1, "printed 7")]
        metrics = await engine.get_metrics("testing_logged_sleeper")
        assert (metrics.total, metrics.completed, metrics.avg_ms) == (1, 1, 3_600_000.0)  # the virtual hour
        assert [e.id for e in await engine.list_executions(workflow="testing_logged_sleeper")] == [run.id]
        with pytest.raises(AttributeError, match="no attribute 'get_logz'"):
            engine.get_logz  # noqa: B018
