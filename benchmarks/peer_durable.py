"""Durable's side of the comparison. Each function is one measurement on a fresh database (``url``); workers run
as ``python -m durable worker benchmarks.bench_workflows`` processes, the client in this process.

    python -m benchmarks.peer_durable METRIC --url postgresql://.../fresh_db --params '{"runs": 200}'
"""

from __future__ import annotations

import asyncio
import time

import durable

from . import pg_stats
from ._common import Poller, kill9, log_path, measurement_main, median, now, pct, processes, python, spawn
from .bench_workflows import first_step, many_steps, three_steps
from .bench_workflows import recovery as recovery_wf

NAME = "Durable"
COMPLETED = "SELECT count(*) FROM durable_runs WHERE status = 'completed'"


def version() -> str:
    return durable.__version__


def worker_cmd(url: str, concurrency: int, lease: float = 30.0) -> list[str]:
    return [python(), "-m", "durable", "worker", "benchmarks.bench_workflows", "--database-url", url,
            "--concurrency", str(concurrency), "--lease-seconds", str(lease)]


async def _wait_workers(url: str, count: int, timeout: float = 60.0) -> None:
    async with Poller(url) as poll:
        await poll.until("SELECT count(DISTINCT worker_id) FROM durable_workers", count, timeout, every=0.05)


async def sequential(url: str, runs: int = 200, steps: int = 100, step_runs: int = 5, budget: float = 60) -> dict:
    """One in-process engine; 3-step workflows started and awaited one at a time; then a long workflow."""
    async with durable.Engine(url) as engine:
        for i in range(10):  # warm up: connections, prepared statements
            await (await engine.start(three_steps, i)).result(timeout=30)
        times: list[float] = []
        cpu0 = time.process_time()
        deadline = time.monotonic() + budget
        for i in range(runs):
            started = now()
            await (await engine.start(three_steps, i)).result(timeout=30)
            times.append((now() - started) * 1000)
            if time.monotonic() > deadline:
                break
        cpu_wf = (time.process_time() - cpu0) * 1000 / max(1, len(times))
        cpu1 = time.process_time()
        per_step = []
        for _ in range(step_runs):
            started = now()
            await (await engine.start(many_steps, steps)).result(timeout=120)
            per_step.append((now() - started) * 1000 / steps)
            cpu_step = (time.process_time() - cpu1) * 1000 / (steps * max(1, len(per_step)))
    return {"median_ms": median(times), "p95_ms": pct(times, 0.95), "n": len(times),
            "per_step_ms": median(per_step), "step_runs": len(per_step), "steps": steps,
            "cpu_per_workflow_ms": cpu_wf, "cpu_per_step_ms": cpu_step}


async def throughput(url: str, count: int = 2000, workers: int = 1, concurrency: int = 500,
                     mode: str = "start") -> dict:
    """``workers`` worker processes run ``count`` 3-step workflows; timed until all are complete.

    ``mode="start"``: this process starts them all at once (as fast as it can) and the clock starts with the
    first ``start()``. ``mode="due"``: they are started beforehand with one common due time (``delay``), and the
    clock starts at that time: the workers' rate, without the client's."""
    async with durable.Engine(url, worker=False) as engine:  # creates the schema
        with processes() as procs:
            for i in range(workers):
                procs.append(spawn(worker_cmd(url, concurrency), log=log_path(f"durable-worker{i}")))
            await _wait_workers(url, workers)
            async with Poller(url) as poll:
                if mode == "due":
                    due = time.time() + due_delay(count)

                    async def start_due(i: int) -> object:
                        return await engine.start(three_steps, i, delay=max(0.0, due - time.time()))

                    begun = now()
                    await asyncio.gather(*(start_due(i) for i in range(count)))
                    all_started = now()
                    late = time.time() > due
                    started = now() + (due - time.time())
                else:
                    started = begun = now()
                    if hasattr(engine, "start_many"):  # one statement per 1,000 runs (since fd998ec)
                        await engine.start_many(three_steps, [(i,) for i in range(count)])
                    else:  # an older Durable (--durable-ref): one start() per run
                        await asyncio.gather(*(engine.start(three_steps, i) for i in range(count)))
                    all_started = now()
                    late = False
                done = await poll.until(COMPLETED, count, timeout=600)
    elapsed = done - started
    return {"wf_per_s": count / elapsed, "steps_per_s": 3 * count / elapsed, "seconds": elapsed,
            "start_seconds": all_started - begun, "count": count, "workers": workers, "late": late}


