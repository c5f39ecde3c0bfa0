"""Property: for any generated workflow and a crash after any event, a second worker finishes the run with the
result and the history of a run that never crashed, and only the step attempts in flight at the crash ran twice
(DESIGN.md invariants 5 and 6). The harness and the generated programs are in ``crash_program``."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings

import durable
from history import MemoryStore, TimerFired

from . import crash_program as cp


@durable.workflow(name="crash_two_sleeps")
async def two_sleeps(ctx: durable.WorkflowContext) -> str:
    await ctx.sleep(0.05)
    await ctx.sleep(0.05)
    return "done"


def check_crash_changes_nothing(reference: cp.Execution, crashed: cp.Execution) -> None:
    """Everything a user can see of ``crashed`` equals ``reference``; its step bodies ran once each, plus one
    more time for exactly the attempts that had run but whose outcome was not committed at the crash."""
    assert crashed.crashed, "the crash point was never reached"
    assert cp.outcome(crashed.run) == cp.outcome(reference.run)
    assert [r.seq for r in crashed.history] == list(range(1, len(crashed.history) + 1))
    assert cp.normalized(crashed.history) == cp.normalized(reference.history)
    # Nothing the first worker committed was lost or rewritten.
    assert crashed.history[: len(crashed.history_at_crash)] == crashed.history_at_crash
    recorded_at_crash = cp.attempt_outcomes(crashed.run_id, crashed.history_at_crash)
    in_flight = set(crashed.executions_at_crash) - recorded_at_crash
    expected = {key: 1 + (key in in_flight) for key in cp.attempt_outcomes(crashed.run_id, crashed.history)}
    assert dict(crashed.executions) == expected


async def _all_crashes(ops: list[Any], backend_for: Any, limit: int | None = None) -> int:
    reference = await cp.execute(ops, backend_for(), run_id=f"ref-{uuid.uuid4().hex}")
    assert not reference.crashed
    assert dict(reference.executions) == dict.fromkeys(cp.attempt_outcomes(reference.run_id, reference.history), 1)
    points = cp.crash_points(reference.appends)
    assert points, "every run appends at least its final event"
    if limit is not None:
        points = points[:: max(1, len(points) // limit)][:limit]
    for crash_after, commit_first in points:
        crashed = await cp.execute(
            ops, backend_for(), run_id=f"crash-{uuid.uuid4().hex}", crash_after=crash_after, commit_first=commit_first
        )
        check_crash_changes_nothing(reference, crashed)
    return len(points)


@settings(max_examples=150, deadline=None)
@example(ops=[["sleep", 0.0], ["step", 1]])
@given(ops=cp.programs)
def test_a_crash_after_any_event_changes_nothing(ops: list[Any]) -> None:
    # Every crash point of the program: before and after the commit of each append the run makes.
    asyncio.run(_all_crashes(ops, cp.memory_backend))


def test_a_timer_that_fired_before_a_crash_is_not_fired_again() -> None:
    # Regression (replay used to re-arm timers that fired during the replay): the worker dies right after
    # committing TimerFired; the next worker replays the fired timer and runs the step, it does not fire the
    # timer a second time.
    ops = [["sleep", 0.0], ["step", 1]]

    async def scenario() -> None:
        reference = await cp.execute(ops, cp.memory_backend())
        fired = next(r.seq for r in reference.history if isinstance(r.event, TimerFired))
        crashed = await cp.execute(ops, cp.memory_backend(), crash_after=fired - 1, commit_first=True)
        assert any(isinstance(r.event, TimerFired) for r in crashed.history_at_crash)
        check_crash_changes_nothing(reference, crashed)

    asyncio.run(scenario())


async def test_a_second_long_sleep_does_not_fire_the_first_timer_again() -> None:
    # The same regression without any crash: with horizon 0 every sleep releases the run, so the third claim
    # replays a history with one fired timer (which it used to fire again).
    async with durable.Engine(store=MemoryStore(), horizon=0.0, poll_interval=0.05, workflows=[two_sleeps]) as engine:
        run = await engine.start(two_sleeps)
        assert await run.result(timeout=2) == "done"
        history = await engine.get_history(run.id)
    fired = [r.event.command_id for r in history if isinstance(r.event, TimerFired)]
    assert fired == [1, 2]


def test_the_harness_crashes_where_asked() -> None:
    # The property cannot pass by accident: a crash before the commit of the second append leaves exactly the
    # first append in the history, and the step attempt the dropped append recorded runs again.
    ops = [["step", 1], ["step", 2], ["step", 3]]

    async def scenario() -> None:
        reference = await cp.execute(ops, cp.memory_backend())
        assert reference.appends[:2] == [(2, 2), (4, 2)]  # one append per step: StepScheduled, StepCompleted
        crashed = await cp.execute(ops, cp.memory_backend(), crash_after=3, commit_first=False)
        assert len(crashed.history_at_crash) == 3
        assert crashed.executions[(crashed.run_id, 2, 1)] == 2
        assert sum(crashed.executions.values()) == 4
        check_crash_changes_nothing(reference, crashed)
        assert cp.outcome(crashed.run) == ("completed", b"[3,5,7]", None)

    asyncio.run(scenario())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crash.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=cp.small_programs)
def test_a_crash_changes_nothing_on_a_database(database_url: str, ops: list[Any]) -> None:
    # The same property through a real store: the crashed worker has its own connections, and its lease really
    # expires. The lease (1 s) is long enough that a busy database does not make a live worker lose it (then a
    # step could legitimately run twice without any crash); three crash points per program keep it quick. Every
    # example uses new run ids on the one database of the test.
    asyncio.run(_all_crashes(ops, lambda: cp.database_backend(database_url, lease_seconds=1.0), limit=3))
