"""A saga's compensations under a crash (issue #4): a worker SIGKILLed in the middle of the compensations.

``crash_app.crash_saga`` charges three times (each charge with a refund as its compensation), then a step fails
for good, so the refunds run, most recent first: refund 3, refund 2, refund 1. The worker dies in refund 2, right
after its side effect and before its result is recorded ("after"), or when refund 3 is recorded and refund 2 has
done nothing yet ("before"); the restarted worker takes the run over once the lease expired and finishes it.

What a user is promised: the run still fails with the original error; each refund is recorded exactly once, in
reverse order of the charges; no charge runs again (their results were recorded, so replay does not redo them);
only the compensation in flight at the kill runs twice (after), or nothing does (before).
"""

from __future__ import annotations

import collections
import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import durable
from history import RunFailed, StepCompleted, StepFailed, StepScheduled

from . import crash_app
from .test_crash import Workers, read_effects, supervise

pytestmark = pytest.mark.slow

N = 3  # charges
DECLINE = N + 1  # the command of the step that fails for good


def refund_of(charge: int) -> int:
    """The command of the refund of charge ``charge`` (1-based, = its command): the last charge is refunded first."""
    return 2 * N + 2 - charge


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'saga.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(db_url, tmp_path)
    yield pool
    pool.kill_all()
    print(pool.stderr_tail())  # shown when the test failed


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[durable.Engine]:
    """A client (no worker in the test process); opening it creates the schema before any worker starts."""
    async with durable.Engine(db_url, worker=False) as client:
        yield client


@pytest.mark.parametrize("when", ["after", "before"], ids=["after-side-effect", "before-side-effect"])
async def test_a_worker_killed_mid_compensation_leaves_the_refunds_in_order_each_recorded_once(
    engine: durable.Engine, workers: Workers, when: str
) -> None:
    run = await engine.start(crash_app.crash_saga, N, workflow_id=f"saga-killed-{when}-refund-2")
    killed_at = refund_of(2)
    workers.kill_file.write_text(f"{run.id} {killed_at} {when}\n")
    dead = await supervise(engine, workers, [run.id], timeout=30, lease=1.0, concurrency=1)
    assert [p.returncode for p in dead] == [-signal.SIGKILL]  # the kill point fired, once
    (victim,) = dead

    # The run failed with the original error, not with anything the crash or the compensations raised.
    with pytest.raises(durable.WorkflowFailed, match=crash_app.SAGA_ERROR):
        await run.result(timeout=1)
    assert (await engine.get_execution(run.id)).status == "failed"
    history = await engine.get_history(run.id)
    assert [r.seq for r in history] == list(range(1, len(history) + 1))
    end = history[-1].event
    assert isinstance(end, RunFailed) and crash_app.SAGA_ERROR in end.error.message, end

    # Each command scheduled once; the charges, then the refunds in reverse order, each completed exactly once
    # and with the arguments of the charge it undoes; the declined step failed once (one attempt) and nothing else.
    scheduled = [
        (r.event.command_id, r.event.name, json.loads(bytes(r.event.args)))
        for r in history
        if isinstance(r.event, StepScheduled)
    ]
    charges = [(c, "crash.charge", [c - 1, 10 * c]) for c in range(1, N + 1)]
    refunds = [(refund_of(c), "crash.refund", [c - 1, 10 * c]) for c in range(N, 0, -1)]
    assert scheduled == [*charges, (DECLINE, "crash.decline", [N]), *refunds]
    completed = [(r.event.command_id, r.event.name) for r in history if isinstance(r.event, StepCompleted)]
    assert completed == [(c, name) for c, name, _ in (*charges, *refunds)]
    assert {r.event.attempt for r in history if isinstance(r.event, StepCompleted)} == {1}
    failed = [(r.event.command_id, r.event.attempt) for r in history if isinstance(r.event, StepFailed)]
    assert failed == [(DECLINE, 1)]
    refund_results = [
        json.loads(bytes(r.event.result))
        for r in history
        if isinstance(r.event, StepCompleted) and r.event.name == "crash.refund"
    ]
    assert refund_results == ["refunded 30", "refunded 20", "refunded 10"]

    # The side effects: no charge ran again; refund 2 ran twice when killed after its side effect, once when
    # killed before it (its first attempt only logged that it began); the refunds ran in reverse order.
    effects = [e for e in read_effects(workers.log) if e.run == run.id]
    done = [e for e in effects if e.kind == "effect"]
    ran = collections.Counter(e.command_id for e in done)
    twice = killed_at if when == "after" else None
    assert ran == {cid: 1 + (cid == twice) for cid in range(1, 2 * N + 2)}, f"killed {when} refund 2"
    assert [e.command_id for e in done if e.command_id > DECLINE] == [
        refund_of(3),
        *[refund_of(2)] * (2 if when == "after" else 1),
        refund_of(1),
    ]
    # With "before", each execution of refund 2 logs that it began: the killed one, then the successor's.
    begun = [(e.command_id, e.pid == victim.pid) for e in effects if e.kind == "begin"]
    assert begun == ([(killed_at, True), (killed_at, False)] if when == "before" else [])
    # Everything up to the kill point ran in the killed worker, the rest in its successor.
    by_victim = [e.command_id for e in done if e.pid == victim.pid]
    assert by_victim == [*range(1, killed_at), *([killed_at] if when == "after" else [])]
    assert {e.pid for e in done if e.pid != victim.pid} and all(
        e.command_id >= killed_at for e in done if e.pid != victim.pid
    )
