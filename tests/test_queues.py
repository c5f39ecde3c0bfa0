"""Queues on every store: priority, pause, per-worker and global concurrency, rate limits, dedup, delayed starts,
stats."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

import durable

from . import wf_queues as wf


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    wf.ORDER.clear()
    wf.ACTIVE.update(now=0, max=0)


async def test_priority_first_then_fifo_and_pause_resume(engine_url: str) -> None:
    async with durable.Engine(engine_url, queues={"orders": 1}, concurrency=1) as engine:
        await engine.queues.pause("orders")
        runs = []
        for tag, priority in [("low-1", 0), ("high-1", 5), ("low-2", 0), ("high-2", 5), ("mid", 2)]:
            runs.append(await engine.start(wf.q_record, tag, queue="orders", priority=priority))
        await asyncio.sleep(0.3)
        assert wf.ORDER == []  # paused: nothing claimed
        stats = await engine.queues.stats("orders")
        assert (stats.pending, stats.running, stats.config.paused) == (5, 0, True)
        await engine.queues.resume("orders")
        for run in runs:
            await run.result(timeout=20)
    assert wf.ORDER == ["high-1", "high-2", "mid", "low-1", "low-2"]


async def test_a_worker_serves_only_its_queues_with_its_concurrency(engine_url: str) -> None:
    async with durable.Engine(engine_url, queues={"ai": 2}) as engine:
        other = await engine.start(wf.q_record, "elsewhere", queue="batch")
        runs = [await engine.start(wf.q_busy, 0.1, queue="ai") for _ in range(6)]
        for run in runs:
            await run.result(timeout=20)
        assert (await engine.get_execution(other.id)).status == "pending"
    assert wf.ACTIVE["max"] == 2


async def test_global_concurrency_holds_across_workers(engine_url: str, tmp_path) -> None:
    if engine_url == "memory://":
        pytest.skip("two engines share a database only on SQLite or Postgres")
    async with durable.Engine(engine_url, queues={"gpu": 5}) as first, durable.Engine(
        engine_url, queues={"gpu": 5}
    ) as second:
        await first.queues.configure("gpu", global_concurrency=3)
        runs = [await first.start(wf.q_busy, 0.15, queue="gpu") for _ in range(12)]
        for run in runs:
            await run.result(timeout=30)
        executed_by = {(await first.get_execution(run.id)).id for run in runs}
        del second
    assert len(executed_by) == 12
    assert wf.ACTIVE["max"] <= 3


async def test_rate_limit_spaces_first_starts(engine_url: str) -> None:
    async with durable.Engine(engine_url, queues={"mail": 10}) as engine:
        await engine.queues.configure("mail", rate_limit=3, per=timedelta(seconds=0.5))
        runs = [await engine.start(wf.q_record, f"m{i}", queue="mail") for i in range(7)]
        for run in runs:
            await run.result(timeout=30)
        starts = sorted([(await engine.get_execution(run.id)).started_at for run in runs])
    for i, first in enumerate(starts):  # no window of 0.5 s holds more than 3 first starts
        in_window = [s for s in starts[i:] if s - first < timedelta(seconds=0.5)]
        assert len(in_window) <= 3, [s.isoformat() for s in starts]


async def test_dedup_key_returns_the_live_run_and_is_free_once_it_finished(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        await engine.queues.pause("default")
        first = await engine.start(wf.q_record, "one", dedup_key="invoice-7")
        second = await engine.start(wf.q_record, "two", dedup_key="invoice-7")
        assert (second.id, second.created) == (first.id, False)
        await engine.queues.resume("default")
        assert await first.result(timeout=20) == "one"
        third = await engine.start(wf.q_record, "three", dedup_key="invoice-7")
        assert third.created and third.id != first.id
        assert await third.result(timeout=20) == "three"


async def test_delayed_start_is_scheduled_and_stats_count_each_state(engine_url: str) -> None:
    async with durable.Engine(engine_url, horizon=0.1) as engine:
        in_an_hour = datetime.now(UTC) + timedelta(hours=1)
        later = await engine.start(wf.q_record, "later", queue="reports", scheduled_at=in_an_hour)
        soon = await engine.start(wf.q_record, "soon", queue="reports", delay=0.3)
        stats = await engine.queues.stats("reports")
        assert (stats.scheduled, stats.pending) == (2, 0)
        assert await soon.result(timeout=20) == "soon"
        assert (await engine.get_execution(later.id)).status == "pending"
        names = [q.name for q in await engine.queues.list()]
    assert "reports" in names


async def test_bad_queue_settings_are_refused(engine_url: str) -> None:
    async with durable.Engine(engine_url, worker=False) as engine:
        with pytest.raises(ValueError, match="global_concurrency must be >= 1"):
            await engine.queues.configure("x", global_concurrency=0)
        with pytest.raises(ValueError, match="needs its period"):
            await engine.queues.configure("x", rate_limit=5)
        with pytest.raises(ValueError, match="delay= or scheduled_at="):
            await engine.start(wf.q_record, "x", delay=1, scheduled_at=datetime.now(UTC))
    with pytest.raises(ValueError, match="queue 'a': concurrency must be an int >= 1"):
        durable.Engine(engine_url, queues={"a": 0})
