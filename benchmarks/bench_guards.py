"""What the determinism guards cost: guards on vs off, in one process, rounds interleaved.

Prints:
  * the fast path: ns per call of a guarded function outside workflow code (what steps, the worker and every
    other thread pay), beside the original function;
  * a pure replay of a 10,000-event history (5,000 steps; workflow code only, no I/O): ms per replay;
  * a 100-step workflow (``--steps``) on the in-memory engine: ms per step;
  * the rejected alternative for ``datetime.now()``: a ``sys.setprofile`` hook on the workflow thread while
    workflow code runs, on the same replay.

Medians of ``--runs`` rounds; each round measures "off" and "on" back to back, and the overhead is the median
of the rounds' own on/off ratios, so drift hits both sides of each ratio.

    python benchmarks/bench_guards.py [--runs 9] [--steps 100]

No figure here is asserted anywhere; docs/determinism.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
import timeit
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import durable
from history import MemoryStore, RecordedEvent
from replay import WorkflowInstance, _guards, _loop


@durable.step
async def noop(i: int) -> int:
    return i + 1


@durable.workflow(name="bench_guards_steps")
async def many_steps(ctx: durable.WorkflowContext, n: int) -> int:
    x = 0
    for _ in range(n):
        x = await noop(x)
    return x


@contextmanager
def guards(on: bool) -> Iterator[None]:
    if on:
        _guards.install()
        yield
    else:
        with _guards._disabled():
            yield


def ns_per_call(fn: Callable[[], Any], number: int = 100_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e9


def fast_path() -> None:
    calls: dict[str, Callable[[], Any]] = {
        "time.time()": lambda: time.time(),
        "datetime.now()": lambda: dt.datetime.now(),
        "uuid.uuid4()": lambda: uuid.uuid4(),
    }
    print("fast path, outside workflow code (ns per call, best of 7 rounds, off and on interleaved):")
    for label, call in calls.items():
        off, on = [], []
        for _ in range(7):
            with guards(False):
                off.append(ns_per_call(call))
            with guards(True):
                on.append(ns_per_call(call))
        print(f"  {label:<16} original {min(off):7.1f}   guarded {min(on):7.1f}   (+{min(on) - min(off):.0f} ns)")
    with guards(True):
        audit = ns_per_call(lambda: sys.audit("durable.bench"))
    print(f"  {'sys.audit(...)':<16} with the guard's audit hook: {audit:.1f} ns per event (any thread)")


async def record(n: int) -> list[RecordedEvent]:
    async with durable.Engine(store=MemoryStore(), workflows=[many_steps], horizon=1.0) as engine:
        run = await engine.start(many_steps, n)
        await run.result(timeout=120)
        return await engine.get_history(run.id)


def replay_ms(history: list[RecordedEvent]) -> float:
    instance = WorkflowInstance(many_steps, history[0], step_failed=durable.StepFailed)
    started = time.perf_counter()
    instance.replay(history)
    elapsed = time.perf_counter() - started
    assert instance.outcome is not None and instance.outcome.error is None
    return elapsed * 1000


async def engine_ms_per_step(steps: int) -> float:
    async with durable.Engine(store=MemoryStore(), workflows=[many_steps], horizon=1.0) as engine:
        started = time.perf_counter()
        run = await engine.start(many_steps, steps)
        await run.result(timeout=60)
        return (time.perf_counter() - started) * 1000 / steps


@contextmanager
def setprofile_alternative() -> Iterator[None]:
    """The alternative to patching datetime's type dict: a profile hook on the workflow thread while workflow
    code runs, raising on a C call of datetime.now/utcnow/today."""
    targets = {"now", "utcnow", "today"}

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and getattr(arg, "__self__", None) in (dt.datetime, dt.date) and arg.__name__ in targets:
            raise durable.WorkflowCodeError(f"{arg.__name__}() inside a workflow")

    original = _loop.DeterministicLoop.run_until_idle

    def run_until_idle(self: _loop.DeterministicLoop) -> None:
        previous = sys.getprofile()
        sys.setprofile(profile)
        try:
            original(self)
        finally:
            sys.setprofile(previous)

    _loop.DeterministicLoop.run_until_idle = run_until_idle  # type: ignore[method-assign]
    try:
        yield
    finally:
        _loop.DeterministicLoop.run_until_idle = original  # type: ignore[method-assign]


def overhead(off: list[float], on: list[float]) -> str:
    # The overhead is the median of each round's own ratio: rounds run off and on back to back, so a slow
    # moment of the machine (another process) slows both sides of the same ratio.
    ratio = statistics.median(b / a for a, b in zip(off, on, strict=True))
    return f"off {statistics.median(off):8.3f}   on {statistics.median(on):8.3f}   overhead {100 * (ratio - 1):+5.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="rounds per figure (medians are printed)")
    parser.add_argument("--steps", type=int, default=100, help="steps of the engine workflow")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, guards installed at import: {_guards.enabled()}")
    fast_path()

    history = asyncio.run(record(5000))
    off: list[float] = []
    on: list[float] = []
    profiled: list[float] = []
    for _ in range(args.runs):
        with guards(False):
            off.append(replay_ms(history))
        with guards(True):
            on.append(replay_ms(history))
        with guards(False), setprofile_alternative():
            profiled.append(replay_ms(history))
    print(f"\npure replay of a {len(history)}-event history (ms per replay, median of {args.runs}):")
    print(f"  guards       {overhead(off, on)}")
    print(f"  setprofile   {overhead(off, profiled)}   (rejected alternative, datetime only)")

    off, on = [], []
    for _ in range(args.runs):
        with guards(False):
            off.append(asyncio.run(engine_ms_per_step(args.steps)))
        with guards(True):
            on.append(asyncio.run(engine_ms_per_step(args.steps)))
    print(f"\n{args.steps}-step workflow on the in-memory engine (ms per step, median of {args.runs}):")
    print(f"  guards       {overhead(off, on)}")


if __name__ == "__main__":
    main()
