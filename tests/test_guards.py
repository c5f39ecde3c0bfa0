"""Determinism guards: what a user sees when workflow code reads the clock, randomness, the network or files.

Each guarded call fails the run with a ``WorkflowCodeError`` that names the call, the workflow and the ``ctx.``
replacement; the same calls in steps (async, or sync in a thread while the workflow thread is armed), outside
workflows and under ``durable.unsafe_nondeterminism()`` behave normally; Durable's own machinery (``ctx.now()``,
``ctx.uuid4()``, timers, tracebacks, logging, imports, a test's clock) works under the guard.
"""

from __future__ import annotations

import asyncio
import datetime as dt_module
import gc
import logging
import os
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import durable
from history import MemoryStore, RecordedEvent, RunFailed
from replay import DeterministicLoop, WorkflowInstance, _guards

HERE = Path(__file__)

# -- helpers -----------------------------------------------------------------------------------------------------


async def execute(
    workflow: durable.Workflow, *args: Any, clock: Callable[[], datetime] | None = None
) -> tuple[Any, list[RecordedEvent]]:
    """Run ``workflow`` on an in-memory engine: (its result, or the exception ``result()`` raised; its history)."""
    options: dict[str, Any] = {"clock": clock} if clock is not None else {}
    async with durable.Engine(store=MemoryStore(), workflows=[workflow], horizon=1.0, **options) as engine:
        run = await engine.start(workflow, *args)
        try:
            outcome: Any = await run.result(timeout=10)
        except durable.WorkflowFailed as exc:
            outcome = exc
        return outcome, await engine.get_history(run.id)


def assert_guard_failure(outcome: Any, history: list[RecordedEvent], *fragments: str) -> str:
    assert isinstance(outcome, durable.WorkflowFailed), f"expected the run to fail, got {outcome!r}"
    assert outcome.error_type.endswith("WorkflowCodeError"), outcome.error_type
    message = outcome.error_message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    final = history[-1].event
    assert isinstance(final, RunFailed) and final.error.message == message  # recorded, not just raised
    return message


# -- every guarded call raises inside workflow code ---------------------------------------------------------------


def _bound_by_from_import() -> Callable[[], float]:
    from time import time  # what `from time import time` in a module that imports durable first binds

    return time


def _thread() -> None:
    threading.Thread(target=lambda: None).start()


def _connect() -> None:
    socket.create_connection(("127.0.0.1", 9), timeout=0.1)


# name -> (the call, fragments the message must contain: the call as the user wrote it, and the replacement)
CALLS: dict[str, tuple[Callable[[], Any], tuple[str, ...]]] = {
    "time.time": (time.time, ("time.time()", "use ctx.now() (recorded)")),
    "from time import time": (_bound_by_from_import(), ("time.time()", "ctx.now()")),
    "time.time_ns": (time.time_ns, ("time.time_ns()", "ctx.now()")),
    "time.monotonic": (time.monotonic, ("time.monotonic()", "ctx.now()")),
    "time.perf_counter": (time.perf_counter, ("time.perf_counter()", "inside a @durable.step")),
    "time.sleep": (lambda: time.sleep(0), ("time.sleep()", "await ctx.sleep(seconds)")),
    "time.localtime": (time.localtime, ("time.localtime() without a time argument", "ctx.now()")),
    "time.strftime": (lambda: time.strftime("%Y"), ("time.strftime() without a time argument", "ctx.now()")),
    "datetime.now": (datetime.now, ("datetime.now()", "ctx.now()")),
    "datetime.now(UTC)": (lambda: datetime.now(UTC), ("datetime.now()", "ctx.now()")),
    "datetime.datetime.now": (lambda: dt_module.datetime.now(tz=UTC), ("datetime.now()", "ctx.now()")),
    "datetime.utcnow": (datetime.utcnow, ("datetime.utcnow()", "ctx.now()")),
    "datetime.today": (datetime.today, ("datetime.today()", "ctx.now()")),
    "date.today": (date.today, ("date.today()", "ctx.now()")),
    "random.random": (random.random, ("random.random()", "ctx.random()")),
    "random.randint": (lambda: random.randint(1, 6), ("random.randint()", "ctx.randint(a, b)")),
    "random.choice": (lambda: random.choice("abc"), ("random.choice()", "ctx.choice(seq)")),
    "random.shuffle": (lambda: random.shuffle([1, 2, 3]), ("random.shuffle()", "random.Random(ctx.randint(")),
    "uuid.uuid4": (uuid.uuid4, ("uuid.uuid4()", "use ctx.uuid4() (recorded)")),
    "uuid.uuid1": (uuid.uuid1, ("uuid.uuid1()", "ctx.uuid4()")),
    "os.urandom": (lambda: os.urandom(8), ("os.urandom()", "in a @durable.step")),
    "secrets.token_hex": (secrets.token_hex, ("secrets.token_hex()", "in a @durable.step")),
    "threading": (_thread, ("threading.Thread.start()", "asyncio.gather(step_a(), step_b())")),
    "open": (lambda: HERE.read_text(), (f"open({str(HERE)!r})", "do file I/O in a @durable.step")),
    "os.listdir": (lambda: os.listdir("."), ("os.listdir('.')", "file I/O")),
    "socket.getaddrinfo": (
        lambda: socket.getaddrinfo("localhost", 80),
        ("socket.getaddrinfo('localhost')", "do network I/O in a @durable.step"),
    ),
    "socket.connect": (_connect, ("socket.", "network I/O")),
    "subprocess": (lambda: subprocess.run(["true"], check=False), ("subprocess.Popen(", "run processes")),
    "os.system": (lambda: os.system("true"), ("os.system('true')", "run processes")),
}


