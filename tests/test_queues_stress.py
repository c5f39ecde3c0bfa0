"""Queues under load with real worker processes on PostgreSQL: 4 workers, 5,000 runs, 3 queues with priorities,
a global concurrency limit and a rate limit. Every run completes exactly once, no limit is ever exceeded, and
priority order holds within each queue; pausing a queue stops claims on every worker."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import durable
from history import StepCompleted, StepScheduled

from . import wf_stress

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

QUEUES = {"fast": 3000, "limited": 1000, "rated": 1000}
GLOBAL_LIMIT = 3  # queue "limited"
RATE = (150, 1.0)  # queue "rated": 150 first starts per second


def _start_workers(url: str, log: Path, count: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "DURABLE_STRESS_LOG": str(log), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "durable", "--database-url", url, "worker", "tests.wf_stress",
               "--queue", "fast=40", "--queue", "limited=5", "--queue", "rated=40", "--lease-seconds", "10"]
    return [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(count)]


@pytest.fixture
def stress_log(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "executions.log"


@pytest.fixture
async def client(postgres_url: str) -> AsyncIterator[durable.Engine]:
    async with durable.Engine(postgres_url, worker=False) as engine:
        yield engine


def _stop(workers: list[subprocess.Popen[bytes]]) -> list[bytes]:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    errors = []
    for worker in workers:
        try:
            _, stderr = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            _, stderr = worker.communicate()
        errors.append(stderr)
    return errors


def _max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, delta in points:
        current += delta
        peak = max(peak, current)
    return peak


async def test_four_workers_five_thousand_runs_three_queues(
    postgres_url: str, client: durable.Engine, stress_log: Path
) -> None:
    for name in QUEUES:
        await client.queues.pause(name)
    await client.queues.configure("limited", global_concurrency=GLOBAL_LIMIT)
    await client.queues.configure("rated", rate_limit=RATE[0], per=timedelta(seconds=RATE[1]))
    runs: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for name, count in QUEUES.items():
        for i in range(count):
            priority = i % 3
            handle = await client.start(wf_stress.stress, f"{name}-{i}", 0.002, queue=name, priority=priority)
            runs[name].append((handle.id, priority))
    workers = _start_workers(postgres_url, stress_log, 4)
    try:
        for name in QUEUES:
            await client.queues.resume(name)
        for name in QUEUES:
            for run_id, _ in runs[name]:
                assert await client.get_handle(run_id).result(timeout=300) is not None
    finally:
        errors = _stop(workers)
    assert all(b"Traceback" not in e for e in errors), errors

    executions = collections.Counter(line.split()[0] for line in stress_log.read_text().splitlines())
    assert len(executions) == 5000 and set(executions.values()) == {1}  # every body ran exactly once

    for name in QUEUES:
        intervals, starts = [], []
        for run_id, priority in runs[name]:
            execution = await client.get_execution(run_id)
            history = await client.get_history(run_id)
            assert [r.seq for r in history] == list(range(1, len(history) + 1))  # gap-free
            assert sum(isinstance(r.event, StepScheduled) for r in history) == 1  # recorded once
            assert sum(isinstance(r.event, StepCompleted) for r in history) == 1
            intervals.append((execution.started_at, execution.finished_at))
            starts.append((execution.started_at, priority))
        if name == "limited":
            assert _max_overlap(intervals) <= GLOBAL_LIMIT
        if name == "rated":
            first = sorted(s for s, _ in starts)
            for i, begin in enumerate(first):
                window = [s for s in first[i:] if s - begin < timedelta(seconds=RATE[1])]
                assert len(window) <= RATE[0]
        # Priority order: a claim takes the highest priorities first, so the earliest third of the starts is
        # (almost all) priority 2 and the median start of each priority comes before the next lower one's.
        # Concurrent claim transactions stamp started_at with their own start time, hence "almost".
        by_time = sorted(starts)
        first_third = [p for _, p in by_time[: len(by_time) // 3]]
        assert first_third.count(2) >= 0.9 * len(first_third), collections.Counter(first_third)
        medians = {p: sorted(s for s, q in starts if q == p)[len(starts) // 6] for p in (0, 1, 2)}
        assert medians[2] <= medians[1] <= medians[0]


async def test_pausing_a_queue_stops_claims_on_every_worker(
    postgres_url: str, client: durable.Engine, stress_log: Path
) -> None:
    workers = _start_workers(postgres_url, stress_log, 2)
    try:
        await client.queues.pause("fast")
        handles = [await client.start(wf_stress.stress, f"p-{i}", 0.0, queue="fast") for i in range(40)]
        await asyncio.sleep(2.0)  # longer than a worker's poll interval: every worker had its chance
        stats = await client.queues.stats("fast")
        assert (stats.running, stats.pending) == (0, 40)
        assert not stress_log.exists()
        await client.queues.resume("fast")
        for handle in handles:
            await handle.result(timeout=60)
    finally:
        _stop(workers)
    assert len(stress_log.read_text().splitlines()) == 40
