"""Live event streams (``engine.subscribe``, ``Store.subscribe_live``, ``durable watch``) on every store.

What a user is promised:

* following one run, the stream is the run's history in order (every recorded event once, with its ``seq``),
  from ``after_seq`` on even when the subscriber joins mid-run, ending with the terminal event;
* exactly one ``step_started`` per step attempt, live (``seq=None``) when the worker announces the attempt
  before its outcome is recorded, so a step that is still running is shown as started;
* following a workflow or every run: the events of the runs from the subscription on, each run's in order;
* across processes (a worker in another process, the subscriber here): on PostgreSQL all of it, on SQLite
  everything but live step starts (the subscriber tails the events table).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import durable
import history
from durable import RunEvent
from durable._subscribe import Subscription
from history import (
    Append,
    ErrorInfo,
    MemoryStore,
    NewRun,
    RecordedEvent,
    RunCompleted,
    RunContinued,
    StepCompleted,
    StepFailed,
    StepNotice,
    StepScheduled,
    Store,
    TimerFired,
    TimerStarted,
)
from history._sqlite_live import tail_events

from . import wf_live
from .conftest import sqlite_url_with_schema

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = [wf_live.live_tour, wf_live.live_child, wf_live.live_steps, wf_live.live_other, wf_live.live_forever]
TIMEOUT = 30.0  # seconds any one stream may take before the test fails (a hang, not a measurement)


# -- checks -------------------------------------------------------------------------------------------------------


def check_stream(events: Sequence[RunEvent], history: Sequence[RecordedEvent], after_seq: int = 0) -> None:
    """``events`` (of one run) tell exactly ``history`` after ``after_seq``: every recorded event once, in order,
    except a ``StepScheduled`` whose attempt's start came live; one ``step_started`` per attempt, before its
    outcome; the terminal event last."""
    recorded = [e for e in events if e.seq is not None]
    live_starts = {(e.command_id, e.attempt) for e in events if e.kind == "step_started" and e.seq is None}
    expected = [
        rec
        for rec in history
        if rec.seq > after_seq
        and not (isinstance(rec.event, StepScheduled) and (rec.event.command_id, 1) in live_starts)
    ]
    assert [(e.seq, e.event) for e in recorded] == [(rec.seq, rec.event) for rec in expected]
    assert all(e.at == rec.at for e, rec in zip(recorded, expected, strict=True))
    starts = [(e.command_id, e.attempt) for e in events if e.kind == "step_started"]
    assert len(starts) == len(set(starts)), f"a step attempt started twice: {starts}"
    attempts = [
        (rec.event.command_id, rec.event.attempt)
        for rec in history
        if rec.seq > after_seq and isinstance(rec.event, (StepCompleted, StepFailed))
    ]
    for attempt in attempts:
        assert attempt in starts, f"no step_started for (command, attempt) {attempt}"
        of_attempt = [(i, e.kind) for i, e in enumerate(events) if (e.command_id, e.attempt) == attempt]
        assert of_attempt[0][1] == "step_started", of_attempt
    assert events[-1].terminal and events[-1].seq == history[-1].seq
    assert sum(e.terminal for e in events) == 1


async def collect(
    events: AsyncIterator[RunEvent], until: Callable[[list[RunEvent]], bool] | None = None
) -> list[RunEvent]:
    """Every event until the stream ends (or ``until`` says enough)."""
    got: list[RunEvent] = []
    async with asyncio.timeout(TIMEOUT):
        async for event in events:
            got.append(event)
            if until is not None and until(got):
                break
    return got


async def drive_tour(engine: durable.Engine, events: AsyncIterator[RunEvent], gate: Path,
                     on_waiting: Callable[[], Awaitable[None]] | None = None,
                     live_starts: bool = True) -> list[RunEvent]:  # fmt: skip
    """Follow a ``live_tour`` run: send it "go" when it waits, release its gated step once it is seen started
    (``live_starts=False``: once its child finished, for a stream that shows step starts with their outcomes)."""
    got: list[RunEvent] = []
    async with asyncio.timeout(TIMEOUT):
        async for event in events:
            got.append(event)
            if event.kind == "waiting" and event.workflow == "live_tour":
                if on_waiting is not None:
                    await on_waiting()
                await engine.send_event(event.run_id, "go", "now")
            if event.kind == "step_started" and event.step == "live.gated" and live_starts:
                assert not any(e.kind == "step_completed" and e.step == "live.gated" for e in got)
                gate.touch()
            if event.kind == "child_finished" and event.workflow == "live_tour" and not live_starts:
                gate.touch()
            if event.terminal and event.workflow == "live_tour":
                break
    return got


def gated_start(events: Sequence[RunEvent]) -> list[RunEvent]:
    return [e for e in events if e.kind == "step_started" and e.step == "live.gated"]


@pytest.fixture
async def engine(engine_url: str) -> AsyncIterator[durable.Engine]:
    async with durable.Engine(engine_url, workflows=WORKFLOWS) as engine:
        yield engine


# -- one run ------------------------------------------------------------------------------------------------------


async def test_a_subscriber_receives_every_event_of_a_run_in_order(engine: durable.Engine, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    handle = await engine.start(wf_live.live_tour, str(gate))
    events = await drive_tour(engine, engine.subscribe(handle.id), gate)
    history = await engine.get_history(handle.id)
    check_stream(events, history)
    kinds = [e.kind for e in events]
    for kind in ("run_started", "step_failed", "step_completed", "timer_started", "timer_fired", "state_updated",
                 "waiting", "message_received", "child_started", "child_finished", "completed"):  # fmt: skip
        assert kind in kinds, kind
    failed = next(e for e in events if e.kind == "step_failed")
    assert (failed.step, failed.attempt, failed.retry_at is not None) == ("live.flaky", 1, True)
    # The blocked step was shown running before it completed: its start came live, once.
    [started] = gated_start(events)
    assert started.seq is None and started.event is None and started.workflow == "live_tour"
    assert await handle.result(timeout=TIMEOUT) == {"first": "ok a", "go": "now", "child": 42, "released": "released"}


async def test_a_subscriber_joining_mid_run_misses_nothing(engine: durable.Engine, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    handle = await engine.start(wf_live.live_tour, str(gate))
    late: list[asyncio.Task[list[RunEvent]]] = []

    async def join_now() -> None:  # the run is waiting for "go": half of it has happened
        for after in (0, 3):
            subscription = await engine.subscribe(handle.id, after_seq=after).open()
            late.append(asyncio.get_running_loop().create_task(collect(subscription)))

    first = await drive_tour(engine, engine.subscribe(handle.id), gate, on_waiting=join_now)
    history = await engine.get_history(handle.id)
    check_stream(first, history)
    from_start, from_four = [await task for task in late]
    check_stream(from_start, history)
    check_stream(from_four, history, after_seq=3)
    assert next(e.seq for e in from_four if e.seq is not None) == 4
    # Both joined before the gated step started: they too saw it start live.
    assert [e.seq for e in gated_start(from_start) + gated_start(from_four)] == [None, None]


async def test_a_finished_run_streams_its_history_and_ends(engine: durable.Engine) -> None:
    handle = await engine.start(wf_live.live_steps, 3)
    assert await handle.result(timeout=TIMEOUT) == 3
    events = await collect(engine.subscribe(handle.id))
    history = await engine.get_history(handle.id)
    check_stream(events, history)
    assert all(e.seq is not None for e in events)  # nothing was live: everything comes from the history
    assert [e.kind for e in events][:3] == ["run_started", "step_started", "step_completed"]
    assert [e.kind for e in await collect(engine.subscribe(handle.id, after_seq=len(history) - 1))] == ["completed"]


async def test_a_run_that_continues_as_new_ends_its_stream_with_continued(engine: durable.Engine) -> None:
    handle = await engine.start(wf_live.live_forever, 0)
    events = await collect(engine.subscribe(handle.id))
    assert events[-1].kind == "continued"
    assert isinstance(events[-1].event, RunContinued)
    successor = events[-1].event.new_run_id
    following = await collect(engine.subscribe(successor))
    assert following[0].kind == "run_started" and following[-1].kind == "completed"
    check_stream(following, await engine.get_history(successor))


async def test_subscribing_to_an_unknown_run_raises_run_not_found(engine: durable.Engine) -> None:
    with pytest.raises(durable.RunNotFound, match=r"no run with id 'nope'.*durable list"):
        async with engine.subscribe("nope"):
            pass
    with pytest.raises(durable.RunNotFound, match="'nope'"):
        async for _ in engine.subscribe("nope"):
            pass


async def test_bad_arguments_are_refused_with_what_to_do(engine: durable.Engine) -> None:
    with pytest.raises(ValueError, match="not both"):
        engine.subscribe("r1", workflow="live_steps")
    with pytest.raises(ValueError, match="after_seq must be >= 0"):
        engine.subscribe("r1", after_seq=-1)
    with pytest.raises(ValueError, match="give run_id too"):
        engine.subscribe(after_seq=3)
    with pytest.raises(TypeError, match="run_id must be a string"):
        engine.subscribe(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="after_seq must be an int"):
        engine.subscribe("r1", after_seq="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workflow must not be empty"):
        engine.subscribe(workflow="")


# -- many runs ----------------------------------------------------------------------------------------------------


def by_run(events: Sequence[RunEvent]) -> dict[str, list[RunEvent]]:
    runs: dict[str, list[RunEvent]] = {}
    for event in events:
        runs.setdefault(event.run_id, []).append(event)
    return runs


async def test_workflow_and_all_runs_subscriptions_follow_new_runs(engine: durable.Engine) -> None:
    before = await engine.start(wf_live.live_other)
    await before.result(timeout=TIMEOUT)  # finished before the subscriptions: in neither
    async with engine.subscribe(workflow="live_steps") as steps_only, engine.subscribe() as every:
        handles = [await engine.start(wf_live.live_steps, n) for n in (1, 2, 3)]
        other = await engine.start(wf_live.live_other)
        ended = lambda count: lambda got: sum(e.terminal for e in got) == count  # noqa: E731
        filtered, everything = await asyncio.gather(collect(steps_only, ended(3)), collect(every, ended(4)))
    assert set(by_run(filtered)) == {h.id for h in handles}
    assert set(by_run(everything)) == {h.id for h in handles} | {other.id}
    for stream in (filtered, everything):
        for run_id, events in by_run(stream).items():
            check_stream(events, await engine.get_history(run_id))  # whole runs: they started after subscribing
            assert events[0].kind == "run_started"
    assert {e.workflow for e in filtered} == {"live_steps"}


# -- the store's part ---------------------------------------------------------------------------------------------


def raw(value: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(value))


async def test_stores_announce_appends_and_step_starts(store: Store, store_kind: str,
                                                       new_store: Callable[..., Awaitable[Store]]) -> None:  # fmt: skip
    # On PostgreSQL the writer is another store (another process, as far as the database can tell).
    writer = await new_store() if store_kind == "postgres" else store
    appended: list[tuple[str, int, int | None]] = []
    started: list[StepNotice] = []
    heard = asyncio.Event()

    def on_appended(run_id: str, last_seq: int, first_seq: int | None) -> None:
        appended.append((run_id, last_seq, first_seq))
        heard.set()

    def on_step(notice: StepNotice) -> None:
        started.append(notice)
        heard.set()

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not condition():
                heard.clear()
                await heard.wait()

    stop = await store.subscribe_live(on_appended, on_step)
    run_id = uuid.uuid4().hex
    await writer.create_run(NewRun(id=run_id, workflow="wf", input=raw(1), random_seed=1))
    await until(lambda: (run_id, 1, 1) in appended)
    [claim] = await writer.claim("w1", ["wf"], 1, 30)
    notice = StepNotice(run_id, "wf", 1, "charge", 1, datetime.now(UTC))
    writer.notify_step_started([notice])
    await until(lambda: notice in started)
    events = [StepScheduled(command_id=1, name="charge", args=raw([]), digest="d"),
              StepCompleted(command_id=1, name="charge", attempt=1, result=raw(1), duration_ms=1.0)]  # fmt: skip
    append = Append(run_id=run_id, worker_id="w1", epoch=claim.run.lease_epoch, first_seq=2, events=events,
                    at=datetime.now(UTC))  # fmt: skip
    assert await writer.append([append]) == [None]
    await until(lambda: (run_id, 3, 2) in appended)
    stop()
    stop()  # twice is harmless
    assert [a for a in appended if a[0] == run_id] == [(run_id, 1, 1), (run_id, 3, 2)]  # once each
    assert started == [notice]


def spawn_worker(url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """``durable worker tests.wf_live`` on ``url`` in a process of its own, its stderr in ``worker.stderr``."""
    with open(tmp_path / "worker.stderr", "wb") as stderr:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "durable", "--database-url", url, "worker", "tests.wf_live", "--lease-seconds", "5"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip


# -- across processes (PostgreSQL) --------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_a_subscriber_follows_a_worker_in_another_process(postgres_url: str, tmp_path: Path) -> None:
    async with durable.Engine(postgres_url, worker=False, workflows=WORKFLOWS) as client:
        # Subscribed before the worker process starts: it learns of the watch when it opens its store.
        async with client.subscribe() as every:
            worker = spawn_worker(postgres_url, tmp_path)
            try:
                async with asyncio.timeout(TIMEOUT):  # the worker serves once it registered its workflows
                    while "live_tour" not in await client.store.known_workflows():
                        assert worker.poll() is None, (tmp_path / "worker.stderr").read_text()
                        await asyncio.sleep(0.05)
                gate = tmp_path / "gate"
                handle = await client.start("live_tour", str(gate))
                followed = asyncio.get_running_loop().create_task(collect(client.subscribe(handle.id)))
                events = await drive_tour(client, every, gate)
                one_run = await followed
                assert await handle.result(timeout=TIMEOUT) == {"first": "ok a", "go": "now", "child": 42,
                                                                "released": "released"}  # fmt: skip
            finally:
                worker.terminate()
                worker.wait(15)
        runs = by_run(events)
        assert len(runs) == 2  # the tour and its child
        for run_id, stream in runs.items():
            check_stream(stream, await client.get_history(run_id))
        check_stream(one_run, await client.get_history(handle.id))
        # Steps ran in the other process, and their starts reached this one live, before their outcomes.
        assert [e.seq for e in gated_start(events)] == [None]
        assert [e.seq for e in gated_start(one_run)] == [None]


# -- across processes (SQLite: the events table's tail) ------------------------------------------------------------


async def test_sqlite_stores_hear_the_appends_of_another_store_on_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tail.db'}"
    store, writer = history.open_store(url), history.open_store(url)  # two connections: two processes to SQLite
    await store.open()
    await writer.open()
    try:
        await writer.create_run(NewRun(id="before", workflow="wf", input=raw(1), random_seed=1))
        appended: list[tuple[str, int, int | None]] = []
        heard = asyncio.Event()

        def on_appended(run_id: str, last_seq: int, first_seq: int | None) -> None:
            appended.append((run_id, last_seq, first_seq))
            heard.set()

        stop = await store.subscribe_live(on_appended, lambda notice: None)
        await writer.create_run(NewRun(id="after", workflow="wf", input=raw(1), random_seed=1))
        claim = next(c for c in await writer.claim("w1", ["wf"], 10, 30) if c.run.id == "after")
        events = [StepScheduled(command_id=1, name="charge", args=raw([]), digest="d"),
                  StepCompleted(command_id=1, name="charge", attempt=1, result=raw(1), duration_ms=1.0)]  # fmt: skip
        append = Append(run_id="after", worker_id="w1", epoch=claim.run.lease_epoch, first_seq=2, events=events,
                        at=datetime.now(UTC))  # fmt: skip
        assert await writer.append([append]) == [None]
        async with asyncio.timeout(TIMEOUT):
            while not appended or appended[-1][1] < 3:
                heard.clear()
                await heard.wait()
        # "before" was written before the subscription: nothing of it is told. "after" from its first event on,
        # in one notice or two (a look that finds both appends tells them at once).
        assert {run_id for run_id, _, _ in appended} == {"after"}
        assert appended[0][2] == 1 and appended[-1][1] == 3
        assert appended in ([("after", 3, 1)], [("after", 1, 1), ("after", 3, 2)])
        stop()
        stop()  # twice is harmless
        assert store._tail_task is None  # nobody subscribes: no more looking
    finally:
        await writer.close()
        await store.close()


def test_the_tail_goes_on_from_the_top_when_the_newest_events_are_deleted() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE durable_events (run_id TEXT, seq INTEGER, PRIMARY KEY (run_id, seq))")

    def add(run_id: str, *seqs: int) -> None:
        db.executemany("INSERT INTO durable_events VALUES (?, ?)", [(run_id, seq) for seq in seqs])

    add("a", 1, 2)
    add("b", 1)
    cursor, grown, more = tail_events(db, 0)
    assert (cursor, grown, more) == (3, {"a": (2, 1), "b": (1, 1)}, False)
    add("a", 3)
    cursor, grown, _ = tail_events(db, cursor)
    assert (cursor, grown) == (4, {"a": (3, 3)})
    db.execute("DELETE FROM durable_events WHERE run_id = 'a'")  # retention removes the newest rows
    cursor, grown, _ = tail_events(db, cursor)
    assert (cursor, grown) == (3, {})  # down to the top that is left
    add("c", 1, 2)  # rowids 4 and 5 again: above the new cursor, so seen
    assert tail_events(db, cursor)[1] == {"c": (2, 1)}


async def test_on_sqlite_workflow_and_all_runs_subscriptions_follow_a_worker_in_another_process(
    tmp_path: Path,
) -> None:
    url = sqlite_url_with_schema(tmp_path / "live.db")
    async with durable.Engine(url, worker=False, workflows=WORKFLOWS) as client:
        async with client.subscribe() as every, client.subscribe(workflow="live_other") as others:
            worker = spawn_worker(url, tmp_path)
            try:
                gate = tmp_path / "gate"
                other = await client.start("live_other")
                handle = await client.start("live_tour", str(gate))
                events = await drive_tour(client, every, gate, live_starts=False)
                only_others = await collect(others, until=lambda got: got[-1].terminal)
                assert await handle.result(timeout=TIMEOUT) == {"first": "ok a", "go": "now", "child": 42,
                                                                "released": "released"}  # fmt: skip
                assert await other.result(timeout=TIMEOUT) == 2
            finally:
                worker.terminate()
                worker.wait(15)
        assert worker.returncode == 0, (tmp_path / "worker.stderr").read_text()
        runs = by_run(events)
        assert {e.workflow for e in events} == {"live_tour", "live_child", "live_other"}
        for run_id, stream in runs.items():
            if stream[-1].terminal:  # live_other may still be going when the tour ends
                check_stream(stream, await client.get_history(run_id))
        assert {e.run_id for e in only_others} == {other.id}
        check_stream(only_others, await client.get_history(other.id))


# -- durable watch ------------------------------------------------------------------------------------------------


def test_watch_prints_a_finished_runs_events_and_exits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from durable._cli import main

    from .conftest import run_async

    url = f"sqlite:///{tmp_path / 'watch.db'}"

    async def finished_run() -> str:
        async with durable.Engine(url, workflows=WORKFLOWS) as engine:
            handle = await engine.start(wf_live.live_steps, 2)
            await handle.result(timeout=TIMEOUT)
            return handle.id

    run_id = run_async(finished_run)
    assert main(["--database-url", url, "watch", run_id]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"Watching run {run_id} (Ctrl-C to stop)"
    assert lines[1].split() == ["seq", "time", "type", "command", "attempt", "duration", "details"]
    assert [line.split()[2] for line in lines[2:-1]] == [
        "run_started", "step_started", "step_completed", "step_started", "step_completed", "completed",
    ]  # fmt: skip
    assert "#1 live.add" in lines[3] and "-> 0" in lines[4]
    assert lines[-1] == f"run {run_id} ended: completed"

    assert main(["--database-url", url, "watch", run_id, "--json", "--after", "5"]) == 0
    [last] = [msgspec.json.decode(line, type=RunEvent) for line in capsys.readouterr().out.splitlines()]
    assert (last.kind, last.seq, last.run_id) == ("completed", 6, run_id)

    assert main(["--database-url", url, "watch", "nope"]) == 1
    assert "error: no run with id 'nope'" in capsys.readouterr().err
    assert main(["--database-url", url, "watch", run_id, "--workflow", "live_steps"]) == 2
    assert "durable watch: give run_id (one run) or workflow= (its runs), not both" in capsys.readouterr().err
    assert main(["--database-url", url, "watch", "--workflow", "nope", "--after", "-1"]) == 2
    assert "after_seq must be" in capsys.readouterr().err


async def test_watch_of_a_workflow_on_sqlite_prints_the_runs_of_another_process(tmp_path: Path) -> None:
    url = sqlite_url_with_schema(tmp_path / "watched.db")
    watch = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable", "--database-url", url, "watch", "--workflow", "live_steps",
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert watch.stdout is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            assert (await watch.stdout.readline()).decode().startswith("Watching runs of live_steps on sqlite:///")
            async with durable.Engine(url, workflows=WORKFLOWS) as engine:  # this process runs the workflows
                other = await engine.start(wf_live.live_other)  # another workflow: not shown
                run = await engine.start(wf_live.live_steps, 2)
                assert await run.result(timeout=TIMEOUT) == 1 and await other.result(timeout=TIMEOUT) == 2
            lines: list[str] = []
            while not any(" completed " in line for line in lines):
                lines.append((await watch.stdout.readline()).decode())
    finally:
        watch.terminate()
        await watch.wait()
    header, *rows = [line.split() for line in lines if line.strip()]
    assert header[:5] == ["run", "workflow", "seq", "time", "type"]
    assert {row[1] for row in rows} == {"live_steps"}  # not live_other
    events = [row[4] for row in rows if row[0] == run.id[: len(row[0])]]
    assert events == ["run_started", "step_started", "step_completed", "step_started", "step_completed",
                      "completed"], lines  # fmt: skip


@pytest.mark.postgres
async def test_watch_shows_a_running_step_live_from_another_process(postgres_url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    async with durable.Engine(postgres_url, worker=False, workflows=WORKFLOWS) as engine:
        handle = await engine.start(wf_live.live_tour, str(gate))
        watch = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "durable", "--database-url", postgres_url, "watch", handle.id,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"},
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert watch.stdout is not None
        lines: list[str] = []
        worker_store = history.open_store(postgres_url)
        worker: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(TIMEOUT):
                # `durable watch` says "Watching" once it watches; a worker whose store opens after that sends
                # step starts from its first step (it looks for the watch when it opens).
                lines.append((await watch.stdout.readline()).decode().rstrip("\n"))
                assert lines[0] == f"Watching run {handle.id} (Ctrl-C to stop)"
                await worker_store.open()
                running = durable.Worker(worker_store, {wf.name: wf for wf in WORKFLOWS})
                worker = asyncio.get_running_loop().create_task(running.run())
                while not lines[-1].startswith("run "):
                    line = (await watch.stdout.readline()).decode()
                    assert line, f"durable watch exited early: {lines}"
                    lines.append(line.rstrip("\n"))
                    if " waiting " in line:
                        await engine.send_event(handle.id, "go", "now")
                    if "live.gated" in line and line.split()[0] == "·":  # shown live: it cannot have completed
                        assert not any("live.gated" in seen and "step_completed" in seen for seen in lines)
                        gate.touch()
                assert await watch.wait() == 0
        finally:
            if watch.returncode is None:
                watch.kill()
                await watch.wait()
            if worker is not None:
                running.stop()
                await worker
            await worker_store.close()
    assert lines[-1] == f"run {handle.id} ended: completed"
    [started] = [line for line in lines if "live.gated" in line and "step_started" in line]
    assert started.split()[0] == "·"  # not recorded yet when printed


async def test_leaving_a_plain_async_for_stops_listening(engine: durable.Engine) -> None:
    handle = await engine.start(wf_live.live_steps, 1)
    await handle.result(timeout=TIMEOUT)
    hub = engine.store.hub
    async for _ in engine.subscribe(handle.id):
        assert hub._appended_listeners  # listening while iterating
        break
    for _ in range(3):  # asyncio closes a dropped generator in a task it schedules with call_soon
        await asyncio.sleep(0)
    assert not hub._appended_listeners and not hub._step_listeners
    subscription = engine.subscribe(handle.id)
    assert (await anext(subscription)).kind == "run_started"
    async with subscription:
        assert [e.kind async for e in subscription][-1] == "completed"
    assert not hub._appended_listeners


# -- notices lost, repeated, coalesced, late (hypothesis) ---------------------------------------------------------


def _appends() -> list[tuple[list[Any], tuple[int, int] | None]]:
    """A run's appends after ``RunStarted``, each with the step attempt whose outcome it records (a retried step,
    a timer, a second step, the end)."""
    failed = StepFailed(command_id=1, name="s", attempt=1, error=ErrorInfo("RuntimeError", "no"), duration_ms=2.0,
                        retry_at=datetime.now(UTC))  # fmt: skip
    return [
        ([StepScheduled(command_id=1, name="s", args=raw([]), digest="d"), failed], (1, 1)),
        ([StepCompleted(command_id=1, name="s", attempt=2, result=raw(1), duration_ms=1.0)], (1, 2)),
        ([TimerStarted(command_id=2, fire_at=datetime.now(UTC), seconds=0.0)], None),
        ([TimerFired(command_id=2),
          StepScheduled(command_id=3, name="t", args=raw([]), digest="d"),
          StepCompleted(command_id=3, name="t", attempt=1, result=raw(2), duration_ms=1.0)], (3, 1)),
        ([RunCompleted(result=raw(3))], None),
    ]  # fmt: skip


_ACTIONS = st.lists(st.sampled_from(["append", "lost append", "stale notice", "live", "live twice", "yield"]),
                    max_size=30)  # fmt: skip


@pytest.mark.parametrize("mode", ["run", "all"])
def test_lost_repeated_or_late_notices_never_lose_or_repeat_an_event(mode: str) -> None:
    @settings(max_examples=60, deadline=None)
    @given(actions=_ACTIONS)
    def check(actions: list[str]) -> None:
        asyncio.run(_replay_notices(actions, mode))

    check()


async def _replay_notices(actions: list[str], mode: str) -> None:
    """Perform a run's appends with the notices of ``actions`` in between (an append whose notice is lost, a
    notice of an old sequence number, a step-start notice once or twice, before or after its outcome), then
    check that the subscription's stream is the run's history."""
    store = MemoryStore()
    run_id = "r"
    await store.create_run(NewRun(id=run_id, workflow="wf", input=raw(1), random_seed=1))
    [claim] = await store.claim("w", ["wf"], 1, 30)
    subscription = Subscription(store, run_id if mode == "run" else None, None, 0)
    await subscription.open()
    if mode == "all":  # the run is known to an all-runs subscription from its next notice on: say it is new
        store.hub.notify_appended(run_id, 1, 1)
    collected = asyncio.get_running_loop().create_task(collect(subscription, lambda got: got[-1].terminal))
    pending, seq = _appends(), 2

    async def append(notify: bool) -> None:
        nonlocal seq
        events, _ = pending.pop(0)
        item = Append(run_id=run_id, worker_id="w", epoch=claim.run.lease_epoch, first_seq=seq, events=events,
                      at=datetime.now(UTC), status="completed" if not pending else None)  # fmt: skip
        listeners, store.hub._appended_listeners = store.hub._appended_listeners, []  # the notice is lost
        try:
            assert await store.append([item]) == [None]
        finally:
            store.hub._appended_listeners = listeners
        seq += len(events)
        if notify:
            store.hub.notify_appended(run_id, seq - 1, seq - len(events))

    for action in actions:
        if not pending:
            break
        if action in ("append", "lost append"):
            await append(notify=action == "append" or len(pending) == 1)  # the last one: else only a poll finds it
        elif action == "stale notice":
            store.hub.notify_appended(run_id, max(1, seq - 3), max(1, seq - 4))
        elif action.startswith("live") and pending[0][1] is not None:
            command_id, attempt = pending[0][1]
            notice = StepNotice(run_id, "wf", command_id, "s", attempt, datetime.now(UTC))
            store.notify_step_started([notice] * (2 if action == "live twice" else 1))
        else:
            await asyncio.sleep(0)
    while pending:
        await append(notify=True)
    events = await collected
    check_stream(events, await store.read_history(run_id))


@pytest.mark.postgres
async def test_appends_notify_other_processes_only_while_someone_subscribes(
    postgres_url: str, new_store: Callable[..., Awaitable[Store]]
) -> None:
    import asyncpg

    writer, watcher = await new_store(postgres_url), await new_store(postgres_url)
    heard: list[str] = []
    spy = await asyncpg.connect(postgres_url)  # listens the way any process would
    await spy.add_listener("durable_events", lambda *args: heard.append(args[3]))
    try:

        async def create() -> str:
            run_id = uuid.uuid4().hex
            await writer.create_run(NewRun(id=run_id, workflow="wf", input=raw(1), random_seed=1))
            await spy.execute("SELECT 1")  # a round trip: notifications sent before it have arrived
            return run_id

        unwatched = await create()
        stop = await watcher.subscribe_live(lambda *_: None, lambda _: None)
        watched = await create()
        # The database drops the watch connection: the subscriber takes the lock again, appends notify again.
        await spy.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                          "durable-watch")  # fmt: skip
        async with asyncio.timeout(TIMEOUT):
            while f"{await create()} 1 1" not in heard:
                await asyncio.sleep(0.01)
        stop()
        async with asyncio.timeout(TIMEOUT):
            while True:  # appends notify until the server has seen the connection go
                after = await create()
                if f"{after} 1 1" not in heard:
                    break
        assert heard.count(f"{watched} 1 1") == 1
        assert f"{unwatched} 1 1" not in heard
    finally:
        await spy.close()


@pytest.mark.postgres
async def test_one_notification_tells_of_many_runs_and_odd_run_ids(
    postgres_url: str, new_store: Callable[..., Awaitable[Store]]
) -> None:
    import asyncpg

    writer, watcher = await new_store(postgres_url), await new_store(postgres_url)
    heard: list[tuple[str, int, int | None]] = []
    notifications: list[str] = []
    spy = await asyncpg.connect(postgres_url)
    await spy.add_listener("durable_events", lambda *args: notifications.append(args[3]))
    stop = await watcher.subscribe_live(lambda *notice: heard.append(notice), lambda _: None)
    ids = [f"run {i} with spaces" for i in range(300)] + ["x" * 5000, "two\nlines"]
    await writer.create_runs([NewRun(id=run_id, workflow="wf", input=raw(1), random_seed=1) for run_id in ids])
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(heard) < 301:
                await asyncio.sleep(0.01)
    finally:
        stop()
        await spy.close()
    assert 2 <= len(notifications) <= 3 and all(len(n.encode()) < 7900 for n in notifications)
    # 301 runs in one statement: a few NOTIFYs of many lines; a run id with a line break gets none (a poll finds
    # it), the others are told exactly once.
    assert sorted(heard) == sorted((run_id, 1, 1) for run_id in ids[:301])


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), min_size=1,
                        max_size=3000)
                .filter(lambda text: len(text.encode()) < 7900)))  # what encode_notice lets through
@settings(max_examples=50, deadline=None)
def test_step_notices_are_packed_into_notify_payloads_that_fit(payloads: list[str]) -> None:
    from history._live import MAX_NOTICE_BYTES
    from history._pg_live import _pack

    packed = _pack(payloads)
    assert [line for payload in packed for line in payload.split("\n")] == payloads
    assert all(len(payload.encode()) < MAX_NOTICE_BYTES for payload in packed)


async def test_closing_a_subscription_ends_an_iteration_waiting_in_another_task(engine: durable.Engine) -> None:
    subscription = await engine.subscribe(workflow="live_steps").open()
    reader = asyncio.get_running_loop().create_task(collect(subscription))
    await asyncio.sleep(0.01)  # the reader waits for news that does not come
    subscription.close()
    assert await reader == []