@durable.workflow(name="guards_call")
async def call_workflow(ctx: durable.WorkflowContext, name: str) -> Any:
    await ctx.sleep(0)  # the call comes after an activation boundary, like real code
    return CALLS[name][0]()


@pytest.mark.parametrize("name", list(CALLS))
async def test_a_guarded_call_fails_the_run_with_a_message_naming_the_replacement(name: str) -> None:
    outcome, history = await execute(call_workflow, name)
    message = assert_guard_failure(outcome, history, *CALLS[name][1], "inside workflow 'guards_call'")
    assert "durable.unsafe_nondeterminism()" in message
    assert f"(at {__file__}:" in message  # the user's line, not Durable's or the stdlib's


@durable.workflow(name="guards_swallowed")
async def swallowing_workflow(ctx: durable.WorkflowContext) -> str:
    try:
        token = uuid.uuid4().hex  # a helper that "falls back" when something goes wrong
    except Exception:
        token = "fallback"
    return token


async def test_a_violation_fails_the_run_even_when_the_workflow_code_catches_it() -> None:
    outcome, history = await execute(swallowing_workflow)
    assert_guard_failure(outcome, history, "uuid.uuid4()", "ctx.uuid4()")
    # The history replays to the same failure: no divergence.
    instance = WorkflowInstance(swallowing_workflow, history[0], step_failed=durable.StepFailed)
    instance.replay(history)
    assert instance.outcome is not None and instance.outcome.error is not None
    assert instance.outcome.error.message == outcome.error_message


# -- Durable's own machinery works under the guard ---------------------------------------------------------------

log = logging.getLogger("tests.guards")


@durable.step
async def echo(value: str) -> str:
    return value


@durable.workflow(name="guards_machinery")
async def machinery_workflow(ctx: durable.WorkflowContext) -> dict[str, Any]:
    started = ctx.now()
    ident = ctx.uuid4()
    log.warning("workflow %s running", ctx.run_id)  # logging reads the clock for the record: allowed
    await ctx.sleep(timedelta(milliseconds=10))
    await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(echo("fast"), timeout=5)
    except TimeoutError:
        pass
    import colorsys  # an import inside workflow code reads source files: allowed

    ended = ctx.now()
    return {
        "elapsed": (ended - started).total_seconds(),
        "uuid": str(ident),
        "random": ctx.random(),
        "dice": ctx.randint(1, 6),
        "hls": colorsys.rgb_to_hls(1.0, 0.0, 0.0)[0],
    }


async def test_ctx_now_uuid4_timers_logging_and_imports_work_under_the_guard() -> None:
    sys.modules.pop("colorsys", None)
    outcome, history = await execute(machinery_workflow)
    assert isinstance(outcome, dict), outcome
    assert outcome["elapsed"] >= 0.02 and uuid.UUID(outcome["uuid"]).version == 4
    instance = WorkflowInstance(machinery_workflow, history[0], step_failed=durable.StepFailed)
    instance.replay(history)  # and the recorded history replays under the guard
    assert instance.outcome is not None and instance.outcome.error is None


