"""Absurd's side of the comparison (``absurd-sdk``, async API; schema from ``absurdctl init``, which ships the
SQL in its package). Worker processes run ``AsyncAbsurd.start_worker`` (one connection per process, its default
0.25 s poll when idle); one-at-a-time figures spawn a task and run it at once with ``work_batch()`` in the same
process (no poll, no result polling: Absurd's best case).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from absurd_sdk import AsyncAbsurd

from . import pg_stats
from ._common import (
    Poller,
    kill9,
    log_path,
    measurement_main,
    median,
    now,
    pct,
    processes,
    python,
    spawn,
    wait_until,
)

NAME = "Absurd"
QUEUE = "bench"
COMPLETED = f"SELECT count(*) FROM absurd.t_{QUEUE} WHERE state = 'completed'"
HANG = os.environ.get("BENCH_HANG") == "1"


def version() -> str:
    from importlib.metadata import version as v

    return v("absurd-sdk")


async def _noop(i: int) -> int:
    return i + 1


async def _mark() -> float:
    return time.perf_counter()


async def _maybe_hang(i: int) -> int:
    if HANG:
        await asyncio.sleep(3600)
    return i + 1


async def three_steps(params: Any, ctx: Any) -> int:
    x = params["x"]
    x = await ctx.step("noop", lambda: _noop(x))
    x = await ctx.step("noop", lambda: _noop(x))
    return int(await ctx.step("noop", lambda: _noop(x)))


async def many_steps(params: Any, ctx: Any) -> int:
    x = 0
    for _ in range(params["n"]):
        x = await ctx.step("noop", lambda x=x: _noop(x))
    return x


async def first_step(params: Any, ctx: Any) -> float:
    return float(await ctx.step("mark", _mark))


async def recovery_wf(params: Any, ctx: Any) -> int:
    x = params["x"]
    x = await ctx.step("noop", lambda: _noop(x))
    x = await ctx.step("hang", lambda: _maybe_hang(x))
    return int(await ctx.step("noop", lambda: _noop(x)))


TASKS = {"three_steps": three_steps, "many_steps": many_steps, "first_step": first_step,
         "recovery_wf": recovery_wf}


def app(url: str) -> AsyncAbsurd:
    client = AsyncAbsurd(url, queue_name=QUEUE)
    for name, fn in TASKS.items():
        client.register_task(name=name)(fn)
    return client


def absurdctl() -> str:
    found = shutil.which("absurdctl") or str(Path(sys.executable).parent / "absurdctl")
    return found


async def install_schema(url: str) -> None:
    """``absurdctl init`` (the SQL bundled in the absurdctl package; runs psql), then create the queue."""
    done = await asyncio.to_thread(subprocess.run, [absurdctl(), "init", "-d", url], capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"absurdctl init failed: {done.stderr.decode()[-500:]}")
    client = app(url)
    await client.create_queue(QUEUE)
    await client.close()


def available() -> str | None:
    """None if Absurd can run here, else why not."""
    if not Path(absurdctl()).exists():
        return "absurdctl (which ships Absurd's SQL schema) is not installed: pip install absurdctl"
    if shutil.which("psql") is None:
        return "absurdctl init needs the psql client"
    return None


# -- worker process ----------------------------------------------------------------------------------------------


async def worker(url: str, concurrency: int = 16, claim_timeout: int = 120) -> dict:
    client = app(url)
    loop = asyncio.get_running_loop()
    task = loop.create_task(client.start_worker(concurrency=concurrency, claim_timeout=claim_timeout))
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    print("READY", flush=True)
    try:
        await task
    except asyncio.CancelledError:
        pass
    return {}


def worker_cmd(url: str, concurrency: int, claim_timeout: int = 120) -> list[str]:
    import json

    return [python(), "-m", "benchmarks.peer_absurd", "worker", "--url", url, "--params",
            json.dumps({"concurrency": concurrency, "claim_timeout": claim_timeout})]


async def _wait_ready(logs: list[str], timeout: float = 60.0) -> None:
    async def ready() -> bool:
        return all(os.path.exists(log) and "READY" in open(log).read() for log in logs)

    await wait_until(ready, timeout, "Absurd workers to start", every=0.05)


async def _poll_result(client: AsyncAbsurd, task_id: str, every: float = 0.005, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        snap = await client.fetch_task_result(task_id)
        if snap is not None and snap.state == "completed":
            return snap.result
        if snap is not None and snap.state in ("failed", "cancelled"):
            raise RuntimeError(f"task {task_id} {snap.state}: {snap.failure}")
        if time.monotonic() > deadline:
            raise TimeoutError(task_id)
        await asyncio.sleep(every)


# -- measurements ------------------------------------------------------------------------------------------------


async def _one(client: AsyncAbsurd, name: str, params: Any) -> None:
    await client.spawn(name, params)
    await client.work_batch(batch_size=1)


async def sequential(url: str, runs: int = 200, steps: int = 100, step_runs: int = 5, budget: float = 60) -> dict:
    await install_schema(url)
    client = app(url)
    try:
        for i in range(10):
            await _one(client, "three_steps", {"x": i})
        times: list[float] = []
        cpu0 = time.process_time()
        deadline = time.monotonic() + budget
        for i in range(runs):
            started = now()
            await _one(client, "three_steps", {"x": i})
            times.append((now() - started) * 1000)
            if time.monotonic() > deadline:
                break
        cpu_wf = (time.process_time() - cpu0) * 1000 / max(1, len(times))
        cpu1 = time.process_time()
        per_step = []
        for _ in range(step_runs):
            started = now()
            await _one(client, "many_steps", {"n": steps})
            per_step.append((now() - started) * 1000 / steps)
            cpu_step = (time.process_time() - cpu1) * 1000 / (steps * max(1, len(per_step)))
    finally:
        await client.close()
    return {"median_ms": median(times), "p95_ms": pct(times, 0.95), "n": len(times),
            "per_step_ms": median(per_step), "step_runs": len(per_step), "steps": steps,
            "cpu_per_workflow_ms": cpu_wf, "cpu_per_step_ms": cpu_step}


async def throughput(url: str, count: int = 2000, workers: int = 1, concurrency: int = 500,
                     mode: str = "start") -> dict:
    """As ``peer_durable.throughput``. Absurd's spawn takes no delay, so ``mode="due"`` spawns every task before
    the workers start, and the clock starts when all of them report READY (just before their first claim)."""
    await install_schema(url)
    if mode == "due":
        clients = [app(url) for _ in range(4)]

        async def spawn_all(client: AsyncAbsurd, ids: range) -> None:
            for i in ids:
                await client.spawn("three_steps", {"x": i})

        begun = now()
        try:
            await asyncio.gather(*(spawn_all(c, range(k, count, 4)) for k, c in enumerate(clients)))
        finally:
            for c in clients:
                await c.close()
        all_started = now()
        with processes() as procs:
            logs = [log_path(f"absurd-worker{i}") for i in range(workers)]
            for log in logs:
                procs.append(spawn(worker_cmd(url, concurrency), log=log))
            await _wait_ready(logs)
            started = now()
            async with Poller(url) as poll:
                done = await poll.until(COMPLETED, count, timeout=900, every=0.05)
        elapsed = done - started
        return {"wf_per_s": count / elapsed, "steps_per_s": 3 * count / elapsed, "seconds": elapsed,
                "start_seconds": all_started - begun, "count": count, "workers": workers, "late": False}
    with processes() as procs:
        logs = [log_path(f"absurd-worker{i}") for i in range(workers)]
        for log in logs:
            procs.append(spawn(worker_cmd(url, concurrency), log=log))
        await _wait_ready(logs)
        clients = [app(url) for _ in range(4)]  # spawn over 4 connections

        async def spawn_some(client: AsyncAbsurd, ids: range) -> None:
            for i in ids:
                await client.spawn("three_steps", {"x": i})

        try:
            async with Poller(url) as poll:
                started = now()
                await asyncio.gather(*(spawn_some(c, range(k, count, 4)) for k, c in enumerate(clients)))
                all_started = now()
                done = await poll.until(COMPLETED, count, timeout=900, every=0.05)
        finally:
            for c in clients:
                await c.close()
    elapsed = done - started
    return {"wf_per_s": count / elapsed, "steps_per_s": 3 * count / elapsed, "seconds": elapsed,
            "start_seconds": all_started - started, "count": count, "workers": workers}


async def start_latency(url: str, runs: int = 200, budget: float = 60) -> dict:
    await install_schema(url)
    with processes() as procs:
        log = log_path("absurd-worker")
        procs.append(spawn(worker_cmd(url, 16), log=log))
        await _wait_ready([log])
        client = app(url)
        try:
            for _ in range(3):
                await _poll_result(client, (await client.spawn("first_step", {}))["task_id"])
            lat: list[float] = []
            deadline = time.monotonic() + budget
            for _ in range(runs):
                spawned = await client.spawn("first_step", {})
                returned = now()
                ran = await _poll_result(client, spawned["task_id"])
                lat.append((ran - returned) * 1000)
                if time.monotonic() > deadline:
                    break
        finally:
            await client.close()
    return {"median_ms": median(lat), "p99_ms": pct(lat, 0.99), "n": len(lat)}


async def recovery(url: str, inflight: int = 1000, lease: float = 5.0) -> dict:
    """Worker A claims ``inflight`` tasks (claim timeout ``lease`` s) and hangs in their second step; kill -9 A,
    start worker B at once: B's claims first fail runs whose claim expired (a new attempt), then claim them."""
    await install_schema(url)
    claim = max(1, round(lease))
    # Spawn every task before worker A starts: Absurd's worker loop awaits its whole claimed batch before it
    # claims again, so a batch that hangs would leave tasks spawned later unclaimed.
    clients = [app(url) for _ in range(4)]

    async def spawn_some(client: AsyncAbsurd, ids: range) -> None:
        for i in ids:
            await client.spawn("recovery_wf", {"x": i})

    try:
        await asyncio.gather(*(spawn_some(c, range(k, inflight, 4)) for k, c in enumerate(clients)))
    finally:
        for c in clients:
            await c.close()
    with processes() as procs:
        log = log_path("absurd-worker-a")
        a = spawn(worker_cmd(url, inflight, claim), env={"BENCH_HANG": "1"}, log=log)
        procs.append(a)
        await _wait_ready([log])
        async with Poller(url) as poll:
            await poll.until(f"SELECT count(DISTINCT task_id) FROM absurd.c_{QUEUE}", inflight, 600, every=0.1)
            await asyncio.sleep(0.2)
            killed = now()
            kill9(a)
            procs.append(spawn(worker_cmd(url, inflight, claim), log=log_path("absurd-worker-b")))
            first = await poll.until(COMPLETED, 1, timeout=600, every=0.05)
            done = await poll.until(COMPLETED, inflight, timeout=900, every=0.05)
    return {"seconds": done - killed, "first_seconds": first - killed, "lease_seconds": claim,
            "inflight": inflight}


async def statements(url: str, n: int = 50) -> dict:
    await install_schema(url)
    return await pg_stats.statements("benchmarks.peer_absurd", url, n)


async def session(url: str, steps: int = 3, n: int = 0) -> dict:
    client = app(url)
    try:
        await client._ensure_connected()
        for i in range(n):
            if steps == 3:
                await _one(client, "three_steps", {"x": i})
            else:
                await _one(client, "many_steps", {"n": steps})
    finally:
        await client.close()
    return {}


METRICS = {"sequential": sequential, "throughput": throughput, "start_latency": start_latency,
           "recovery": recovery, "statements": statements, "session": session, "worker": worker}

if __name__ == "__main__":
    measurement_main(METRICS)
