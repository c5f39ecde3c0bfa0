"""Bulk creation on every store: ``Store.create_runs`` behaves as ``create_run`` called for each item in order, and
``Engine.start_many`` starts many runs that complete like runs from ``start``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

import durable
from history import NewRun, RecordedEvent, Store

from . import wf_samples as wf


def new_run(run_id: str | None = None, **fields: Any) -> NewRun:
    return NewRun(
        id=run_id or uuid.uuid4().hex,
        workflow="wf",
        input=msgspec.Raw(msgspec.json.encode({"n": 1})),
        random_seed=42,
        **fields,
    )


async def test_create_runs_creates_each_run_with_run_started_as_event_one(store: Store) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    news = [
        new_run(),
        new_run(queue="q", priority=3, parent_id="parent", dedup_key="k1"),
        new_run(wake_at=later, deadline=later, continued_from="before"),
    ]
    results = await store.create_runs(news)
    assert [created for _, created in results] == [True, True, True]
    assert [run.id for run, _ in results] == [new.id for new in news]
    for (run, _), new in zip(results, news, strict=True):
        assert await store.get_run(new.id) == run
        assert (run.status, run.next_seq, run.input, run.queue, run.priority) == (
            "pending",
            2,
            b'{"n":1}',
            new.queue,
            new.priority,
        )
        assert (run.parent_id, run.wake_at, run.continued_from, run.dedup_key) == (
            new.parent_id,
            new.wake_at,
            new.continued_from,
            new.dedup_key,
        )
        assert await store.read_history(new.id) == [RecordedEvent(seq=1, at=run.created_at, event=new.started_event())]
    assert await store.create_runs([]) == []


async def test_create_runs_writes_the_same_run_started_as_create_run(store: Store) -> None:
    fields: dict[str, Any] = {"parent_id": "p", "deadline": datetime.now(UTC), "continued_from": "c", "queue": "q"}
    one, _ = await store.create_run(new_run("one", **fields))
    [(many, _)] = await store.create_runs([new_run("many", **fields)])
    [single] = await store.read_history("one")
    [bulk] = await store.read_history("many")
    assert msgspec.structs.replace(bulk.event, run_id="one") == single.event
    assert (bulk.seq, bulk.at, single.at) == (1, many.created_at, one.created_at)


async def test_create_runs_returns_existing_runs_for_taken_ids_and_dedup_keys(store: Store) -> None:
    by_id, _ = await store.create_run(new_run("taken"))
    by_key, _ = await store.create_run(new_run("keyed", dedup_key="k"))
    results = await store.create_runs([new_run("taken"), new_run("fresh"), new_run(dedup_key="k")])
    assert [(run.id, created) for run, created in results] == [("taken", False), ("fresh", True), ("keyed", False)]
    assert results[0][0] == by_id and results[2][0] == by_key
    assert len(await store.read_history("taken")) == 1


async def test_within_a_batch_the_first_item_with_an_id_or_a_dedup_key_wins(store: Store) -> None:
    await store.create_run(new_run("old"))  # no dedup key
    results = await store.create_runs(
        [
            new_run("a", dedup_key="k"),
            new_run("a", priority=9),  # same id as the first: its run
            new_run("b", dedup_key="k"),  # same key as the first: its run
            new_run("old", dedup_key="k2"),  # an existing id: that run (k2 stays free)
            new_run("c", dedup_key="k2"),  # k2 is free: created, as create_run in order would
            new_run("c"),  # same id as the previous item: its run
        ]
    )
    assert [(run.id, created) for run, created in results] == [
        ("a", True),
        ("a", False),
        ("a", False),
        ("old", False),
        ("c", True),
        ("c", False),
    ]
    assert results[1][0] == results[0][0] and results[0][0].priority == 0
    assert results[5][0] == results[4][0] and results[4][0].dedup_key == "k2"
    assert await store.get_run("b") is None
    assert (await store.list_runs(limit=10)).runs.__len__() == 3


async def test_concurrent_batches_of_the_same_ids_create_each_run_once(store: Store) -> None:
    pair = [new_run("x"), new_run("y", dedup_key="k")]
    batches = await asyncio.gather(*(store.create_runs(pair[:: 1 if i % 2 else -1]) for i in range(4)))
    for index, run_id in enumerate(["x", "y"]):
        outcomes = [batch[index if i % 2 else 1 - index] for i, batch in enumerate(batches)]
        assert sorted(created for _, created in outcomes) == [False] * 3 + [True]
        assert {run.id for run, _ in outcomes} == {run_id}
        assert len(await store.read_history(run_id)) == 1


async def test_a_run_of_a_batch_is_claimable_at_once(store: Store) -> None:
    results = await store.create_runs([new_run() for _ in range(5)])
    claims = await store.claim("w1", ["wf"], 1, 30)
    assert len(claims) == 1
    assert claims[0].run.id in {run.id for run, _ in results}
    assert [type(r.event).__name__ for r in claims[0].history] == ["RunStarted"]


# --- the engine ------------------------------------------------------------------------------------------------


async def test_start_many_starts_runs_that_complete_with_their_results(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        handles = await engine.start_many(wf.sequence, [(i % 4,) for i in range(200)], queue="default")
        assert len({h.id for h in handles}) == 200 and all(h.created for h in handles)
        results = [await h.result(timeout=30) for h in handles]
    assert results == [sum(range(i % 4)) for i in range(200)]


async def test_start_many_checks_every_input_before_creating_any(engine_url: str) -> None:
    async with durable.Engine(engine_url, worker=False) as engine:
        with pytest.raises(TypeError):
            await engine.start_many(wf.sequence, [(1,), (2,), (1, 2)])
        with pytest.raises(TypeError):
            await engine.start_many(wf.sequence, [(1,), 2])  # type: ignore[list-item]
        assert (await engine.list_executions()).items == []
        assert await engine.start_many(wf.sequence, []) == []
