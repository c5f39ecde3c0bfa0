"""Retention (``Store.delete_finished``, ``engine.cleanup``, the worker's ``Retention`` job, ``durable cleanup``):
exactly the eligible runs go, with every row of theirs, in batches; everything else stays as it was; the database
still refuses any other delete of events (invariant 1)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable
from durable import CleanupReport, Engine, Retention
from durable._cli import main
from history import CANCELLED, COMPLETED, CONTINUED, FAILED, FINISHED_STATUSES, RUNNING, STATUSES, Store
from history._sqlite import SqliteStore
from tests.conftest import run_async
from tests.run_rows import PER_RUN_TABLES, RunRows
from tests.test_cli import wait_until
from tests.test_store_contract import append, new_run, start, step

NewStore = Callable[..., Awaitable[Store]]
ROOT = Path(__file__).resolve().parent.parent
DAY = timedelta(days=1)


@pytest.fixture
async def rows(store_kind: str, store_url: str, store: Store) -> AsyncIterator[RunRows]:
    opened = await RunRows(store_kind, store_url, store).open()
    yield opened
    await opened.close()


def ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def finished_run(store: Store, rows: RunRows, status: str, finished_days_ago: float, **fields: Any) -> str:
    """A run with a few events, a consumed and an unconsumed inbox message, that finished with ``status``."""
    claim = await start(store, workflow=uuid.uuid4().hex, **fields)
    run_id = claim.run.id
    consumed = await store.send_message(run_id, "event", "paid", b"{}")
    assert await store.append([append(claim, step(1), consumed=[consumed.id])]) == [None]
    await store.send_message(run_id, "event", "late", b"{}")  # never read: stays in the inbox
    first_seq = claim.run.next_seq + 2
    assert await store.append([append(claim, step(2), first_seq=first_seq, status=status)]) == [None]
    await rows.set(run_id, finished_at=ago(finished_days_ago))
    return run_id


async def unfinished_run(store: Store, rows: RunRows, created_days_ago: float) -> str:
    """A running run (leased, with events) created long ago."""
    claim = await start(store, workflow=uuid.uuid4().hex)
    assert await store.append([append(claim, step(1))]) == [None]
    await rows.set(claim.run.id, created_at=ago(created_days_ago))
    return claim.run.id


class World:
    """Runs of every kind, and the cut-offs of a job that keeps completed runs 10 days and the others 30."""

    def __init__(self) -> None:
        self.eligible: dict[str, list[str]] = {}
        self.kept: list[str] = []
        self.before = {COMPLETED: ago(10), CONTINUED: ago(10), FAILED: ago(30), CANCELLED: ago(30)}

    async def build(self, store: Store, rows: RunRows) -> World:
        for status, days, count in ((COMPLETED, 11, 3), (CONTINUED, 40, 1), (FAILED, 31, 2), (CANCELLED, 365, 1)):
            self.eligible[status] = [await finished_run(store, rows, status, days) for _ in range(count)]
        self.kept += [await finished_run(store, rows, COMPLETED, 9), await finished_run(store, rows, FAILED, 29)]
        self.kept.append(await unfinished_run(store, rows, 400))
        weird = await unfinished_run(store, rows, 400)  # running, yet with an old finish time: never touched
        await rows.set(weird, finished_at=ago(400))
        self.kept.append(weird)
        pending, _ = await store.create_run(new_run(workflow="never-claimed"))
        await rows.set(pending.id, created_at=ago(400))
        self.kept.append(pending.id)
        return self

    @property
    def eligible_ids(self) -> list[str]:
        return [run_id for ids in self.eligible.values() for run_id in ids]

    async def snapshot(self, store: Store) -> list[Any]:
        return [(await store.get_run(r), await store.read_history(r), await store.read_inbox(r)) for r in self.kept]


# --- the store contract ----------------------------------------------------------------------------------------


async def test_delete_finished_removes_exactly_the_eligible_runs_in_batches(store: Store, rows: RunRows) -> None:
    world = await World().build(store, rows)
    kept_before = await world.snapshot(store)
    expected = {status: len(ids) for status, ids in world.eligible.items()}
    assert await store.count_finished(world.before) == expected
    batches = []
    while counts := await store.delete_finished(world.before, limit=3):
        batches.append(counts)
    assert [sum(b.values()) for b in batches] == [3, 3, 1]
    assert {s: sum(b.get(s, 0) for b in batches) for s in expected} == expected
    for run_id in world.eligible_ids:
        assert await store.get_run(run_id) is None
        assert await store.read_history(run_id) == []
        assert await store.read_inbox(run_id) == []
    for table in ("durable_runs", *PER_RUN_TABLES):
        assert await rows.count(table, world.eligible_ids) == 0, table
    assert await world.snapshot(store) == kept_before  # the rest is exactly as it was
    assert await store.count_finished(world.before) == {}


async def test_delete_finished_takes_only_the_statuses_given(store: Store, rows: RunRows) -> None:
    world = await World().build(store, rows)
    only_failed = {FAILED: world.before[FAILED]}
    assert await store.delete_finished(only_failed, limit=100) == {FAILED: 2}
    assert await store.count_finished(world.before) == {COMPLETED: 3, CONTINUED: 1, CANCELLED: 1}


@pytest.mark.parametrize("status", [RUNNING, "pending", "waiting", "nonsense"])
async def test_delete_finished_refuses_a_status_that_is_not_finished(store: Store, status: str) -> None:
    with pytest.raises(ValueError, match="finished runs only"):
        await store.delete_finished({status: ago(0)}, limit=10)
    with pytest.raises(ValueError, match="finished runs only"):
        await store.count_finished({status: ago(0)})


async def test_a_naive_cutoff_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.delete_finished({COMPLETED: datetime(2020, 1, 1)}, limit=10)


async def test_concurrent_jobs_share_the_work(
    store: Store, rows: RunRows, store_kind: str, new_store: NewStore
) -> None:
    if store_kind == "memory":
        pytest.skip("a memory store cannot be shared")
    world = await World().build(store, rows)
    other = await new_store()

    async def drain(s: Store) -> int:
        deleted = 0
        while counts := await s.delete_finished(world.before, limit=1):
            deleted += sum(counts.values())
        return deleted

    assert sum(await asyncio.gather(drain(store), drain(other), drain(store))) == len(world.eligible_ids)
    assert await rows.count("durable_runs", world.eligible_ids) == 0


async def test_a_child_outlives_its_deleted_parent_and_still_finishes(store: Store, rows: RunRows) -> None:
    parent = await finished_run(store, rows, COMPLETED, 100)
    child = await start(store, workflow="child", parent_id=parent)
    assert await store.delete_finished({COMPLETED: ago(1)}, limit=10) == {COMPLETED: 1}
    assert await store.get_run(parent) is None
    assert await store.append([append(child, step(1), status=COMPLETED)]) == [None]  # nobody to tell: fine
    finished = await store.get_run(child.run.id)
    assert finished is not None and finished.status == COMPLETED and finished.parent_id == parent


_FAR = datetime(2999, 1, 1, tzinfo=UTC)
_runs = st.lists(st.tuples(st.sampled_from(STATUSES), st.integers(0, 100)), max_size=12)
_cutoffs = st.dictionaries(st.sampled_from(sorted(FINISHED_STATUSES)), st.integers(0, 100), max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=_runs, cutoffs=_cutoffs, limit=st.integers(1, 5))
async def test_any_cleanup_deletes_what_the_reference_says(
    store: Store, rows: RunRows, runs: list[tuple[str, int]], cutoffs: dict[str, int], limit: int
) -> None:
    while await store.delete_finished(dict.fromkeys(FINISHED_STATUSES, _FAR), limit=100):
        pass  # what earlier examples left finished: this one starts with unfinished runs only
    base = datetime(2020, 1, 1, tzinfo=UTC)
    made: dict[str, tuple[str, datetime]] = {}
    for status, day in runs:
        run, _ = await store.create_run(new_run(workflow="prop"))
        finished = base + timedelta(days=day)
        # An unfinished run gets a finish time too, half the time: it must stay all the same.
        await rows.set(run.id, status=status, finished_at=finished if status in FINISHED_STATUSES or day % 2 else None)
        made[run.id] = (status, finished)
    before = {status: base + timedelta(days=day) for status, day in cutoffs.items()}
    expected = {
        run_id for run_id, (status, finished) in made.items() if status in before and finished < before[status]
    }
    assert sum((await store.count_finished(before)).values()) == len(expected)
    deleted = 0
    while counts := await store.delete_finished(before, limit=limit):
        assert sum(counts.values()) <= limit
        deleted += sum(counts.values())
    assert deleted == len(expected)
    assert {run_id for run_id in made if await store.get_run(run_id) is None} == expected


# --- invariant 1 still holds -------------------------------------------------------------------------------------


async def test_the_database_still_refuses_other_deletes_of_events(store: Store, rows: RunRows, store_kind: str) -> None:
    if store_kind == "memory":
        pytest.skip("the database's own guard")
    world = await World().build(store, rows)
    while await store.delete_finished(world.before, limit=2):
        pass
    error = asyncpg.PostgresError if store_kind == "postgres" else sqlite3.DatabaseError
    for run_id in world.kept:  # running, pending, the odd one, and finished runs that no retention job named
        with pytest.raises(error, match="append-only"):
            await rows.delete_events(run_id)
        assert await rows.count("durable_events", [run_id]) >= 1


# --- engine.cleanup ------------------------------------------------------------------------------------------


async def test_cleanup_dry_run_counts_and_then_deletes_in_batches(
    store: Store, rows: RunRows, store_kind: str, store_url: str
) -> None:
    world = await World().build(store, rows)
    async with Engine(store_url, store=store if store_kind == "memory" else None, worker=False) as engine:
        dry = await engine.cleanup(completed_older_than="10d", failed_older_than=timedelta(days=30), dry_run=True)
        assert dry == CleanupReport(completed=4, failed=2, cancelled=0, dry_run=True, batches=0)
        assert await rows.count("durable_runs", world.eligible_ids) == len(world.eligible_ids)  # nothing deleted
        report = await engine.cleanup(completed_older_than="10d", failed_older_than="30d", batch_size=2)
        assert report == CleanupReport(completed=4, failed=2, cancelled=0, dry_run=False, batches=4)  # 2+2+2+0
        assert report.describe() == "deleted 6 runs (4 completed, 2 failed, 0 cancelled) in 4 batches"
        assert dry.describe() == "would delete 6 runs (4 completed, 2 failed, 0 cancelled)"
        # no cancelled_older_than: the year-old cancelled run stays, and so does everything young or unfinished
        assert await rows.count("durable_runs", world.eligible[CANCELLED] + world.kept) == 1 + len(world.kept)
        assert await engine.cleanup(cancelled_older_than="2w") == CleanupReport(cancelled=1, batches=1)


@pytest.mark.parametrize(
    ("options", "message"),
    [({}, "at least one of"), ({"completed_older_than": "3x"}, "invalid completed_older_than '3x'"),
     ({"failed_older_than": "-2d"}, "invalid failed_older_than"), ({"cancelled_older_than": "0d"}, "positive"),
     ({"completed_older_than": "1d", "batch_size": 0}, "batch_size")],
)  # fmt: skip
async def test_cleanup_refuses_bad_input(options: dict[str, Any], message: str) -> None:
    async with Engine("memory://", worker=False) as engine:
        with pytest.raises(ValueError, match=message):
            await engine.cleanup(**options)


def test_retention_settings_are_checked() -> None:
    assert Retention(completed="30d").ages() == {"completed": timedelta(days=30)}
    assert Retention.parse("completed=30d, failed=90d,every=15m,batch=50") == Retention(
        completed=timedelta(days=30), failed=timedelta(days=90), every=timedelta(minutes=15), batch_size=50
    )
    assert Retention.parse("failed=2w").describe() == "failed after 2w, every 1h"
    for bad, message in (("", "at least one of"), ("completed=3x", "invalid retention completed '3x'"),
                         ("kept=30d", "KEY=VALUE"), ("completed", "KEY=VALUE"), ("completed=1d,batch=0", "batch")):
        with pytest.raises(ValueError, match=message):
            Retention.parse(bad)
    with pytest.raises(ValueError, match="in-process worker"):
        Engine("memory://", worker=False, retention=Retention(completed="1d"))


# --- the worker's periodic job -------------------------------------------------------------------------------


async def test_the_workers_job_deletes_eligible_runs(store: Store, rows: RunRows, store_kind: str, store_url: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    world = await World().build(store, rows)
    retention = Retention(completed=timedelta(days=10), failed="30d", cancelled="30d", every="1h", batch_size=2)
    caplog.set_level(logging.INFO, logger="durable.retention")
    # Another process on the same database (the memory store can only be shared as an object).
    async with Engine(store_url, store=store if store_kind == "memory" else None, workflows=[],
                      retention=retention) as engine:
        assert engine.worker is not None and engine.worker.retention is not None
        await engine.worker.retention.wait_pass()
        assert engine.worker.retention.last == CleanupReport(completed=4, failed=2, cancelled=1, batches=4)
    assert await rows.count("durable_runs", world.eligible_ids) == 0
    assert await rows.count("durable_runs", world.kept) == len(world.kept)
    assert "deleted 7 runs (4 completed, 2 failed, 1 cancelled) in 4 batches" in caplog.text


@durable.workflow(name="retention.echo")
async def echo(ctx: durable.WorkflowContext, text: str) -> str:
    return text


async def test_a_failed_pass_is_logged_and_the_worker_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "locked.db"
    store = SqliteStore(f"sqlite:///{path}", busy_timeout=0.05)
    async with Engine(store=store, workflows=[echo], retention=Retention(completed="1d", every="1h")) as engine:
        assert engine.worker is not None and engine.worker.retention is not None
        job = engine.worker.retention
        await job.wait_pass()
        done = await engine.start(echo, "old")
        assert await done.result(timeout=30) == "old"
        other = await RunRows("sqlite", f"sqlite:///{path}", store).open()
        await other.set(done.id, finished_at=ago(2))
        assert other._sqlite is not None
        other._sqlite.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            assert await job.run_once() is None
        finally:
            other._sqlite.execute("ROLLBACK")
        assert job.failures == 1 and "retention pass failed" in caplog.text
        assert await (await engine.start(echo, "still serving")).result(timeout=30) == "still serving"
        assert await job.run_once() == CleanupReport(completed=1, batches=1)
        await other.close()
    assert job.passes == 3


# --- durable cleanup ---------------------------------------------------------------------------------------------


async def test_durable_cleanup_prints_what_it_deletes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = SqliteStore(url)
    await store.open()
    rows = await RunRows("sqlite", url, store).open()
    try:
        ids = [await finished_run(store, rows, COMPLETED, 40), await finished_run(store, rows, FAILED, 40),
               await finished_run(store, rows, FAILED, 1)]
    finally:
        await rows.close()
        await store.close()
    argv = ["cleanup", "--database-url", url, "--completed-older-than", "30d", "--failed-older-than", "1w"]
    assert await _cli(*argv, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would delete 2 runs (1 completed, 1 failed, 0 cancelled)" in out and "--dry-run" in out
    assert await _cli(*argv, "--batch-size", "1") == 0
    assert "deleted 2 runs (1 completed, 1 failed, 0 cancelled) in 3 batches" in capsys.readouterr().out
    assert await _cli(*argv, "--json") == 0
    assert '"total":0' in capsys.readouterr().out
    async with Engine(url, worker=False) as engine:
        assert [await engine.store.get_run(i) is not None for i in ids] == [False, False, True]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["cleanup", "--completed-older-than", "3x"], "invalid duration '3x': use a whole number followed by s, m, h"),
     (["cleanup"], "cleanup deletes nothing without an age"),
     (["cleanup", "--failed-older-than", "1d", "--batch-size", "0"], "must be a whole number >= 1"),
     (["worker", "tests.wf_samples", "--retention", "completed=soon"], "invalid retention completed 'soon'")],
)  # fmt: skip
async def test_durable_cleanup_and_worker_refuse_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert await _cli(*argv, "--database-url", f"sqlite:///{tmp_path / 'x.db'}") == 2
    assert message in capsys.readouterr().err


async def _cli(*argv: str) -> int:
    """``durable ARGV`` on a thread (``main`` runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv))


def test_durable_worker_with_retention_deletes_old_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"

    async def populate() -> tuple[str, str]:
        store = SqliteStore(url)
        await store.open()
        rows = await RunRows("sqlite", url, store).open()
        try:
            return await finished_run(store, rows, COMPLETED, 3), await finished_run(store, rows, COMPLETED, 0.5)
        finally:
            await rows.close()
            await store.close()

    old, young = run_async(populate)
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "durable", "--database-url", url, "worker", "tests.wf_samples",
            "--retention", "completed=2d,every=1h"]
    with log.open("w") as stderr:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    try:
        wait_until(lambda: "retention deleted" in log.read_text() or proc.poll() is not None, what="a retention pass")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "retention on (completed after 2d, every 1h)" in text
    assert "retention deleted 1 run (1 completed, 0 failed, 0 cancelled) in 1 batch" in text
    db = sqlite3.connect(tmp_path / "w.db")
    try:
        assert db.execute("SELECT id FROM durable_runs").fetchall() == [(young,)]
        assert db.execute("SELECT count(*) FROM durable_events WHERE run_id = ?", (old,)).fetchone() == (0,)
    finally:
        db.close()
