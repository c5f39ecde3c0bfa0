"""Memory held by waiting runs: 1,000 runs wait for an event at once; how much does the worker's RSS grow?

A waiting run is released by its worker (its instance dropped; only its row and history stay in the database),
so the worker's memory must not grow with the number of waiting runs. Prints the RSS growth per waiting run and
exits with status 1 if it is over the ceiling (default 4 KiB per run: a run kept in memory costs far more).

    python benchmarks/bench_waiting.py [--runs 1000] [--url sqlite:///... | postgresql://...] [--ceiling 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import durable


@durable.workflow(name="bench_waits_for_go")
async def waits_for_go(ctx: durable.WorkflowContext, n: int) -> int:
    payload = await ctx.wait_for_event("go")
    return n + payload


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def measure(url: str, runs: int) -> tuple[float, float, float]:
    async with durable.Engine(url, horizon=0.1, concurrency=200) as engine:
        warm = [await engine.start(waits_for_go, -1) for _ in range(50)]  # warm up caches, pools, statements
        for handle in warm:
            await engine.send_event(handle.id, "go", 1)
            await handle.result(timeout=60)
        gc.collect()
        before = rss_bytes()
        ids = [(await engine.start(waits_for_go, i)).id for i in range(runs)]
        started = time.perf_counter()
        while (await engine.queues.stats("default")).waiting < runs:
            await asyncio.sleep(0.05)
        waited = time.perf_counter() - started
        assert engine.worker is not None
        while engine.worker.active_runs:
            await asyncio.sleep(0.01)
        gc.collect()
        during = rss_bytes()
        started = time.perf_counter()
        for run_id in ids:
            await engine.send_event(run_id, "go", 1)
        for run_id in ids:
            await engine.get_handle(run_id).result(timeout=120)
        finished = time.perf_counter() - started
    return (during - before) / runs, waited, finished


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--url", default=None, help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--ceiling", type=float, default=4096, help="most RSS bytes per waiting run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{tmp}/waiting.db"
        per_run, waited, finished = await measure(url, args.runs)
    print(f"{args.runs} runs waiting at once on {url.split(':')[0]}: worker RSS grew {per_run:,.0f} bytes per waiting "
          f"run (ceiling {args.ceiling:,.0f}); all waiting after {waited:.2f} s; events delivered and all completed "
          f"in {finished:.2f} s")
    if per_run > args.ceiling:
        print("FAIL: waiting runs hold worker memory", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
