"""Listing runs: every filter of ``Store.list_runs``/``Engine.list_executions`` alone and combined, keyset
pagination in every order, ``current_step`` as a run goes, bad arguments, and ``durable list``'s flags.

Store tests run against every store (memory, SQLite, PostgreSQL). The expected answers are computed here, from
the runs as ``get_run`` reads them, with plain Python: not with the code under test.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable
from durable._cli import main
from history import (
    COMPLETED,
    FAILED,
    FINISHED_STATUSES,
    WAITING,
    ErrorInfo,
    RunRecord,
    Store,
)
from tests.test_store_contract import append, claim_one, new_run, now, step

_FAR = datetime(2999, 1, 1, tzinfo=now().tzinfo)
ORDERS = ["created_at", "-created_at", "started_at", "-started_at", "finished_at", "-finished_at", "updated_at",
          "-updated_at"]  # fmt: skip


async def make_run(
    store: Store,
    shape: str,
    *,
    workflow: str = "alpha",
    queue: str = "default",
    parent_id: str | None = None,
    dedup_key: str | None = None,
    run_id: str | None = None,
    current_step: str = "charge",
) -> RunRecord:
    """A run in the state ``shape``: ``pending`` (never started: it sleeps until 2999, so no claim takes it),
    ``running`` (at step ``current_step``), ``waiting`` (released to sleep), ``completed`` or ``failed``.
    Every other run of the store is leased, asleep or finished, so the claim takes this one."""
    new = new_run(run_id, workflow=workflow, queue=queue, parent_id=parent_id, dedup_key=dedup_key,
                  wake_at=_FAR if shape == "pending" else None)  # fmt: skip
    await store.create_run(new)
    if shape != "pending":
        claim = await claim_one(store, workflow=workflow, lease=600)
        assert claim.run.id == new.id
        if shape == "running":
            assert await store.append([append(claim, step(1), current_step=current_step)]) == [None]
        elif shape == "waiting":
            item = append(claim, status=WAITING, wake_at=_FAR, release=True, current_step="sleep")
            assert await store.append([item]) == [None]
        else:
            error = None if shape == COMPLETED else ErrorInfo(type="X", message="boom")
            item = append(claim, status=shape, result=b"1" if shape == COMPLETED else None, error=error,
                          current_step="ignored: a finished run has none")  # fmt: skip
            assert await store.append([item]) == [None]
    run = await store.get_run(new.id)
    assert run is not None
    return run


async def list_all(store: Store, limit: int = 1000, **filters: Any) -> list[str]:
    """Every run id ``list_runs`` gives for ``filters``, page after page."""
    ids: list[str] = []
    cursor = None
    while True:
        page = await store.list_runs(limit=limit, cursor=cursor, **filters)
        assert len(page.runs) <= limit
        ids += [run.id for run in page.runs]
        if page.next_cursor is None:
            return ids
        assert page.runs, "a page with a next cursor is never empty"
        cursor = page.next_cursor


def expected(runs: Sequence[RunRecord], order_by: str = "-created_at", **filters: Any) -> list[str]:
    """What listing ``runs`` with ``filters`` in ``order_by`` must give, computed plainly."""
    key = order_by.lstrip("-")

    def keep(run: RunRecord) -> bool:
        statuses = filters.get("status")
        if isinstance(statuses, str):
            statuses = [statuses]
        step = filters.get("current_step")
        search = filters.get("search")
        return all((
            getattr(run, key) is not None,
            filters.get("workflow") in (None, run.workflow),
            statuses is None or run.status in statuses,
            step is None or (run.status not in FINISHED_STATUSES and step in (run.current_step or "").split(",")),
            filters.get("started_after") is None or run.created_at >= filters["started_after"],
            filters.get("started_before") is None or run.created_at < filters["started_before"],
            filters.get("queue") in (None, run.queue),
            filters.get("parent_id") in (None, run.parent_id),
            search is None or run.id.startswith(search) or (run.dedup_key or "").startswith(search),
        ))  # fmt: skip

    kept = sorted((r for r in runs if keep(r)), key=lambda r: (getattr(r, key), r.id), reverse=order_by[0] == "-")
    return [r.id for r in kept]


# --- each filter, alone and combined -------------------------------------------------------------------------


async def test_each_filter_alone_and_combined_returns_exactly_the_matching_runs(store: Store) -> None:
    parent = await make_run(store, "running", workflow="parent", run_id="p-1", current_step="spawn")
    runs = [
        parent,
        await make_run(store, "pending", workflow="alpha", queue="emails", dedup_key="order-17"),
        await make_run(store, "running", workflow="alpha", current_step="charge", parent_id=parent.id),
        await make_run(store, "running", workflow="beta", current_step="charge,ship", queue="emails"),
        await make_run(store, "running", workflow="beta", current_step="charger"),
        await make_run(store, "waiting", workflow="alpha", parent_id=parent.id, dedup_key="order-170"),
        await make_run(store, COMPLETED, workflow="alpha", dedup_key="order-2"),
        await make_run(store, FAILED, workflow="beta", queue="emails", parent_id=parent.id),
    ]
    _, pending, charging, parallel, charger, waiting, done, failed = runs
    middle = charger.created_at
    cases: list[tuple[dict[str, Any], list[RunRecord]]] = [
        ({}, runs),
        ({"workflow": "alpha"}, [pending, charging, waiting, done]),
        ({"status": "running"}, [charging, parallel, charger, parent]),
        ({"status": ["failed", "completed"]}, [done, failed]),
        ({"status": ["pending", "waiting"]}, [pending, waiting]),
        ({"current_step": "charge"}, [charging, parallel]),  # one of parallel steps; "charger" is another name
        ({"current_step": "ship"}, [parallel]),
        ({"current_step": "sleep"}, [waiting]),
        ({"current_step": "ignored: a finished run has none"}, []),
        ({"queue": "emails"}, [pending, parallel, failed]),
        ({"parent_id": parent.id}, [charging, waiting, failed]),
        ({"search": "order-17"}, [pending, waiting]),  # dedup key prefix, finished or not
        ({"search": "order-2"}, [done]),
        ({"search": charger.id[:12]}, [charger]),  # run id prefix
        ({"search": "p-"}, [parent]),
        ({"started_after": middle}, runs[4:]),  # at or after: inclusive
        ({"started_before": middle}, runs[:4]),  # before: exclusive
        ({"workflow": "alpha", "status": "running"}, [charging]),
        ({"workflow": "beta", "current_step": "charge", "queue": "emails"}, [parallel]),
        ({"parent_id": parent.id, "status": ["waiting", "failed"], "started_after": middle}, [waiting, failed]),
        ({"queue": "emails", "search": "order-"}, [pending]),
        ({"workflow": "nope"}, []),
    ]
    for filters, matching in cases:
        want = sorted(matching, key=lambda r: (r.created_at, r.id), reverse=True)
        assert await list_all(store, **filters) == [r.id for r in want], filters
        assert await list_all(store, limit=2, **filters) == [r.id for r in want], filters
    # The orders by a time leave out runs without it: never started, never finished.
    assert await list_all(store, order_by="-finished_at") == expected(runs, "-finished_at") != []
    assert pending.id not in await list_all(store, order_by="started_at")
    assert await list_all(store, order_by="started_at", limit=3) == expected(runs, "started_at")


async def test_appends_set_keep_or_clear_current_step_and_finishing_clears_it(store: Store) -> None:
    await store.create_run(new_run(workflow="steps"))
    claim = await claim_one(store, workflow="steps", lease=600)
    seq = claim.run.next_seq

    async def step_append(events: list[Any], **fields: Any) -> str | None:
        nonlocal seq
        assert await store.append([append(claim, events, first_seq=seq, **fields)]) == [None]
        seq += len(events)
        run = await store.get_run(claim.run.id)
        assert run is not None
        return run.current_step

    assert claim.run.current_step is None  # nothing recorded yet
    assert await step_append(step(1), current_step="charge,ship") == "charge,ship"
    assert await step_append(step(2)) == "charge,ship"  # UNSET: left as it is
    assert await step_append([], current_step=None) is None
    assert await step_append(step(3), current_step="event:paid") == "event:paid"
    assert await step_append([], status=COMPLETED, result=b"1", current_step="anything") is None


async def test_note_current_step_writes_only_for_the_lease_holder_and_never_on_a_finished_run(store: Store) -> None:
    await store.create_run(new_run("noted", workflow="steps"))
    claim = await claim_one(store, workflow="steps", lease=600)
    before = await store.get_run("noted")
    assert before is not None

    async def stored() -> str | None:
        run = await store.get_run("noted")
        assert run is not None
        return run.current_step

    await store.note_current_step("noted", "someone-else", claim.run.lease_epoch, "stolen")
    await store.note_current_step("noted", claim.run.lease_owner or "", claim.run.lease_epoch + 1, "stale epoch")
    assert await stored() is None
    await store.note_current_step("noted", claim.run.lease_owner or "", claim.run.lease_epoch, "charge")
    after = await store.get_run("noted")
    assert after is not None and after.current_step == "charge"
    assert after.updated_at == before.updated_at  # a hint for readers, not a change of state
    await store.note_current_step("missing", claim.run.lease_owner or "", 1, "x")  # nothing to write: no error
    assert await store.append([append(claim, [], status=COMPLETED, result=b"1", release=True)]) == [None]
    await store.note_current_step("noted", claim.run.lease_owner or "", claim.run.lease_epoch, "too late")
    assert await stored() is None


async def test_a_finished_runs_updated_at_is_its_finished_at(store: Store) -> None:
    # PostgreSQL lists by updated_at through the finished_at index for finished runs (no index on updated_at):
    # that holds only while nothing updates a finished run's row.
    for shape in (COMPLETED, FAILED):
        run = await make_run(store, shape)
        assert run.finished_at is not None and run.updated_at == run.finished_at
        await store.request_cancel(run.id, "too late")
        with pytest.raises(durable.RunAlreadyFinished):
            await store.send_message(run.id, "event", "late", b"1")
        assert await store.get_run(run.id) == run


# --- pagination: every matching run exactly once, in order ---------------------------------------------------

_SHAPES = st.sampled_from(["pending", "running", "waiting", COMPLETED, FAILED])
_RUNS = st.lists(
    st.tuples(_SHAPES, st.sampled_from(["alpha", "beta"]), st.sampled_from(["default", "q2"]),
              st.sampled_from([None, "parent-a", "parent-b"]), st.sampled_from([None, "k-1", "k-12", "k-2"]),
              st.sampled_from(["charge", "ship", "charge,ship"])),
    min_size=0, max_size=5,
)  # fmt: skip
_FILTERS = st.fixed_dictionaries(
    {},
    optional={
        "workflow": st.sampled_from(["alpha", "beta"]),
        "status": st.one_of(st.sampled_from(["pending", "running", "waiting", COMPLETED, FAILED]),
                            st.lists(st.sampled_from(["pending", "running", "waiting", COMPLETED, FAILED]),
                                     min_size=1, max_size=3, unique=True)),
        "current_step": st.sampled_from(["charge", "ship", "sleep"]),
        "queue": st.sampled_from(["default", "q2"]),
        "parent_id": st.sampled_from(["parent-a", "parent-b"]),
        "search": st.sampled_from(["k-1", "k-", "0", "a", "f"]),
    },
)  # fmt: skip


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(new_runs=_RUNS, filters=_FILTERS, order_by=st.sampled_from(ORDERS), limit=st.integers(1, 7),
       window=st.tuples(st.integers(0, 40), st.integers(0, 40)), bounded=st.sampled_from(["", "after", "before"]))
async def test_pages_visit_every_matching_run_exactly_once_in_order(
    store: Store, new_runs: list[tuple[str, str, str, str | None, str | None, str]], filters: dict[str, Any],
    order_by: str, limit: int, window: tuple[int, int], bounded: str,
) -> None:  # fmt: skip
    # Runs accumulate over the examples in the store; the expectation is computed from all of them.
    for shape, workflow, queue, parent_id, dedup_key, current in new_runs:
        key = None if dedup_key is None or shape not in FINISHED_STATUSES else f"{dedup_key}{uuid.uuid4().hex[:4]}"
        await make_run(store, shape, workflow=workflow, queue=queue, parent_id=parent_id, dedup_key=key,
                       current_step=current)  # fmt: skip
    everything = [r for r in [await store.get_run(i) for i in await list_all(store)] if r is not None]
    if everything and bounded:  # a window boundary on an existing run's creation time: inclusivity matters
        moments = sorted(r.created_at for r in everything)
        filters["started_after" if bounded == "after" else "started_before"] = moments[window[0] % len(moments)]
    want = expected(everything, order_by, **filters)
    assert await list_all(store, limit=limit, order_by=order_by, **filters) == want


# --- current_step as a run goes --------------------------------------------------------------------------------

_gate = threading.Event()
_entered = threading.Event()


@durable.step(name="list_quick")
async def _quick() -> int:
    return 1


@durable.step(name="list_blocking")
def _blocking() -> int:
    _entered.set()
    assert _gate.wait(30), "the test never released the step"
    return 2


@durable.workflow(name="list_steps")
async def _steps_then_sleep(ctx: durable.WorkflowContext) -> int:
    await _quick()
    value = await _blocking()
    await asyncio.sleep(0.3)  # a durable timer: recorded, visible as "sleep" while it lasts
    return value


async def test_current_step_shows_the_running_step_then_the_sleep_and_clears_when_finished(engine_url: str) -> None:
    _gate.clear()
    _entered.clear()
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(_steps_then_sleep)
        await asyncio.to_thread(_entered.wait, 30)
        execution = await engine.get_execution(run.id)
        assert (execution.status, execution.current_step) == ("running", "list_blocking")
        page = await engine.list_executions(current_step="list_blocking")
        assert [e.id for e in page] == [run.id] and page.items[0].current_step == "list_blocking"
        _gate.set()
        for _ in range(200):  # the step's append records the sleep that follows it
            execution = await engine.get_execution(run.id)
            if execution.current_step != "list_blocking" or execution.finished_at is not None:
                break
            await asyncio.sleep(0.01)
        if execution.finished_at is None:  # the 0.3 s sleep may be over by now on a slow machine
            assert execution.current_step == "sleep"
        assert await run.result(timeout=20) == 2
        finished = await engine.get_execution(run.id)
        assert finished.current_step is None
        assert len(await engine.list_executions(current_step="list_blocking")) == 0


_both = threading.Barrier(3)  # the two parallel steps and the test
_parallel_gate = threading.Event()


def _hold() -> str:
    _both.wait(30)
    assert _parallel_gate.wait(30), "the test never released the steps"
    return "done"


@durable.step(name="list_pack")
def _pack() -> str:
    return _hold()


@durable.step(name="list_label")
def _label() -> str:
    return _hold()


@durable.workflow(name="list_parallel_then_event")
async def _parallel_then_event(ctx: durable.WorkflowContext) -> Any:
    await _quick()
    await asyncio.gather(_pack(), _label())
    return await ctx.wait_for_event("paid")


async def _current_step_becomes(
    engine: durable.Engine, run_id: str, wanted: str, status: str = "running"
) -> durable.Execution:
    """The run once its current_step is ``wanted`` and its status ``status`` (each change is an append away)."""
    for _ in range(1000):
        execution = await engine.get_execution(run_id)
        if (execution.current_step, execution.status) == (wanted, status) or execution.finished_at is not None:
            return execution
        await asyncio.sleep(0.01)
    return execution


async def test_current_step_names_parallel_steps_then_the_event_waited_for(engine_url: str) -> None:
    _both.reset()
    _parallel_gate.clear()
    async with durable.Engine(engine_url) as engine:
        run = await engine.start(_parallel_then_event)
        await asyncio.to_thread(_both.wait, 30)  # both steps are running now
        execution = await engine.get_execution(run.id)
        assert execution.current_step == "list_pack,list_label"
        for name in ("list_pack", "list_label"):
            assert [e.id for e in await engine.list_executions(current_step=name)] == [run.id]
        _parallel_gate.set()
        execution = await _current_step_becomes(engine, run.id, "event:paid", "waiting")  # then parked
        assert (execution.status, execution.current_step) == ("waiting", "event:paid")
        assert [e.id for e in await engine.list_executions(current_step="event:paid", status="waiting")] == [run.id]
        await engine.send_event(run.id, "paid", {"amount": 3})
        assert await run.result(timeout=20) == {"amount": 3}
        assert (await engine.get_execution(run.id)).current_step is None


_first_gate = threading.Event()
_woken_gate = threading.Event()


@durable.step(name="list_first")
def _first() -> str:
    assert _first_gate.wait(30), "the test never released the first step"
    return "first"


@durable.step(name="list_after_sleep")
def _after_sleep() -> str:
    assert _woken_gate.wait(30), "the test never released the step after the sleep"
    return "woken"


@durable.workflow(name="list_long_first_step")
async def _long_first_step(ctx: durable.WorkflowContext) -> list[str]:
    first = await _first()
    await asyncio.sleep(0.2)  # released (horizon 0.05): the row says "sleep" until the woken run's append
    return [first, await _after_sleep()]


async def test_current_step_names_a_long_step_no_append_has_recorded_yet(engine_url: str) -> None:
    # A fresh run's first step has no append before it ends: the worker writes current_step on its own once it
    # has run a second, so a stuck first step is found by its name. After a wake-up, the TimerFired append names
    # the step that follows.
    _first_gate.clear()
    _woken_gate.clear()
    async with durable.Engine(engine_url, horizon=0.05) as engine:
        run = await engine.start(_long_first_step)
        execution = await _current_step_becomes(engine, run.id, "list_first")
        assert (execution.status, execution.current_step) == ("running", "list_first")
        assert [e.id for e in await engine.list_executions(current_step="list_first")] == [run.id]
        _first_gate.set()
        execution = await _current_step_becomes(engine, run.id, "list_after_sleep")
        assert (execution.status, execution.current_step) == ("running", "list_after_sleep")
        _woken_gate.set()
        assert await run.result(timeout=20) == ["first", "woken"]
        assert (await engine.get_execution(run.id)).current_step is None


# --- bad arguments -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"status": "exploded"}, "unknown status 'exploded'"),
        ({"status": ["running", "nope"]}, "unknown status 'nope'"),
        ({"status": []}, r"status=\[\] matches no run"),
        ({"order_by": "created"}, "unknown order_by 'created'"),
        ({"order_by": "-id"}, "unknown order_by '-id'"),
        ({"limit": 0}, "limit must be"),
        ({"limit": 1001}, "limit must be"),
        ({"limit": True}, "limit must be"),
        ({"started_after": datetime(2026, 1, 1)}, "started_after=2026-01-01T00:00:00 has no time zone"),
        ({"started_before": "yesterday"}, "started_before must be a datetime"),
        ({"search": ""}, "search must be a non-empty string"),
        ({"search": "x" * 201}, "search is 201 characters long"),
        ({"current_step": "a\x00b"}, "current_step must be a non-empty string without NUL"),
        ({"cursor": "garbage!"}, "invalid cursor"),
    ],
)
async def test_bad_arguments_are_clear_value_errors(engine_url: str, filters: dict[str, Any], message: str) -> None:
    async with durable.Engine(engine_url, worker=False) as engine:
        with pytest.raises(ValueError, match=message):
            await engine.list_executions(**filters)


async def test_a_cursor_only_continues_the_order_it_was_made_for(store: Store) -> None:
    for _ in range(3):
        await make_run(store, COMPLETED)
    page = await store.list_runs(limit=1, order_by="-finished_at")
    assert page.next_cursor is not None
    with pytest.raises(ValueError, match="ordered by '-finished_at', not '-created_at'"):
        await store.list_runs(limit=1, cursor=page.next_cursor)
    with pytest.raises(durable.DurableError, match="invalid cursor"):  # also a DurableError, as before
        await store.list_runs(cursor=page.next_cursor[:-3] + "!!!")
    rest = await store.list_runs(limit=5, order_by="-finished_at", cursor=page.next_cursor)
    assert len(rest.runs) == 2 and rest.next_cursor is None


async def test_a_cursor_of_the_first_format_still_continues_newest_first(store: Store) -> None:
    import base64

    runs = [await make_run(store, "pending") for _ in range(3)]
    newest_first = sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)
    first = newest_first[0]
    legacy = base64.urlsafe_b64encode(f"{first.created_at.isoformat()}|{first.id}".encode()).decode()
    page = await store.list_runs(cursor=legacy)
    assert [r.id for r in page.runs] == [r.id for r in newest_first[1:]]


# --- the command line ------------------------------------------------------------------------------------------


def test_durable_list_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'list.db'}"

    async def seed() -> list[RunRecord]:
        store = durable_store(url)
        await store.open()
        try:
            return [
                await make_run(store, "running", workflow="alpha", queue="emails", current_step="send_mail",
                               dedup_key="invoice-9"),
                await make_run(store, FAILED, workflow="beta", parent_id="boss"),
                await make_run(store, "pending", workflow="alpha"),
            ]  # fmt: skip
        finally:
            await store.close()

    sending, failed, pending = asyncio.run(seed())

    def listed(*flags: str) -> tuple[int, str, str]:
        code = main(["list", "--database-url", url, *flags])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = listed("--step", "send_mail")
    assert code == 0 and sending.id in out and "send_mail" in out and failed.id not in out
    assert failed.id in listed("--parent", "boss")[1] and sending.id not in listed("--parent", "boss")[1]
    out = listed("--queue", "emails")[1]
    assert sending.id in out and pending.id not in out
    assert sending.id in listed("--search", "invoice-")[1]
    out = listed("--status", "failed", "--status", "pending")[1]
    assert failed.id in out and pending.id in out and sending.id not in out
    assert all(r.id in listed("--since", "1h")[1] for r in (sending, failed, pending))
    assert listed("--until", "1h")[1].strip() == "no runs match"
    assert listed("--since", (pending.created_at + timedelta(seconds=1)).isoformat())[1].strip() == "no runs match"
    code, out, _ = listed("--order", "finished_at")
    assert code == 0 and failed.id in out and sending.id not in out
    code, out, _ = listed("--limit", "1", "--order", "created_at")
    assert sending.id in out and "--cursor" in out
    cursor = out.split("--cursor ", 1)[1].split()[0]
    out = listed("--limit", "1", "--order", "created_at", "--cursor", cursor)[1]
    assert failed.id in out and sending.id not in out
    code, _, err = listed("--since", "3x")
    assert code == 2 and "'3x' is not a duration ago" in err
    code, _, err = listed("--order", "name")
    assert code == 2 and "'name': use one of created_at" in err
    code, _, err = listed("--cursor", cursor)  # made for created_at ascending, used newest first
    assert code == 2 and "not '-created_at'" in err
    assert main(["show", sending.id, "--database-url", url]) == 0
    shown = capsys.readouterr().out
    assert "doing" in shown and "send_mail" in shown


def durable_store(url: str) -> Store:
    from history import open_store

    return open_store(url)
