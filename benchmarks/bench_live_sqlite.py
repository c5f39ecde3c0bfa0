"""What following runs across processes costs on SQLite (the events table's tail, ``history/_sqlite_live.py``).

A worker in this process runs 50-step workflows on a SQLite file; in alternating rounds a ``durable watch`` process
(every run, ``--json`` into a pipe this script drains) tails the same file, or nothing does. Printed:

* ms per step of the worker, unwatched and watched (median over rounds of each round's median), and their ratio:
  what a watcher's reads cost the writer;
* how late the watcher sees events: the delay from a ``completed`` event's ``at`` (its commit time) to the line
  arriving here, median and p95 (the tail looks every 0.25 s, so about half of that on average);
* the watcher's own CPU while the database is idle (its tail's four looks a second), in % of a core.

    python benchmarks/bench_live_sqlite.py [--rounds 6] [--runs 10]

No figure here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import durable
from durable import RunEvent

ROOT = Path(__file__).resolve().parent.parent

STEPS = 50


@durable.step
async def bump(i: int) -> int:
    return i + 1


@durable.workflow(name="bench_live_sqlite")
async def fifty_steps(ctx: durable.WorkflowContext) -> int:
    total = 0
    for _ in range(STEPS):
        total = await bump(total)
    return total


class Watcher:
    """A ``durable watch --json`` process on the database; the delay of each ``completed`` line it prints."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durable", "--database-url", url, "watch", "--json"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        )  # fmt: skip
        self.delays_ms: list[float] = []
        self._reader = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = msgspec.json.decode(line, type=RunEvent)
            if event.kind == "completed":
                self.delays_ms.append((datetime.now(UTC) - event.at).total_seconds() * 1000)

    async def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        await self._reader


async def _round(engine: durable.Engine, runs: int) -> float:
    """Median ms per step over ``runs`` workflows run one after another."""
    per_step = []
    for _ in range(runs):
        started = time.perf_counter()
        assert await (await engine.start(fifty_steps)).result(timeout=60) == STEPS
        per_step.append((time.perf_counter() - started) * 1000 / STEPS)
    return statistics.median(per_step)


async def _idle_cpu(url: str, seconds: float = 10.0) -> float:
    watcher = Watcher(url)
    await asyncio.sleep(2.0)  # started and watching
    before = _cpu_seconds(watcher.process.pid)
    await asyncio.sleep(seconds)
    used = _cpu_seconds(watcher.process.pid) - before
    await watcher.stop()
    return used / seconds * 100


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(rounds: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/live.db"
        figures: dict[str, list[float]] = {"unwatched": [], "watched": []}
        delays: list[float] = []
        async with durable.Engine(url, workflows=[fifty_steps]) as engine:
            await _round(engine, 2)  # warm up
            for _ in range(rounds):
                figures["unwatched"].append(await _round(engine, runs))
                watcher = Watcher(url)
                await asyncio.sleep(1.5)  # its interpreter started and it watches
                figures["watched"].append(await _round(engine, runs))
                await asyncio.sleep(0.5)  # the last run's events reach it
                await watcher.stop()
                delays += watcher.delays_ms
        idle = await _idle_cpu(url)
    unwatched, watched = (statistics.median(figures[k]) for k in ("unwatched", "watched"))
    print(f"sqlite: ms per step, unwatched {unwatched:.3f}, watched by another process {watched:.3f} "
          f"(x{watched / unwatched:.2f}; {rounds} rounds of {runs} 50-step workflows)")
    if delays:
        ordered = sorted(delays)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        print(f"sqlite: a run's 'completed' reached the watcher {statistics.median(delays):.0f} ms (median), "
              f"{p95:.0f} ms (p95) after its commit ({len(delays)} runs)")
    print(f"sqlite: an idle watcher's CPU: {idle:.2f} % of a core")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.runs))
