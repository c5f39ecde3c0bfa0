"""What live event streams cost the step path on PostgreSQL: ``Store.append`` of a plain step with the
``durable_events_appended`` trigger (migration 0008_live) while nobody subscribes (its WHEN condition, a shared
try of the watch lock, is false: no NOTIFY) and while a subscriber watches (the runs of a statement packed into
NOTIFYs, heard by the subscriber's connection), against the same append with the trigger disabled.

Noise on a shared machine moves a figure by more than the difference sought, so the variants alternate in short
rounds on one database (``ALTER TABLE … DISABLE TRIGGER`` between rounds) and the figure is the median over
rounds of each round's median, with the ratio to "no trigger" and the median difference from the "no trigger"
round just before (paired). The same for the ms per step of a 50-step workflow run by an engine and its worker.
Also the Python cost of the worker's step-start notice while nobody watches.

    python benchmarks/bench_live.py [--rounds 15] [--per-round 200] [--url postgresql://…/server_db]

No figure here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import timeit
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_store_append import BATCH, _admin, _claims, _step  # type: ignore[import-not-found]

import durable
import history
from history import Append, Claim, StepNotice, Store

VARIANTS = ("no trigger", "trigger, unwatched", "trigger, watched")


async def _round(store: Store, claims: list[Claim], seqs: dict[str, int], n: int) -> float:
    """Median µs of ``n`` appends of one step to each of ``claims`` (one statement each time)."""
    times = []
    for i in range(n):
        items = [Append(c.run.id, "bench", c.run.lease_epoch, seqs[c.run.id], _step(i), datetime.now(UTC))
                 for c in claims]  # fmt: skip
        started = time.perf_counter()
        assert await store.append(items) == [None] * len(items)
        times.append((time.perf_counter() - started) * 1e6)
        for c in claims:
            seqs[c.run.id] += 2
    return statistics.median(times)


async def measure(url: str, rounds: int, per_round: int) -> None:
    store = history.open_store(url)
    listener = history.open_store(url)  # a subscriber: another connection, as another process would have
    await store.open()
    await listener.open()
    stop = None
    try:
        for size in (1, BATCH):
            claims = await _claims(store, size)
            seqs = {c.run.id: c.run.next_seq for c in claims}
            await _round(store, claims, seqs, 100)  # warm up statement caches
            figures: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(rounds):
                for variant in VARIANTS:
                    enabled = "DISABLE" if variant == "no trigger" else "ENABLE"
                    await _admin(url, f"ALTER TABLE durable_events {enabled} TRIGGER durable_events_appended")
                    if variant == "trigger, watched" and stop is None:
                        stop = await listener.subscribe_live(lambda *_: None, lambda _: None)
                    figures[variant].append(await _round(store, claims, seqs, per_round))
                    if stop is not None:
                        stop()
                        stop = None
            base = statistics.median(figures["no trigger"])
            for variant in VARIANTS:
                median = statistics.median(figures[variant])
                # Each round against the "no trigger" round just before it: robust to the load changing slowly.
                paired = statistics.median(a - b for a, b in zip(figures[variant], figures["no trigger"], strict=True))
                print(f"  append, {size:>2} run(s) x 1 step, {variant:<18} median {median:7.1f} µs "
                      f"({median / base:5.3f}x), paired difference {paired:+6.1f} µs")  # fmt: skip
    finally:
        await listener.close()
        await store.close()


@durable.step(name="bench_live.noop")
async def noop(i: int) -> int:
    return i + 1


@durable.workflow(name="bench_live_steps")
async def steps(ctx: durable.WorkflowContext, n: int) -> int:
    x = 0
    for _ in range(n):
        x = await noop(x)
    return x


async def per_step(url: str, rounds: int) -> None:
    """ms per step of a 50-step workflow (an engine with its worker, as bench_core's per-step figure), the
    variants alternating by round."""
    figures: dict[str, list[float]] = {v: [] for v in VARIANTS}
    async with durable.Engine(url, workflows=[steps]) as engine:
        watcher = history.open_store(url)
        await watcher.open()
        try:
            await (await engine.start(steps, 50)).result(timeout=60)  # warm up
            for _ in range(rounds):
                for variant in VARIANTS:
                    enabled = "DISABLE" if variant == "no trigger" else "ENABLE"
                    await _admin(url, f"ALTER TABLE durable_events {enabled} TRIGGER durable_events_appended")
                    stop = None
                    if variant == "trigger, watched":
                        stop = await watcher.subscribe_live(lambda *_: None, lambda _: None)
                    times = []
                    for _ in range(3):
                        started = time.perf_counter()
                        await (await engine.start(steps, 50)).result(timeout=60)
                        times.append((time.perf_counter() - started) * 1000 / 50)
                    figures[variant].append(statistics.median(times))
                    if stop is not None:
                        stop()
        finally:
            await watcher.close()
    base = statistics.median(figures["no trigger"])
    for variant in VARIANTS:
        median = statistics.median(figures[variant])
        paired = statistics.median(a - b for a, b in zip(figures[variant], figures["no trigger"], strict=True))
        print(f"  per step (50-step workflow), {variant:<18} median {median:6.3f} ms ({median / base:5.3f}x), "
              f"paired difference {paired * 1000:+6.1f} µs")  # fmt: skip


def notice_cost() -> None:
    """µs of the worker's per-step call while nobody watches (builds the notice, finds nobody to tell)."""
    store = history.MemoryStore()
    now = datetime.now(UTC)

    def call() -> None:
        store.notify_step_started([StepNotice("run", "wf", 1, "step", 1, now)])

    n = 200_000
    print(f"  notify_step_started, nobody watching: {min(timeit.repeat(call, number=n, repeat=5)) / n * 1e6:.2f} µs")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument(
        "--url", default=os.environ.get("DURABLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")
    )
    args = parser.parse_args()
    name = f"durable_bench_{uuid.uuid4().hex[:8]}"
    await _admin(args.url, f'CREATE DATABASE "{name}"')
    try:
        print(f"PostgreSQL ({args.url}, fresh database {name}), {args.rounds} rounds of {args.per_round}:")
        url = urlunsplit(urlsplit(args.url)._replace(path=f"/{name}"))
        await measure(url, args.rounds, args.per_round)
        await per_step(url, args.rounds)
    finally:
        await _admin(args.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    notice_cost()


if __name__ == "__main__":
    asyncio.run(main())