def due_delay(count: int) -> float:
    """Seconds ahead of now for a common due time that every start of ``count`` runs beats."""
    return 1.0 + 0.003 * count


async def start_latency(url: str, runs: int = 200, budget: float = 60) -> dict:
    """A worker process idles; this process starts one run at a time: from ``start()`` returning to the body
    of the run's first step running in the worker (it returns ``time.perf_counter()``)."""
    async with durable.Engine(url, worker=False) as engine:
        with processes() as procs:
            procs.append(spawn(worker_cmd(url, 100), log=log_path("durable-worker")))
            await _wait_workers(url, 1)
            for _ in range(5):  # warm up
                await (await engine.start(first_step)).result(timeout=30)
            lat: list[float] = []
            deadline = time.monotonic() + budget
            for _ in range(runs):
                handle = await engine.start(first_step)
                returned = now()
                ran = await handle.result(timeout=30)
                lat.append((ran - returned) * 1000)
                if time.monotonic() > deadline:
                    break
    return {"median_ms": median(lat), "p99_ms": pct(lat, 0.99), "n": len(lat)}


async def recovery(url: str, inflight: int = 1000, lease: float = 5.0) -> dict:
    """Worker A takes ``inflight`` runs and hangs in their second step; kill -9 A, start worker B at once, and
    time until all runs are complete. A's leases last ``lease`` seconds (heartbeats renew them every third)."""
    async with durable.Engine(url, worker=False) as engine:
        with processes() as procs:
            a = spawn(worker_cmd(url, inflight, lease), env={"BENCH_HANG": "1"}, log=log_path("durable-worker-a"))
            procs.append(a)
            await _wait_workers(url, 1)
            await asyncio.gather(*(engine.start(recovery_wf, i) for i in range(inflight)))
            async with Poller(url) as poll:
                # in flight = claimed, first step recorded (run_started + its 2 events), second step hanging
                await poll.until("SELECT count(*) FROM durable_runs WHERE status = 'running' AND next_seq >= 4",
                                 inflight, timeout=300)
                await asyncio.sleep(0.2)
                killed = now()
                kill9(a)
                procs.append(spawn(worker_cmd(url, inflight, lease), log=log_path("durable-worker-b")))
                first = await poll.until("SELECT count(*) FROM durable_runs WHERE status = 'completed'", 1, 600)
                done = await poll.until(COMPLETED, inflight, timeout=600)
    return {"seconds": done - killed, "first_seconds": first - killed, "lease_seconds": lease,
            "inflight": inflight}


async def statements(url: str, n: int = 50) -> dict:
    return await pg_stats.statements("benchmarks.peer_durable", url, n)


async def session(url: str, steps: int = 3, n: int = 0) -> dict:
    """One process's worth of work for ``statements``: open an engine (with its worker), run ``n`` workflows of
    ``steps`` steps one at a time, close."""
    async with durable.Engine(url) as engine:
        for i in range(n):
            if steps == 3:
                await (await engine.start(three_steps, i)).result(timeout=60)
            else:
                await (await engine.start(many_steps, steps)).result(timeout=60)
    return {}


METRICS = {"sequential": sequential, "throughput": throughput, "start_latency": start_latency,
           "recovery": recovery, "statements": statements, "session": session}

if __name__ == "__main__":
    measurement_main(METRICS)