class WallClockPlusOffset:
    """A test's clock, as users write them: it reads the real clock, from a module that is not Durable's."""

    def __call__(self) -> datetime:
        return datetime.now(UTC) + timedelta(days=365)


async def test_a_user_supplied_clock_is_called_with_the_guard_off() -> None:
    clock = WallClockPlusOffset()
    outcome, _ = await execute(machinery_workflow, clock=clock)
    assert isinstance(outcome, dict), outcome


@durable.workflow(name="guards_raises")
async def raising_workflow(ctx: durable.WorkflowContext) -> None:
    await ctx.sleep(0)
    raise ValueError("bad order")


async def test_an_ordinary_exception_is_recorded_with_its_traceback_under_the_guard() -> None:
    # Recording the error formats its traceback, which reads source files (linecache): not a violation.
    outcome, _ = await execute(raising_workflow)
    assert isinstance(outcome, durable.WorkflowFailed)
    assert (outcome.error_type, outcome.error_message) == ("ValueError", "bad order")
    assert 'raise ValueError("bad order")' in outcome.remote_traceback


# -- steps, other threads and code outside workflows are not affected -------------------------------------------


def use_everything() -> int:
    """Every kind of guarded call once; returns how many ran."""
    calls: list[Callable[[], Any]] = [
        time.time, time.monotonic, time.perf_counter, lambda: time.sleep(0), datetime.now, date.today,
        random.random, uuid.uuid4, lambda: os.urandom(2), secrets.token_hex, lambda: HERE.read_bytes()[:1],
        lambda: os.listdir("."),
    ]  # fmt: skip
    for call in calls:
        call()
    return len(calls)


@durable.step
async def async_everything() -> int:
    return use_everything()


@durable.step
def sync_everything() -> int:
    return use_everything()


@durable.workflow(name="guards_steps")
async def steps_workflow(ctx: durable.WorkflowContext) -> list[int]:
    return list(await asyncio.gather(async_everything(), sync_everything()))


async def test_steps_may_use_the_clock_randomness_and_io() -> None:
    outcome, _ = await execute(steps_workflow)
    assert outcome == [12, 12]


SPIN: dict[str, Any] = {}


@durable.step
def spin_in_thread() -> int:
    """Use guarded calls in a worker thread until the workflow (spinning, armed, on the main thread) says stop;
    count the calls made while the main thread was armed."""
    armed_calls = 0
    SPIN["started"].set()
    while not SPIN["stop"].is_set():
        armed = bool(_guards._armed)
        use_everything()
        if armed and _guards._armed:
            armed_calls += 1
            SPIN["armed_calls"] = armed_calls
    return armed_calls


@durable.step
async def thread_running() -> None:
    while not SPIN["started"].is_set():
        await asyncio.sleep(0.001)


@durable.workflow(name="guards_concurrent")
async def concurrent_workflow(ctx: durable.WorkflowContext) -> int:
    in_thread = asyncio.ensure_future(spin_in_thread())
    await thread_running()
    spins = 0
    while SPIN["armed_calls"] < 5 and spins < 50_000_000:  # busy, inside the activation: this thread is armed
        spins += 1
    SPIN["stop"].set()
    return await in_thread


async def test_a_sync_step_in_a_thread_is_not_guarded_while_a_workflow_activation_runs() -> None:
    SPIN.update(stop=threading.Event(), started=threading.Event(), armed_calls=0)
    outcome, _ = await execute(concurrent_workflow)
    assert isinstance(outcome, int) and outcome >= 5, outcome


def test_the_guard_is_armed_for_the_thread_running_workflow_code_only() -> None:
    loop = DeterministicLoop(lambda handle: None, lambda handle: None, 0.0)  # type: ignore[abstract]
    token = _guards.arm(loop)
    try:
        with pytest.raises(durable.WorkflowCodeError, match=r"time\.time\(\) inside a workflow"):
            time.time()
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                use_everything()
            except BaseException as exc:  # pragma: no cover - the failure being tested for
                errors.append(exc)

        thread = threading.Thread(target=other_thread)
        with durable.unsafe_nondeterminism():  # starting a thread from an armed thread needs the hatch
            thread.start()
        thread.join()
        assert errors == []
    finally:
        _guards.disarm(token)
    assert isinstance(loop.guard_violation, durable.WorkflowCodeError)
    assert use_everything() == 12  # disarmed: back to normal


