"""Crash tests with real worker processes (``tests.crash_app``) on SQLite and PostgreSQL.

What a user is promised (DESIGN.md invariants 2, 5 and 6, and the worker's contract):

* a worker killed with SIGKILL at any point loses nothing: another worker picks its runs up once their leases
  expire and finishes every one with the result it would have had;
* steps whose result was recorded are not run again; only a step in flight at the kill may run twice
  (step bodies are at-least-once, everything recorded exactly-once);
* a stale worker (paused past its lease) cannot append to a run another worker took over;
* SIGTERM finishes the step in flight, records it, hands the run back, and exits 0.

Side effects are counted from the log the step bodies write (see ``crash_app``).
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import durable
from history import (
    RecordedEvent,
    RunCompleted,
    RunRecord,
    StepCompleted,
    StepFailed,
    StepScheduled,
    TimerFired,
    TimerStarted,
)

from . import crash_app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


# -- worker processes --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """One line of the side-effect log: one execution of a step body (or the start of a slow one)."""

    pid: int
    run: str
    command_id: int
    attempt: int
    kind: str
    phase: int


def read_effects(path: Path) -> list[Effect]:
    if not path.exists():
        return []
    effects = []
    for line in path.read_text(encoding="utf-8").splitlines():
        pid, run, cid, attempt, kind, phase = line.split()
        effects.append(Effect(int(pid), run, int(cid), int(attempt), kind, int(phase)))
    return effects


class Workers:
    """Starts worker processes on one database; whatever is still running at teardown is killed."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.dir = tmp_path
        self.log = tmp_path / "effects.log"
        self.kill_file = tmp_path / "kill-points"
        self.audit = tmp_path / "audit.log"
        self.ready = tmp_path / "ready"
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(
        self,
        *,
        lease: float = 1.0,
        concurrency: int = 100,
        grace: float = 10.0,
        cli: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A worker process: ``tests.crash_app``'s entry point, or ``python -m durable worker`` with ``cli``."""
        if cli:
            argv = [
                "-m",
                "durable",
                "--database-url",
                self.url,
                "worker",
                "tests.crash_app",
                "--lease-seconds",
                str(lease),
                "--grace",
                str(grace),
                "--concurrency",
                str(concurrency),
            ]
        else:
            argv = [
                "-m",
                "tests.crash_app",
                "worker",
                self.url,
                "--lease",
                str(lease),
                "--grace",
                str(grace),
                "--concurrency",
                str(concurrency),
                "--poll",
                "0.1",
            ]
        environment = {
            **os.environ,
            crash_app.LOG_ENV: str(self.log),
            crash_app.KILL_FILE_ENV: str(self.kill_file),
            crash_app.AUDIT_ENV: str(self.audit),
            crash_app.READY_ENV: str(self.ready),
            **(env or {}),
        }
        stderr = open(self.dir / f"worker-{len(self.processes)}.stderr", "wb")  # noqa: SIM115 - the child owns it
        with stderr:
            process = subprocess.Popen(
                [sys.executable, *argv], cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.processes.append(process)
        return process

    async def wait_ready(self, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        """Until ``process`` (a ``crash_app`` worker) has its SIGTERM handler installed."""

        async def ready() -> bool:
            assert process.poll() is None, f"worker {process.pid} exited with {process.returncode}"
            return self.ready.exists() and str(process.pid) in self.ready.read_text().split()

        await wait_for(ready, timeout, f"worker {process.pid} to start")

    def stderr_tail(self, lines: int = 15) -> str:
        out = []
        for n, process in enumerate(self.processes):
            text = (self.dir / f"worker-{n}.stderr").read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- worker {n} (pid {process.pid}, exit {process.returncode}):\n" + "\n".join(text))
        return "\n".join(out)

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait(10)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crash.db'}"
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


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        assert time.monotonic() < deadline, f"worker {process.pid} still running after {timeout}s"
        await asyncio.sleep(0.02)
    return process.returncode


async def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


async def finished_runs(engine: durable.Engine, run_ids: list[str]) -> dict[str, RunRecord]:
    runs = {}
    for run_id in run_ids:
        run = await engine.store.get_run(run_id)
        assert run is not None
        if run.finished:
            runs[run_id] = run
    return runs


async def supervise(
    engine: durable.Engine, workers: Workers, run_ids: list[str], timeout: float, **options: Any
) -> list[subprocess.Popen[bytes]]:
    """Keep one worker running, starting a new one whenever the last died, until every run has finished (a
    process supervisor's restart loop). Returns the workers that died; the last one is stopped with SIGTERM."""
    deadline = time.monotonic() + timeout
    dead: list[subprocess.Popen[bytes]] = []
    current = workers.spawn(**options)
    while len(await finished_runs(engine, run_ids)) < len(run_ids):
        assert time.monotonic() < deadline, f"runs unfinished after {timeout}s\n{workers.stderr_tail()}"
        await check_none_blocked(engine, run_ids)
        if current.poll() is not None:
            dead.append(current)
            current = workers.spawn(**options)
        await asyncio.sleep(0.05)
    await workers.wait_ready(current)
    current.send_signal(signal.SIGTERM)
    assert await wait_exit(current, 15) == 0
    return dead


async def check_none_blocked(engine: durable.Engine, run_ids: list[str]) -> None:
    """A run whose replay diverged waits a minute for fixed code: in these tests, that is a failure, now."""
    for run_id in run_ids:
        run = await engine.store.get_run(run_id)
        assert run is not None and run.blocked is None, f"run {run_id} is blocked:\n{run and run.blocked}"


# -- checks on what a user sees -----------------------------------------------------------------------------------


def check_recorded_once(history: list[RecordedEvent]) -> None:
    """Sequence numbers without gaps, each step scheduled and completed exactly once, each timer started and
    fired exactly once, the run's end last."""
    assert [r.seq for r in history] == list(range(1, len(history) + 1))

    def count(kind: type) -> collections.Counter[int]:
        return collections.Counter(r.event.command_id for r in history if isinstance(r.event, kind))

    assert set(count(StepScheduled).values()) == {1}
    assert count(StepCompleted) == count(StepScheduled)
    assert set(count(TimerStarted).values()) <= {1}
    assert count(TimerFired) == count(TimerStarted)
    assert not [r for r in history if isinstance(r.event, StepFailed)]
    assert isinstance(history[-1].event, RunCompleted)


def executions(effects: list[Effect]) -> dict[tuple[str, int, int], list[Effect]]:
    """Executions of each step attempt (run, command id, attempt), in the order they happened."""
    by_key: dict[tuple[str, int, int], list[Effect]] = collections.defaultdict(list)
    for e in effects:
        if e.kind == "effect":
            by_key[(e.run, e.command_id, e.attempt)].append(e)
    return by_key


def check_only_interrupted_steps_reran(effects: list[Effect], killed: set[int]) -> int:
    """Every step attempt ran once, plus once in each killed worker it was in flight in when killed. Returns
    how many executions were lost to kills.

    An execution is lost when the same attempt ran again later. It must have been in a worker that was killed,
    and it must have been among that worker's last steps of the run: a worker that went on to a later phase of
    the run had recorded this one (a step's result is durable before the workflow proceeds past it)."""
    lost = 0
    for key, runs in executions(effects).items():
        for execution in runs[:-1]:
            lost += 1
            assert execution.pid in killed, f"{key} ran again after {execution} although its worker lived"
            later = [
                e for e in effects if e.pid == execution.pid and e.run == execution.run and e.phase > execution.phase
            ]
            assert not later, f"{key}: its worker went on to {later[0]} without recording it, yet it ran again"
        assert len({e.pid for e in runs}) == len(runs), f"{key} ran twice in one worker: {runs}"
    return lost


# -- the tests -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["after", "before"], ids=["after-side-effect", "before-side-effect"])
@pytest.mark.parametrize(
    ("workflow", "command_of_step"),
    [
        (crash_app.crash_seq, lambda k: k),
        (crash_app.crash_seq_threads, lambda k: k),
        (crash_app.crash_sleepy, lambda k: 2 * k - 1),
    ],
    ids=["steps", "sync-steps-in-threads", "steps-and-sleeps"],
)
async def test_sigkill_at_each_step_reruns_only_the_step_in_flight(
    engine: durable.Engine, workers: Workers, workflow: durable.Workflow, command_of_step: Any, when: str
) -> None:
    # One run per crash point: run k's worker dies in step k, right after its side effect and before its
    # result is recorded ("after"), or when step k-1 is recorded and step k has not done anything yet
    # ("before"). Workers take one run at a time, so each run is alone in flight when its worker dies; a new
    # worker starts whenever one died, and takes the dead one's run over once its lease (1 s) expired.
    n = 6
    runs = [await engine.start(workflow, n, workflow_id=f"killed-at-{k}") for k in range(1, n + 1)]
    workers.kill_file.write_text("".join(f"{r.id} {command_of_step(k)} {when}\n" for k, r in enumerate(runs, 1)))
    dead = await supervise(engine, workers, [r.id for r in runs], timeout=60, lease=1.0, concurrency=1)

    assert [p.returncode for p in dead] == [-signal.SIGKILL] * n  # each kill point fired, once
    effects = read_effects(workers.log)
    for k, run in enumerate(runs, 1):
        assert await run.result(timeout=1) == crash_app.expected_seq(n)
        history = await engine.get_history(run.id)
        check_recorded_once(history)
        assert {s.attempt for s in (await run.execution(include_steps=True)).steps or []} == {1}
        ran = collections.Counter(e.phase + 1 for e in effects if e.run == run.id and e.kind == "effect")
        twice = k if when == "after" else None  # killed before its side effect, step k did nothing to redo
        assert ran == {step: 1 + (step == twice) for step in range(1, n + 1)}, f"killed {when} step {k}"
    assert check_only_interrupted_steps_reran(effects, {p.pid for p in dead}) == (n if when == "after" else 0)


async def test_random_sigkills_with_many_runs_in_flight_lose_nothing(engine: durable.Engine, workers: Workers) -> None:
    # Many runs at once, with parallel steps taking 100-200 ms, and five workers in turn SIGKILLed
    # at a random moment (seeded: the seed is in any failure message) after they got going; then one last
    # worker finishes everything.
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    runs = [await engine.start(crash_app.crash_mixed, k) for k in range(40)]
    run_ids = [r.id for r in runs]
    killed: set[int] = set()
    for _ in range(5):
        worker = workers.spawn(lease=1.0)

        async def got_going(pid: int = worker.pid) -> bool:
            return workers.log.exists() and any(e.pid == pid for e in read_effects(workers.log))

        await wait_for(got_going, 20, f"seed {seed}: worker {worker.pid} to take runs over")
        await asyncio.sleep(rng.uniform(0.0, 0.1))
        worker.kill()
        assert await wait_exit(worker, 5) == -signal.SIGKILL
        killed.add(worker.pid)
    unfinished = len(run_ids) - len(await finished_runs(engine, run_ids))
    last = await supervise(engine, workers, run_ids, timeout=60, lease=1.0)
    assert not last, f"seed {seed}: the last worker died\n{workers.stderr_tail()}"

    for k, run in enumerate(runs):
        assert await run.result(timeout=1) == crash_app.expected_mixed(k), f"seed {seed}"
        check_recorded_once(await engine.get_history(run.id))
    lost = check_only_interrupted_steps_reran(read_effects(workers.log), killed)
    print(f"seed {seed}: {unfinished} runs unfinished after the kills, {lost} step executions lost to them")
    assert unfinished > 0 and lost > 0, f"seed {seed}: the kills interrupted nothing"


@pytest.mark.parametrize("blind", [True, False], ids=["append-refused", "heartbeat-or-append"])
async def test_a_stale_worker_cannot_append_after_another_took_over(
    engine: durable.Engine, workers: Workers, blind: bool
) -> None:
    # Worker A is frozen (SIGSTOP) in the middle of a slow step, long enough for its lease to expire; B takes
    # the run over and finishes it; then A wakes up. Whichever A notices first, its heartbeat reporting the lost
    # lease or its append being refused, the history B wrote must stay exactly as it was (invariant 2). With
    # `blind`, A's heartbeats never report the loss, so it is the append itself that must meet the fence.
    run = await engine.start(crash_app.crash_slow, 0.5)
    a = workers.spawn(lease=1.0, env={crash_app.BLIND_ENV: "1"} if blind else None)

    async def a_in_slow_step() -> bool:
        return any(e.pid == a.pid and e.kind == "begin" for e in read_effects(workers.log))

    await wait_for(a_in_slow_step, 15, "worker A to start the slow step")
    os.kill(a.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(1.6)  # A's lease (1 s) runs out while it is frozen
        b = workers.spawn(lease=1.0)
        assert await run.result(timeout=20) == crash_app.expected_slow(0.5)
        history = await engine.get_history(run.id)
    finally:
        os.kill(a.pid, signal.SIGCONT)

    if blind:

        async def a_refused() -> bool:
            return workers.audit.exists() and f" {run.id} " in workers.audit.read_text()

        await wait_for(a_refused, 15, "worker A's stale append to be refused")
        pid, run_id, first_seq, error = workers.audit.read_text().split()
        assert (int(pid), run_id, error) == (a.pid, run.id, "LeaseLost")
        assert int(first_seq) == 4  # A would have recorded the slow step right after the first one
        slow = [e.pid for e in read_effects(workers.log) if e.command_id == 2 and e.kind == "effect"]
        assert sorted(slow) == sorted([a.pid, b.pid])  # both ran it; one result is recorded
    else:
        await asyncio.sleep(1.0)  # A's step ends 0.5 s after it wakes up (unless its heartbeat stopped it)
    assert await engine.get_history(run.id) == history
    check_recorded_once(history)
    for process in (a, b):
        process.send_signal(signal.SIGTERM)
        assert await wait_exit(process, 15) == 0


@pytest.mark.parametrize("cli", [False, True], ids=["crash_app", "durable-worker-cli"])
async def test_sigterm_finishes_the_step_in_flight_and_hands_the_run_back(
    engine: durable.Engine, workers: Workers, cli: bool
) -> None:
    # The lease is 30 s: if A did not hand the run back, B could not have it for 30 s.
    run = await engine.start(crash_app.crash_slow, 1.0)
    a = workers.spawn(lease=30.0, grace=10.0, cli=cli)

    async def a_in_slow_step() -> bool:
        return any(e.pid == a.pid and e.kind == "begin" for e in read_effects(workers.log))

    await wait_for(a_in_slow_step, 15, "worker A to start the slow step")
    stopped_at = time.monotonic()
    a.send_signal(signal.SIGTERM)
    assert await wait_exit(a, 12) == 0
    row = await engine.store.get_run(run.id)
    assert row is not None and row.lease_owner is None and not row.finished  # handed back, not abandoned
    recorded = [r.event.command_id for r in await engine.get_history(run.id) if isinstance(r.event, StepCompleted)]
    assert recorded == [1, 2]  # the slow step finished and was recorded before A exited; A began nothing else

    b = workers.spawn(lease=30.0)
    assert await run.result(timeout=10) == crash_app.expected_slow(1.0)
    assert time.monotonic() - stopped_at < 10
    check_recorded_once(await engine.get_history(run.id))
    ran = [(e.command_id, e.pid) for e in read_effects(workers.log) if e.kind == "effect"]
    assert ran == [(1, a.pid), (2, a.pid), (3, b.pid)]
    b.send_signal(signal.SIGTERM)
    assert await wait_exit(b, 15) == 0
