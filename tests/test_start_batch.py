"""Runs created together share a round trip, on every store, and nobody can tell but by the speed: concurrent
``Engine.start`` calls (``durable/_start_batch.py``: ids, dedup keys, errors and cancellation behave as with one
commit per start) and a parent's fan-out of children (``create_children``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable
from history import NewRun, RunRecord, Store, decode_payload, open_store

from . import wf_samples as wf


class CountingStore:
    """A real store, with its ``create_run``/``create_runs`` calls counted (and, for one test, one run id that
    the "database" refuses whenever it comes)."""

    def __init__(self, store: Store, refuse: str | None = None) -> None:
        self._store = store
        self._refuse = refuse
        self.batches: list[int] = []  # runs per call, create_run counting 1
        self.down = False  # every create fails as if the connection broke

    def _check(self, news: Sequence[NewRun]) -> None:
        if self.down and self.batches[1:]:  # the first create (alone) goes through, then the database is gone
            raise ConnectionResetError("the connection to the database was lost")
        if self._refuse is not None and any(new.id == self._refuse for new in news):
            raise RuntimeError(f"the database refuses run {self._refuse!r}")

    async def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        self.batches.append(1)
        self._check([new])
        return await self._store.create_run(new)

    async def create_runs(self, news: Sequence[NewRun]) -> list[tuple[RunRecord, bool]]:
        self.batches.append(len(news))
        self._check(news)
        return await self._store.create_runs(news)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def counting(engine_url: str, **options: Any) -> CountingStore:
    return CountingStore(open_store(engine_url), **options)


async def test_concurrent_starts_share_commits_and_each_gets_its_run(engine_url: str) -> None:
    store = counting(engine_url)
    async with durable.Engine(store=store, worker=False) as engine:  # type: ignore[arg-type]
        handles = await asyncio.gather(*(engine.start(wf.sequence, i) for i in range(300)))
        assert len({h.id for h in handles}) == 300 and all(h.created for h in handles)
        assert sum(store.batches) == 300
        if engine_url != "memory://":  # the memory store creates without waiting: no start overlaps another
            assert len(store.batches) < 300 and max(store.batches) > 1  # shared: fewer commits than runs
        for i, handle in enumerate(handles):  # each handle is the run of its own arguments
            run = await engine.store.get_run(handle.id)
            assert run is not None and decode_payload(run.input) == [i]
        one = await engine.start(wf.sequence, 7)  # alone: straight to create_run, as before
    assert store.batches[-1] == 1 and one.created


async def test_ids_and_dedup_keys_shared_within_a_batch_start_one_run_each(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        starts = [engine.start(wf.sequence, 3, workflow_id="order-1") for _ in range(10)]
        starts += [engine.start(wf.sequence, 3, dedup_key="nightly") for _ in range(10)]
        starts += [engine.start(wf.sequence, i) for i in range(10)]
        handles = await asyncio.gather(*starts)
        by_id, by_key, plain = handles[:10], handles[10:20], handles[20:]
        assert {h.id for h in by_id} == {"order-1"} and sum(h.created for h in by_id) == 1
        assert len({h.id for h in by_key}) == 1 and sum(h.created for h in by_key) == 1
        assert len({h.id for h in plain}) == 10 and all(h.created for h in plain)
        assert [await h.result(timeout=30) for h in (by_id[0], by_key[0])] == [3, 3]
        page = await engine.list_executions(workflow="sequence", limit=100)
    assert len(page) == 12


_SPECS = st.lists(
    st.tuples(st.sampled_from([None, "id-a", "id-b"]), st.sampled_from([None, "key-1", "key-2"])),
    min_size=1, max_size=12,
)


def _shape(handles: Sequence[durable.RunHandle]) -> list[tuple[bool, int]]:
    """Each start as (created, index of the first start that got the same run): comparable across stores,
    whatever ids the runs without a workflow_id drew."""
    first: dict[str, int] = {}
    return [(h.created, first.setdefault(h.id, i)) for i, h in enumerate(handles)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=_SPECS)
def test_concurrent_starts_answer_as_the_same_starts_one_after_another(
    tmp_path_factory: pytest.TempPathFactory, specs: list[tuple[str | None, str | None]]
) -> None:
    folder = tmp_path_factory.mktemp("batch")

    async def starts(url: str, together: bool) -> list[tuple[bool, int]]:
        store = CountingStore(open_store(url))
        async with durable.Engine(store=store, worker=False) as engine:  # type: ignore[arg-type]
            calls = [engine.start(wf.sequence, 1, workflow_id=run_id, dedup_key=key) for run_id, key in specs]
            if together:
                handles = list(await asyncio.gather(*calls))
                # The first created alone; the others queued meanwhile and shared one create_runs.
                assert store.batches == [1, len(specs) - 1][: min(len(specs), 2)]
            else:
                handles = [await call for call in calls]
            return _shape(handles)

    together = asyncio.run(starts(f"sqlite:///{folder / 'together.db'}", True))
    in_turn = asyncio.run(starts(f"sqlite:///{folder / 'in_turn.db'}", False))
    assert together == in_turn


async def test_a_run_the_database_refuses_fails_its_own_start_only(engine_url: str) -> None:
    store = counting(engine_url, refuse="refused")
    async with durable.Engine(store=store, worker=False) as engine:  # type: ignore[arg-type]
        first = asyncio.ensure_future(engine.start(wf.sequence, 0))  # in flight: the rest queue behind it
        await asyncio.sleep(0)
        rest = [engine.start(wf.sequence, 1, workflow_id="refused"), *(engine.start(wf.sequence, i) for i in range(5))]
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
    refused = outcomes[1]
    assert isinstance(refused, RuntimeError) and "refuses run 'refused'" in str(refused)
    assert all(isinstance(h, durable.RunHandle) and h.created for h in [outcomes[0], *outcomes[2:]])


async def test_when_the_database_goes_away_a_batch_fails_at_once_not_run_by_run(engine_url: str) -> None:
    if engine_url == "memory://":
        pytest.skip("the memory store creates without waiting: its starts never share a batch")
    store = counting(engine_url)
    async with durable.Engine(store=store, worker=False) as engine:  # type: ignore[arg-type]
        store.down = True
        outcomes = await asyncio.gather(*(engine.start(wf.sequence, i) for i in range(50)), return_exceptions=True)
        store.down = False
    assert isinstance(outcomes[0], durable.RunHandle)  # created before the database went away
    assert all(isinstance(o, ConnectionResetError) for o in outcomes[1:])  # every other start hears why
    assert store.batches == [1, 49, 1, 1]  # the shared create, then two alone failing alike: a shared cause


async def test_a_cancelled_start_leaves_the_others_going(engine_url: str) -> None:
    async with durable.Engine(engine_url, worker=False) as engine:
        tasks = [asyncio.ensure_future(engine.start(wf.sequence, i)) for i in range(40)]
        await asyncio.sleep(0)  # every start has begun: the first creates, the rest wait for the next batch
        for task in tasks[::3]:  # the first (creating alone) among them
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        kept = [o for i, o in enumerate(outcomes) if i % 3]
        assert all(isinstance(h, durable.RunHandle) for h in kept)
        # A cancelled start either ended first (the memory store creates without waiting) or was cancelled.
        assert all(isinstance(o, (asyncio.CancelledError, durable.RunHandle)) for o in outcomes[::3])
        if engine_url != "memory://":
            assert all(isinstance(o, asyncio.CancelledError) for o in outcomes[3::3])  # they were waiting
        for handle in kept:
            assert await engine.store.get_run(handle.id) is not None
        later = await engine.start(wf.sequence, 99)  # nothing is stuck
    assert later.created


@durable.step(name="batch.double")
async def double(x: int) -> int:
    return 2 * x


@durable.workflow(name="batch.child")
async def child(ctx: durable.WorkflowContext, x: int) -> int:
    return await double(x)


@durable.workflow(name="batch.fan_out")
async def fan_out(ctx: durable.WorkflowContext, n: int) -> list[int]:
    return list(await asyncio.gather(*(ctx.call_workflow(child, i) for i in range(n))))


async def test_a_fan_out_creates_its_children_in_one_round_trip(engine_url: str) -> None:
    store = counting(engine_url)
    async with durable.Engine(store=store, workflows=[fan_out, child]) as engine:  # type: ignore[arg-type]
        parent = await engine.start(fan_out, 25)
        assert await parent.result(timeout=60) == [2 * i for i in range(25)]
        children = await engine.store.list_children(parent.id)
    assert len(children) == 25 and {c.parent_id for c in children} == {parent.id}
    assert 25 in store.batches  # every child in one create_runs
    assert sum(store.batches) == 26  # the parent's start, then each child once


@pytest.mark.parametrize("option", ["workflow_id", "dedup_key", "queue"])
async def test_a_nul_character_in_an_id_key_or_queue_is_refused_on_every_store(engine_url: str, option: str) -> None:
    async with durable.Engine(engine_url, worker=False) as engine:
        with pytest.raises(ValueError, match=f"{option} must be a non-empty string without NUL characters"):
            await engine.start(wf.sequence, 1, **{option: "a\x00b"})
        with pytest.raises(ValueError, match=f"{option} must be valid Unicode text"):
            await engine.start(wf.sequence, 1, **{option: "a\ud800b"})
        page = await engine.list_executions()
    assert len(page) == 0  # nothing was created
