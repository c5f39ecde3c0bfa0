"""Replay speed: events replayed per second on histories of about 1k, 10k and 100k events, and whether the time
grows linearly with the history's length.

The workflow is a loop of steps with a durable sleep every 100 iterations (step_scheduled + step_completed per
step, timer_started + timer_fired per sleep). Its histories are recorded by driving the real WorkflowInstance the
way the worker does (the instance issues the commands, with their real argument digests; the driver appends the
events and delivers the outcomes), without a database, so that 100k events take seconds to build.

For each size it prints the median of several runs of:
  * ``durable.replay.replay(workflow, events)``: events/s and microseconds per event;
  * loading the same history from its file bytes (``load_history``: JSON decode and checks), for comparison;
and the linearity ratios: (time per event at 100k) / (time per event at 1k); 1.0 is perfectly linear.

    python benchmarks/bench_replay.py [--sizes 1000,10000,100000] [--runs 5]

No figure here is asserted anywhere; docs/replay.md quotes them.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import durable
import durable.replay
from durable._history_file import encode_document
from history import (
    Event,
    RecordedEvent,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepScheduled,
    TimerFired,
    encode_payload,
)
from replay import WorkflowInstance

SLEEP_EVERY = 100


@durable.step
async def add(total: int, i: int) -> int:
    return total + i


@durable.workflow(name="bench_replay_loop")
async def loop(ctx: durable.WorkflowContext, steps: int) -> int:
    total = 0
    for i in range(steps):
        total = await add(total, i)
        if i % SLEEP_EVERY == SLEEP_EVERY - 1:
            await ctx.sleep(60)
    return total


def steps_for(events: int) -> int:
    """Loop iterations giving about ``events`` events: 2 per step, 2 per sleep, run_started and run_completed."""
    return max(1, round((events - 2) / (2 + 2 / SLEEP_EVERY)))


def record(steps: int) -> list[RecordedEvent]:
    """The history of ``loop(steps)``, recorded by driving the instance as the worker would (step bodies are
    trivial: their result is computed here rather than awaited on a loop)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    started = RunStarted(workflow=loop.name, input=encode_payload([steps], what="input"), run_id="bench",
                         random_seed=1)
    history = [RecordedEvent(seq=1, at=now, event=started)]

    def append(event: Event) -> None:
        history.append(RecordedEvent(seq=len(history) + 1, at=now, event=event))

    instance = WorkflowInstance(loop, history[0], clock=lambda: now)
    instance.start()
    while instance.outcome is None:
        for event in instance.take_new_events():  # timers started by the code
            append(event)
        steps_due, timers_due = instance.take_new_steps(), instance.take_new_timers()
        for step in steps_due:
            result = encode_payload(step.args[0] + step.args[1], what="result")
            append(StepScheduled(command_id=step.command_id, name=step.name, args=step.args_raw, digest=step.digest))
            completed = StepCompleted(command_id=step.command_id, name=step.name, attempt=1, result=result,
                                      duration_ms=0.01)
            append(completed)
            instance.deliver(completed, now)
        if not steps_due:
            for timer in timers_due:
                fired = TimerFired(command_id=timer.command_id)
                append(fired)
                instance.deliver(fired, now)
    assert instance.outcome.result is not None
    append(RunCompleted(result=instance.outcome.result))
    instance.close()
    return history


def timed(fn: object, runs: int) -> float:
    """Median seconds of ``runs`` calls of ``fn``."""
    times = []
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="history lengths (events), comma-separated")
    parser.add_argument("--runs", type=int, default=5, help="runs per size (3 for 100k and over)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"replay benchmark: Python {platform.python_version()} on {platform.machine()}, "
          f"{platform.processor() or platform.system()}")
    print(f"{'events':>8}  {'replay ms':>10}  {'events/s':>10}  {'us/event':>8}  {'load ms':>8}  {'load us/event':>13}")
    per_event: dict[int, float] = {}
    load_per_event: dict[int, float] = {}
    for size in sizes:
        events = record(steps_for(size))
        data = encode_document(durable.replay.make_document(events))
        result = durable.replay.replay(loop, events)
        assert result.ok, result.report()
        runs = args.runs if size < 100_000 else min(args.runs, 3)
        replay_s = timed(lambda events=events: durable.replay.replay(loop, events), runs)
        load_s = timed(lambda data=data: durable.replay.load_history(data), runs)
        n = len(events)
        per_event[size] = replay_s / n
        load_per_event[size] = load_s / n
        print(f"{n:>8,}  {replay_s * 1000:>10.1f}  {n / replay_s:>10,.0f}  {replay_s / n * 1e6:>8.2f}  "
              f"{load_s * 1000:>8.1f}  {load_s / n * 1e6:>13.2f}")
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        ratio = per_event[large] / per_event[small]
        verdict = "linear" if ratio < 1.5 else "NOT linear: profile replay/_instance.py"
        print(f"linearity of replay: time per event at {large:,} / at {small:,} = {ratio:.2f} "
              f"(= (t{large // 1000}k / t{small // 1000}k) / {large // small}; 1.0 is linear) -> {verdict}")
        print(f"linearity of load:   time per event at {large:,} / at {small:,} = "
              f"{load_per_event[large] / load_per_event[small]:.2f}")


if __name__ == "__main__":
    main()