def test_outside_workflows_everything_behaves_normally() -> None:
    assert _guards.enabled()
    assert use_everything() == 12
    assert datetime.now(UTC).tzinfo is UTC and isinstance(datetime.now(), datetime)
    assert type(datetime.now()) is datetime and date.today() == datetime.now().date()

    class Sub(datetime):
        pass

    assert type(Sub.now()) is Sub  # subclasses still get instances of themselves


# -- the escape hatch -------------------------------------------------------------------------------------------


@durable.unsafe_nondeterminism
def debug_stamp() -> float:
    return time.time()


@durable.unsafe_nondeterminism()
async def timed_pause(ctx: durable.WorkflowContext) -> float:
    started = time.perf_counter()
    await ctx.sleep(0.01)  # the hatch holds across an await
    return time.perf_counter() - started


@durable.workflow(name="guards_hatch")
async def hatch_workflow(ctx: durable.WorkflowContext) -> list[bool]:
    with durable.unsafe_nondeterminism():
        in_block = time.time() > 0 and datetime.now() is not None
        with durable.unsafe_nondeterminism():
            nested = random.random() >= 0
        after_nested = uuid.uuid4() is not None
    return [in_block, nested, after_nested, debug_stamp() > 0, await timed_pause(ctx) >= 0]


async def test_the_escape_hatch_allows_calls_as_a_block_and_as_a_decorator() -> None:
    outcome, _ = await execute(hatch_workflow)
    assert outcome == [True, True, True, True, True]


@durable.workflow(name="guards_hatch_scope")
async def hatch_scope_workflow(ctx: durable.WorkflowContext) -> None:
    async def with_hatch() -> None:
        with durable.unsafe_nondeterminism():
            await ctx.sleep(0.01)

    async def without_hatch() -> None:
        await ctx.sleep(0)
        time.time()  # another task, while the first one sits inside its hatch

    await asyncio.gather(with_hatch(), without_hatch())
    time.time()  # after the block: guarded again


async def test_the_escape_hatch_covers_its_own_task_only() -> None:
    outcome, history = await execute(hatch_scope_workflow)
    assert_guard_failure(outcome, history, "time.time()")


def test_the_guards_can_be_switched_off_for_a_process() -> None:
    code = (
        "import time, durable, replay._guards as g; "
        "assert not g.enabled() and type(time.time).__name__ == 'builtin_function_or_method'; print('off')"
    )
    env = {**os.environ, _guards.GUARD_ENV: "off"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "off", done.stderr


def test_uninstall_restores_the_originals_and_install_brings_the_guards_back() -> None:
    with _guards._disabled():
        assert type(time.time).__name__ == "builtin_function_or_method"
        assert type(dt_module.datetime.__dict__["now"]).__name__ == "classmethod_descriptor"
        assert not _guards.guarded_calls()
    assert _guards.enabled() and type(dt_module.datetime.__dict__["now"]) is classmethod
    assert {"time.time", "datetime.now", "date.today", "uuid.uuid4", "threading.Thread.start"} <= set(
        _guards.guarded_calls()
    )


# -- code the garbage collector runs is not the workflow's ----------------------------------------------------


class ClosesOnCollection:
    """A resource whose finalizer reads the clock (a log line with a timestamp, say)."""

    closed_at: list[float] = []

    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it, at a moment nobody chooses

    def __del__(self) -> None:
        ClosesOnCollection.closed_at.append(time.time())


@durable.workflow(name="guards_gc")
async def gc_workflow(ctx: durable.WorkflowContext, n: int) -> int:
    total = 0
    for i in range(n):
        ClosesOnCollection()
        total += await echo(str(i)) == str(i)
    return total


async def test_gc_callbacks_and_finalizers_running_inside_workflow_code_are_not_violations() -> None:
    # Threshold 1: a collection at nearly every allocation, so many start inside workflow code, and run the gc
    # callback (hypothesis times collections this way) and the finalizers there.
    seen: list[float] = []

    def timing(phase: str, info: dict[str, int]) -> None:
        seen.append(time.perf_counter())

    threshold = gc.get_threshold()
    gc.callbacks.append(timing)
    gc.set_threshold(1)
    try:
        outcome, _ = await execute(gc_workflow, 20)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(timing)
    assert outcome == 20
    assert seen and ClosesOnCollection.closed_at
