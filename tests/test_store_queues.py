"""The queue surface of the Store contract, against every store (memory, SQLite, PostgreSQL): dedup keys, claims
of one queue, paused queues, global concurrency and rate limits shared by every claimer, queue settings, the
list of queues and their stats. ``MemoryStore`` is the reference; the database stores must behave like it, and
two "processes" on one database must never exceed a limit together. Also: a schema 2 database upgrades to 3.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

import history
from history import COMPLETED, UNSET, QueueConfig, QueueStats, RunCompleted, Store
from history._sql import load_migrations

from .conftest import with_database
from .test_store_contract import NewStore, append, new_run, now, raw, step
from .test_store_databases import VERSIONS

LATER = datetime(2031, 1, 1, tzinfo=UTC)


def versions_after(version: int) -> list[int]:
    """The schema versions an upgrade from ``version`` applies (every later migration shipped)."""
    return [m.version for m in load_migrations("postgres") if m.version > version]


async def create(store: Store, count: int, queue: str = "default", **fields: object) -> list[str]:
    """``count`` runs of workflow "wf" on ``queue``, created in order (FIFO), their ids in that order."""
    ids = []
    for _ in range(count):
        run, created = await store.create_run(new_run(queue=queue, **fields))  # type: ignore[arg-type]
        assert created
        ids.append(run.id)
    return ids


async def claimed(store: Store, limit: int, queue: str | None = None, worker: str = "w1") -> list[str]:
    return [c.run.id for c in await store.claim(worker, ["wf"], limit, 30, queue=queue)]


def shared(store_kind: str) -> None:
    if store_kind == "memory":
        pytest.skip("a memory store cannot be shared between instances")


# --- dedup keys ----------------------------------------------------------------------------------------------


async def test_a_dedup_key_returns_the_unfinished_run_that_has_it(store: Store) -> None:
    first, created = await store.create_run(new_run(dedup_key="invoice-1"))
    again, created_again = await store.create_run(new_run(dedup_key="invoice-1", workflow="other"))
    assert created and not created_again
    assert again == first and again.dedup_key == "invoice-1"
    other, created_other = await store.create_run(new_run(dedup_key="invoice-2"))
    assert created_other and other.id != first.id
    assert len(await store.read_history(first.id)) == 1


async def test_a_finished_run_frees_its_dedup_key(store: Store) -> None:
    first, _ = await store.create_run(new_run(dedup_key="k"))
    [claim] = await store.claim("w1", ["wf"], 1, 30)
    assert await store.append([append(claim, [RunCompleted(result=raw(1))], status=COMPLETED)]) == [None]
    second, created = await store.create_run(new_run(dedup_key="k"))
    assert created and second.id != first.id and second.dedup_key == "k"
    third, created_third = await store.create_run(new_run(dedup_key="k"))
    assert not created_third and third == second
    assert (await store.get_run(first.id)).dedup_key == "k"  # type: ignore[union-attr]


async def test_the_run_id_wins_over_the_dedup_key(store: Store) -> None:
    keyed, _ = await store.create_run(new_run("a", dedup_key="k"))
    named, _ = await store.create_run(new_run("b"))
    again, created = await store.create_run(new_run("b", dedup_key="k"))
    assert not created and again == named
    again, created = await store.create_run(new_run("c", dedup_key="k"))
    assert not created and again == keyed
    assert await store.get_run("c") is None


async def test_concurrent_creates_with_one_dedup_key_create_one_run(
    store: Store, store_kind: str, new_store: NewStore
) -> None:
    stores = [store] if store_kind == "memory" else [store, await new_store()]
    results = await asyncio.gather(
        *(stores[i % len(stores)].create_run(new_run(f"r{i}", dedup_key="once")) for i in range(8))
    )
    assert sorted(created for _, created in results) == [False] * 7 + [True]
    assert len({run.id for run, _ in results}) == 1
    [winner] = [run for run, created in results if created]
    assert {run for run, _ in results} == {winner}
    assert [r.id for r in (await store.list_runs()).runs] == [winner.id]


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_postgres_create_run_waits_for_a_concurrent_create_of_its_key(postgres_url: str, outcome: str) -> None:
    # The other create has inserted the key but not committed: this create waits for it, and then either finds
    # its run (committed after this statement's snapshot: read again) or creates its own (rolled back).
    store = history.open_store(postgres_url)
    await store.open()
    other = await asyncpg.connect(postgres_url)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute(
            "INSERT INTO durable_runs (id, workflow, status, input, created_at, updated_at, next_seq, dedup_key) "
            "VALUES ('first', 'wf', 'pending', '1', now(), now(), 2, 'k')"
        )
        creating = asyncio.create_task(store.create_run(new_run("second", dedup_key="k")))
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
        for _ in range(200):
            if await other.fetchval(waiting) or creating.done():
                break
            await asyncio.sleep(0.01)
        await (tx.commit() if outcome == "commit" else tx.rollback())
        run, created = await asyncio.wait_for(creating, 10)
        assert (run.id, created) == (("first", False) if outcome == "commit" else ("second", True))
    finally:
        await other.close()
        await store.close()


# --- claiming by queue, pausing ------------------------------------------------------------------------------


async def test_claim_takes_only_the_queue_asked_for(store: Store) -> None:
    mail = await create(store, 2, "mail")
    ai = await create(store, 2, "ai")
    assert await claimed(store, 10, queue="ai") == ai
    assert await claimed(store, 10, queue="ai") == []
    assert await claimed(store, 10, queue="nowhere") == []
    assert await claimed(store, 10) == mail


async def test_runs_of_a_paused_queue_are_not_claimed_until_it_resumes(store: Store) -> None:
    paused_ids = await create(store, 2, "ai")
    other = await create(store, 1, "mail")
    config = await store.configure_queue("ai", paused=True)
    assert config == QueueConfig("ai", paused=True)
    assert await claimed(store, 10, queue="ai") == []
    assert await claimed(store, 10) == other
    signal = store.hub.subscribe_work()
    try:
        assert await store.configure_queue("ai", paused=False) == QueueConfig("ai")
        assert await signal.wait(1)  # resuming wakes the workers
    finally:
        signal.close()
    assert await claimed(store, 10) == paused_ids


async def test_a_paused_queue_keeps_its_running_runs_and_pausing_wakes_no_one(store: Store) -> None:
    [run_id] = await create(store, 1, "ai")
    [claim] = await store.claim("w1", ["wf"], 1, 30)
    signal = store.hub.subscribe_work()
    try:
        await store.configure_queue("ai", paused=True)
        assert not await signal.wait(0.2)
    finally:
        signal.close()
    assert await store.append([append(claim, step(1))]) == [None]
    assert (await store.get_run(run_id)).lease_owner == "w1"  # type: ignore[union-attr]


async def test_a_paused_queue_is_paused_for_other_store_instances(
    store: Store, store_kind: str, new_store: NewStore
) -> None:
    shared(store_kind)
    other = await new_store()
    ids = await create(store, 2, "ai")
    await other.configure_queue("ai", paused=True)
    assert await claimed(store, 10) == []
    signal = store.hub.subscribe_work()
    try:
        await other.configure_queue("ai", paused=False)
        if store_kind == "postgres":
            assert await signal.wait(5)  # NOTIFY durable_work from the other process
    finally:
        signal.close()
    assert await claimed(store, 10) == ids


# --- ordering ------------------------------------------------------------------------------------------------


async def test_claims_go_by_priority_then_due_time_first_in_first_out(store: Store) -> None:
    low = await create(store, 2, "q", priority=0)
    high = await create(store, 2, "q", priority=5)
    past = now() - timedelta(hours=1)
    [early] = await create(store, 1, "q", priority=0, wake_at=past)  # due an hour ago: before the others
    assert await claimed(store, 2, queue="q") == high
    assert await claimed(store, 10, queue="q") == [early, *low]


async def test_limits_keep_the_order_across_queues(store: Store) -> None:
    await store.configure_queue("gpu", global_concurrency=1)
    gpu = await create(store, 3, "gpu", priority=9)
    cpu_high = await create(store, 2, "cpu", priority=5)
    cpu_low = await create(store, 3, "cpu", priority=1)
    # MemoryStore's order: by priority across queues, skipping the runs a queue's limit refuses.
    assert await claimed(store, 4) == [gpu[0], *cpu_high, cpu_low[0]]
    assert await claimed(store, 10) == cpu_low[1:]
    assert await claimed(store, 10) == []


# --- global concurrency --------------------------------------------------------------------------------------


async def test_global_concurrency_caps_the_queues_live_leases(store: Store) -> None:
    await store.configure_queue("gpu", global_concurrency=3)
    ids = await create(store, 6, "gpu")
    free = await create(store, 2, "cpu")
    assert await claimed(store, 2, queue="gpu") == ids[:2]
    assert await claimed(store, 10) == [ids[2], *free]  # one more room in gpu; cpu has no limit
    assert await claimed(store, 10, queue="gpu") == []
    assert await store.claim("w2", ["wf"], 10, 30, queue="gpu") == []  # full, for every worker
    first = await store.get_run(ids[0])
    assert first is not None
    held = history.Claim(run=first, history=await store.read_history(ids[0]))
    assert await store.append([append(held, [RunCompleted(result=raw(1))], status=COMPLETED)]) == [None]
    assert await claimed(store, 10) == [ids[3]]  # a finished run frees its place
    sleeper = await store.get_run(ids[1])
    assert sleeper is not None
    held = history.Claim(run=sleeper, history=await store.read_history(ids[1]))
    assert await store.append([append(held, release=True, wake_at=LATER)]) == [None]
    assert await claimed(store, 10) == [ids[4]]  # a sleeping run holds no lease and takes no place


async def test_an_expired_lease_frees_its_place(store: Store) -> None:
    await store.configure_queue("gpu", global_concurrency=1)
    ids = await create(store, 2, "gpu")
    [first] = await store.claim("w1", ["wf"], 10, 0.5)
    assert first.run.id == ids[0]
    assert await claimed(store, 10) == []
    await asyncio.sleep(0.6)
    # The dead worker's run is taken over first (it is older); the place it frees is the only one.
    assert await claimed(store, 10, worker="w2") == [ids[0]]
    assert await claimed(store, 10, worker="w2") == []


async def test_concurrent_claimers_never_exceed_the_global_concurrency(
    store: Store, store_kind: str, new_store: NewStore
) -> None:
    stores = [store] if store_kind == "memory" else [store, await new_store(), await new_store()]
    await store.configure_queue("gpu", global_concurrency=5)
    await create(store, 40, "gpu")
    await create(store, 10, "cpu")
    for _ in range(3):
        batches = await asyncio.gather(
            *(stores[i % len(stores)].claim(f"w{i}", ["wf"], 3, 30, queue="gpu" if i % 2 else None)
              for i in range(12))
        )  # fmt: skip
        runs = [c.run for batch in batches for c in batch]
        assert len({r.id for r in runs}) == len(runs)
        stats = await store.queue_stats("gpu")
        assert stats.running == 5
    assert (await store.queue_stats("cpu")).running == 10


# --- rate limits ---------------------------------------------------------------------------------------------


async def test_a_rate_limit_caps_first_starts_per_period(store: Store) -> None:
    await store.configure_queue("mail", rate_limit=3, rate_period=1.0)
    ids = await create(store, 10, "mail")
    assert await claimed(store, 10) == ids[:3]
    assert await claimed(store, 10) == []
    await asyncio.sleep(1.1)
    assert await claimed(store, 10, queue="mail") == ids[3:6]
    assert await claimed(store, 10, queue="mail") == []


async def test_a_rate_limit_does_not_count_claims_of_started_runs(store: Store) -> None:
    await store.configure_queue("mail", rate_limit=2, rate_period=60)
    ids = await create(store, 4, "mail")
    claims = await store.claim("w1", ["wf"], 10, 30)
    assert [c.run.id for c in claims] == ids[:2]
    assert await store.append([append(c, step(1), release=True) for c in claims]) == [None, None]
    # Released and ready again: claimed again although two starts used up the period's rate.
    assert await claimed(store, 10, worker="w2") == ids[:2]
    assert await claimed(store, 10, worker="w2") == []


async def test_a_rate_limit_counts_runs_that_finished_within_the_period(store: Store) -> None:
    await store.configure_queue("mail", rate_limit=1, rate_period=60)
    ids = await create(store, 2, "mail")
    [claim] = await store.claim("w1", ["wf"], 10, 30)
    assert await store.append([append(claim, [RunCompleted(result=raw(1))], status=COMPLETED)]) == [None]
    assert await claimed(store, 10) == []
    assert (await store.queue_stats("mail")).pending == 1 and claim.run.id == ids[0]


async def test_concurrent_claimers_never_exceed_a_rate_limit(
    store: Store, store_kind: str, new_store: NewStore
) -> None:
    stores = [store] if store_kind == "memory" else [store, await new_store()]
    await store.configure_queue("mail", rate_limit=7, rate_period=60, global_concurrency=100)
    await create(store, 30, "mail")
    batches = await asyncio.gather(*(stores[i % len(stores)].claim(f"w{i}", ["wf"], 2, 30) for i in range(10)))
    assert sum(len(batch) for batch in batches) == 7


async def test_a_rate_limit_without_a_period_limits_nothing(store: Store) -> None:
    await store.configure_queue("mail", rate_limit=1)
    ids = await create(store, 3, "mail")
    assert await claimed(store, 10) == ids


# --- settings ------------------------------------------------------------------------------------------------


async def test_configure_queue_leaves_unset_settings_and_clears_none(store: Store) -> None:
    assert await store.configure_queue("q") == QueueConfig("q")
    config = await store.configure_queue("q", global_concurrency=4, rate_limit=10, rate_period=2.5)
    assert config == QueueConfig("q", global_concurrency=4, rate_limit=10, rate_period=2.5)
    config = await store.configure_queue("q", paused=True)
    assert config == QueueConfig("q", paused=True, global_concurrency=4, rate_limit=10, rate_period=2.5)
    config = await store.configure_queue("q", global_concurrency=None, rate_limit=UNSET, rate_period=UNSET)
    assert config == QueueConfig("q", paused=True, rate_limit=10, rate_period=2.5)
    config = await store.configure_queue("q", paused=False, rate_limit=None)
    assert config == QueueConfig("q", rate_period=2.5)
    assert await store.list_queues() == [config]
    assert (await store.queue_stats("q")).config == config


async def test_list_queues_names_configured_queues_and_queues_with_runs(store: Store) -> None:
    assert await store.list_queues() == []
    await create(store, 1, "mail")
    [done] = await create(store, 1, "b-finished")
    claim = next(c for c in await store.claim("w1", ["wf"], 10, 30) if c.run.id == done)
    assert await store.append([append(claim, [RunCompleted(result=raw(1))], status=COMPLETED)]) == [None]
    await store.configure_queue("gpu", global_concurrency=2)
    await store.configure_queue("Zeta", paused=True)
    assert await store.list_queues() == [
        QueueConfig("Zeta", paused=True),  # by code point, as Python sorts: upper case first
        QueueConfig("b-finished"),
        QueueConfig("gpu", global_concurrency=2),
        QueueConfig("mail"),
    ]


async def test_queue_stats_count_each_state(store: Store) -> None:
    before = now()
    await store.configure_queue("q", global_concurrency=10)
    await create(store, 3, "q")  # pending
    [old] = await create(store, 1, "q", wake_at=before - timedelta(minutes=5))  # pending, due 5 minutes ago
    await create(store, 2, "q", wake_at=LATER)  # scheduled: a delayed start
    await create(store, 1, "other")
    stats = await store.queue_stats("q")
    assert (stats.running, stats.pending, stats.scheduled, stats.waiting) == (0, 4, 2, 0)
    assert stats.oldest_pending_age is not None and 300 <= stats.oldest_pending_age < 330
    claims = await store.claim("w1", ["wf"], 3, 30, queue="q")
    assert claims[0].run.id == old
    assert await store.append([append(claims[0], step(1), release=True, wake_at=LATER)]) == [None]  # sleeping
    assert await store.append([append(claims[1], [RunCompleted(result=raw(1))], status=COMPLETED)]) == [None]
    stats = await store.queue_stats("q")
    assert stats == QueueStats(
        name="q",
        running=1,
        pending=1,
        scheduled=2,
        waiting=1,
        oldest_pending_age=stats.oldest_pending_age,
        config=QueueConfig("q", global_concurrency=10),
    )
    assert stats.oldest_pending_age is not None and 0 <= stats.oldest_pending_age < 30
    assert await store.queue_stats("nowhere") == QueueStats("nowhere", 0, 0, 0, 0, None, QueueConfig("nowhere"))


async def test_an_expired_lease_counts_as_pending(store: Store) -> None:
    await create(store, 1, "q")
    await store.claim("w1", ["wf"], 1, 0.5)
    assert (await store.queue_stats("q")).running == 1
    await asyncio.sleep(0.6)
    stats = await store.queue_stats("q")
    assert (stats.running, stats.pending) == (0, 1)


# --- schema upgrade ------------------------------------------------------------------------------------------


async def _check_upgraded(store: Store) -> None:
    """What a schema 2 database with one finished and one ready run looks like once upgraded to 3."""
    done = await store.get_run("done")
    ready = await store.get_run("ready")
    assert done is not None and ready is not None
    assert (done.status, done.result, done.dedup_key) == ("completed", b"1", None)
    assert (ready.status, ready.queue, ready.dedup_key) == ("pending", "mail", None)
    assert [e.seq for e in await store.read_history("ready")] == [1]
    assert await store.list_queues() == [QueueConfig("default"), QueueConfig("mail")]
    assert (await store.queue_stats("mail")).pending == 1
    await store.configure_queue("mail", global_concurrency=1)
    assert [c.run.id for c in await store.claim("w1", ["wf"], 10, 30)] == ["ready"]
    _, created = await store.create_run(new_run(queue="mail", dedup_key="k"))
    assert created and not (await store.create_run(new_run(dedup_key="k")))[1]


async def test_a_postgres_database_at_schema_2_upgrades_keeping_its_runs(postgres_server_url: str) -> None:
    from history._postgres import PostgresStore

    name = f"durable_m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_server_url, name)
    try:
        old = PostgresStore(url)
        old._migrations = old._migrations[:2]
        assert await old.upgrade() == [1, 2]
        conn = await asyncpg.connect(url)
        try:
            for run_id, status, queue in (("done", "completed", "default"), ("ready", "pending", "mail")):
                await conn.execute(
                    """INSERT INTO durable_runs (id, workflow, status, input, result, created_at, updated_at,
                                                 finished_at, next_seq, queue)
                       VALUES ($1, 'wf', $2, '1', CASE WHEN $2 = 'completed' THEN '1'::bytea END, now(), now(),
                               CASE WHEN $2 = 'completed' THEN now() END, 2, $3)""",
                    run_id, status, queue,
                )  # fmt: skip
                event = history.encode_event(
                    history.RunStarted(workflow="wf", input=raw(1), run_id=run_id, random_seed=1)
                )
                await conn.execute("INSERT INTO durable_events VALUES ($1, 1, now(), 'run_started', $2)", run_id, event)
        finally:
            await conn.close()
        assert await PostgresStore(url).upgrade() == VERSIONS[2:]
        store = history.open_store(url)
        await store.open()
        try:
            await _check_upgraded(store)
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_sqlite_database_at_schema_2_upgrades_keeping_its_runs(tmp_path: Path) -> None:
    from history._sqlite import SqliteStore, _us

    url = f"sqlite:///{tmp_path / 'd.db'}"
    old = SqliteStore(url)
    old._migrations = old._migrations[:2]
    assert await old.upgrade() == [1, 2]
    db = sqlite3.connect(tmp_path / "d.db", isolation_level=None)
    try:
        t = _us(now())
        for run_id, status, queue in (("done", "completed", "default"), ("ready", "pending", "mail")):
            finished = t if status == "completed" else None
            result = b"1" if status == "completed" else None
            db.execute(
                """INSERT INTO durable_runs (id, workflow, status, input, result, created_at, updated_at, finished_at,
                                             next_seq, queue)
                   VALUES (?, 'wf', ?, x'31', ?, ?, ?, ?, 2, ?)""",
                (run_id, status, result, t, t, finished, queue),
            )
            event = history.encode_event(history.RunStarted(workflow="wf", input=raw(1), run_id=run_id, random_seed=1))
            db.execute("INSERT INTO durable_events VALUES (?, 1, ?, 'run_started', ?)", (run_id, t, event))
    finally:
        db.close()
    assert await SqliteStore(url).upgrade() == VERSIONS[2:]
    store = history.open_store(url)
    await store.open()
    try:
        await _check_upgraded(store)
    finally:
        await store.close()

