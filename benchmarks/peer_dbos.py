"""DBOS Transact's side of the comparison (its Postgres system database, async API), same measurements as
``peer_durable``. Cross-process work goes through a DBOS queue: worker processes (``python -m
benchmarks.peer_dbos worker``) launch DBOS and dequeue from queue ``bench`` (DBOS's default polling interval,
1 s); the client enqueues with ``DBOSClient``. One-at-a-time figures run in one process
(``DBOS.start_workflow_async`` + ``get_result``), DBOS's fast path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from dbos import DBOS, DBOSClient

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

NAME = "DBOS"
QUEUE = "bench"
COMPLETED = f"SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS' AND queue_name = '{QUEUE}'"
HANG = os.environ.get("BENCH_HANG") == "1"


def version() -> str:
    from importlib.metadata import version as v

    return v("dbos")


@DBOS.step()
async def noop(i: int) -> int:
    return i + 1


@DBOS.step()
async def mark() -> float:
    return time.perf_counter()


@DBOS.step()
async def maybe_hang(i: int) -> int:
    if HANG:
        await asyncio.sleep(3600)
    return i + 1


@DBOS.workflow()
async def three_steps(x: int) -> int:
    x = await noop(x)
    x = await noop(x)
    return await noop(x)


@DBOS.workflow()
async def many_steps(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await noop(x)
    return x


@DBOS.workflow()
async def first_step() -> float:
    return await mark()


@DBOS.workflow()
async def recovery_wf(x: int) -> int:
    x = await noop(x)
    x = await maybe_hang(x)
    return await noop(x)


def _configure(url: str, executor_id: str | None = None) -> None:
    config: dict[str, Any] = {"name": "bench", "system_database_url": url, "log_level": "WARNING"}
    if executor_id:
        config["executor_id"] = executor_id
    DBOS(config=config)  # type: ignore[arg-type]


async def _launch(url: str, executor_id: str | None = None) -> None:
    _configure(url, executor_id)
    await asyncio.to_thread(DBOS.launch)


# -- worker process ----------------------------------------------------------------------------------------------


async def worker(url: str, concurrency: int | None = None, executor_id: str | None = None) -> dict:
    """Launch DBOS, register and listen to queue ``bench``, print READY, serve until SIGTERM."""
    await _launch(url, executor_id)
    await DBOS.register_queue_async(QUEUE, worker_concurrency=concurrency)
    print("READY", flush=True)
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    DBOS.destroy(workflow_completion_timeout_sec=0)
    return {}


def worker_cmd(url: str, concurrency: int | None = None, executor_id: str | None = None) -> list[str]:
    import json

    return [python(), "-m", "benchmarks.peer_dbos", "worker", "--url", url, "--params",
            json.dumps({"concurrency": concurrency, "executor_id": executor_id})]


async def _wait_ready(url: str, logs: list[str], timeout: float = 120.0) -> None:
    async def ready() -> bool:
        return all(os.path.exists(log) and "READY" in open(log).read() for log in logs)

    await wait_until(ready, timeout, "DBOS workers to launch", every=0.1)


async def _client(url: str) -> DBOSClient:
    return await asyncio.to_thread(DBOSClient, system_database_url=url)


async def _enqueue(client: DBOSClient, workflow: str, *args: Any) -> Any:
    return await client.enqueue_async({"queue_name": QUEUE, "workflow_name": workflow}, *args)


# -- measurements ------------------------------------------------------------------------------------------------


async def sequential(url: str, runs: int = 200, steps: int = 100, step_runs: int = 5, budget: float = 60) -> dict:
    await _launch(url)
    try:
        for i in range(10):
            await (await DBOS.start_workflow_async(three_steps, i)).get_result()
        times: list[float] = []
        cpu0 = time.process_time()
        deadline = time.monotonic() + budget
        for i in range(runs):
            started = now()
            await (await DBOS.start_workflow_async(three_steps, i)).get_result()
            times.append((now() - started) * 1000)
            if time.monotonic() > deadline:
                break
        cpu_wf = (time.process_time() - cpu0) * 1000 / max(1, len(times))
        cpu1 = time.process_time()
        per_step = []
        for _ in range(step_runs):
            started = now()
            await (await DBOS.start_workflow_async(many_steps, steps)).get_result()
            per_step.append((now() - started) * 1000 / steps)
            cpu_step = (time.process_time() - cpu1) * 1000 / (steps * max(1, len(per_step)))
    finally:
        DBOS.destroy()
    return {"median_ms": median(times), "p95_ms": pct(times, 0.95), "n": len(times),
            "per_step_ms": median(per_step), "step_runs": len(per_step), "steps": steps,
            "cpu_per_workflow_ms": cpu_wf, "cpu_per_step_ms": cpu_step}


async def throughput(url: str, count: int = 2000, workers: int = 1, concurrency: int = 500,
                     mode: str = "start") -> dict:
    """As ``peer_durable.throughput``; ``mode="due"`` enqueues with ``delay_seconds`` up to one common time."""
    if mode == "due":
        return await _throughput_due(url, count, workers, concurrency)
    with processes() as procs:
        logs = [log_path(f"dbos-worker{i}") for i in range(workers)]
        procs.append(spawn(worker_cmd(url, concurrency), log=logs[0]))
        await _wait_ready(url, logs[:1])  # the first one creates the schema
        for i in range(1, workers):
            procs.append(spawn(worker_cmd(url, concurrency), log=logs[i]))
        await _wait_ready(url, logs)
        client = await _client(url)
        try:
            async with Poller(url) as poll:
                started = now()
                await asyncio.gather(*(_enqueue(client, "three_steps", i) for i in range(count)))
                all_started = now()
                done = await poll.until(COMPLETED, count, timeout=900, every=0.05)
        finally:
            client.destroy()
    elapsed = done - started
    return {"wf_per_s": count / elapsed, "steps_per_s": 3 * count / elapsed, "seconds": elapsed,
            "start_seconds": all_started - started, "count": count, "workers": workers}


async def _throughput_due(url: str, count: int, workers: int, concurrency: int) -> dict:
    from .peer_durable import due_delay

    with processes() as procs:
        logs = [log_path(f"dbos-worker{i}") for i in range(workers)]
        procs.append(spawn(worker_cmd(url, concurrency), log=logs[0]))
        await _wait_ready(url, logs[:1])
        for i in range(1, workers):
            procs.append(spawn(worker_cmd(url, concurrency), log=logs[i]))
        await _wait_ready(url, logs)
        client = await _client(url)
        due = time.time() + due_delay(count)

        def enqueue_due(i: int) -> None:
            delay = max(0.0, due - time.time())
            options = {"queue_name": QUEUE, "workflow_name": "three_steps", "delay_seconds": delay}
            client.enqueue(options, i)  # type: ignore[arg-type]

        try:
            async with Poller(url) as poll:
                begun = now()
                await asyncio.gather(*(asyncio.to_thread(enqueue_due, i) for i in range(count)))
                all_started = now()
                late = time.time() > due
                started = now() + (due - time.time())
                done = await poll.until(COMPLETED, count, timeout=900, every=0.05)
        finally:
            client.destroy()
    elapsed = done - started
    return {"wf_per_s": count / elapsed, "steps_per_s": 3 * count / elapsed, "seconds": elapsed,
            "start_seconds": all_started - begun, "count": count, "workers": workers, "late": late}


async def start_latency(url: str, runs: int = 200, budget: float = 60) -> dict:
    with processes() as procs:
        log = log_path("dbos-worker")
        procs.append(spawn(worker_cmd(url, 100), log=log))
        await _wait_ready(url, [log])
        client = await _client(url)
        try:
            for _ in range(3):
                await (await _enqueue(client, "first_step")).get_result(polling_interval_sec=0.005)
            lat: list[float] = []
            deadline = time.monotonic() + budget
            for _ in range(runs):
                handle = await _enqueue(client, "first_step")
                returned = now()
                ran = await handle.get_result(polling_interval_sec=0.005)
                lat.append((ran - returned) * 1000)
                if time.monotonic() > deadline:
                    break
        finally:
            client.destroy()
    return {"median_ms": median(lat), "p99_ms": pct(lat, 0.99), "n": len(lat)}


async def recovery(url: str, inflight: int = 1000, lease: float = 5.0) -> dict:
    """Worker A (executor id ``bench-a``) dequeues ``inflight`` runs and hangs in their second step; kill -9 A
    and launch a process with the same executor id: DBOS recovers an executor's PENDING workflows on launch
    (there is no lease: another executor id would never take them over without DBOS Conductor)."""
    with processes() as procs:
        log = log_path("dbos-worker-a")
        a = spawn(worker_cmd(url, None, "bench-a"), env={"BENCH_HANG": "1"}, log=log)
        procs.append(a)
        await _wait_ready(url, [log])
        client = await _client(url)
        try:
            await asyncio.gather(*(_enqueue(client, "recovery_wf", i) for i in range(inflight)))
        finally:
            client.destroy()
        async with Poller(url) as poll:
            await poll.until("SELECT count(DISTINCT workflow_uuid) FROM dbos.operation_outputs", inflight,
                             timeout=600, every=0.1)
            await asyncio.sleep(0.2)
            killed = now()
            kill9(a)
            procs.append(spawn(worker_cmd(url, None, "bench-a"), log=log_path("dbos-worker-b")))
            total = "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
            first = await poll.until(total, 1, timeout=600, every=0.05)
            done = await poll.until(total, inflight, timeout=900, every=0.05)
    return {"seconds": done - killed, "first_seconds": first - killed, "lease_seconds": None,
            "inflight": inflight}


async def statements(url: str, n: int = 50) -> dict:
    return await pg_stats.statements("benchmarks.peer_dbos", url, n)


async def session(url: str, steps: int = 3, n: int = 0) -> dict:
    await _launch(url)
    try:
        for i in range(n):
            if steps == 3:
                await (await DBOS.start_workflow_async(three_steps, i)).get_result()
            else:
                await (await DBOS.start_workflow_async(many_steps, steps)).get_result()
    finally:
        DBOS.destroy()
    return {}


METRICS = {"sequential": sequential, "throughput": throughput, "start_latency": start_latency,
           "recovery": recovery, "statements": statements, "session": session, "worker": worker}

if __name__ == "__main__":
    measurement_main(METRICS)
