"""The Store contract, run against every store (memory, SQLite, PostgreSQL): ``MemoryStore`` is the reference and
the database stores must behave exactly like it. What only the database stores promise (the database itself
refuses to change events, processes share a database, a down database is reported clearly) is in
``test_store_databases.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from history import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    WAITING,
    Append,
    Claim,
    DurableError,
    ErrorInfo,
    Event,
    HistoryConflict,
    LeaseLost,
    NewRun,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunNotFound,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
    Store,
    TimerFired,
    TimerStarted,
    ValueRecorded,
)

UTC = UTC
NewStore = Callable[..., Awaitable[Store]]


def raw(value: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(value))


def new_run(run_id: str | None = None, workflow: str = "wf", **fields: Any) -> NewRun:
    return NewRun(id=run_id or uuid.uuid4().hex, workflow=workflow, input=raw({"n": 1}), random_seed=42, **fields)


def now() -> datetime:
    return datetime.now(UTC)


def step(command_id: int, result: Any = None) -> list[Event]:
    return [
        StepScheduled(command_id=command_id, name="charge", args=raw([command_id]), digest="d"),
        StepCompleted(command_id=command_id, name="charge", attempt=1, result=raw(result), duration_ms=0.5),
    ]


def append(claim: Claim, events: Sequence[Event] = (), first_seq: int | None = None, **fields: Any) -> Append:
    """An append by the holder of ``claim`` at the run's next sequence number."""
    run = claim.run
    return Append(
        run_id=run.id,
        worker_id=run.lease_owner or "",
        epoch=run.lease_epoch,
        first_seq=run.next_seq if first_seq is None else first_seq,
        events=list(events),
        at=now(),
        **fields,
    )


async def claim_one(store: Store, worker: str = "w1", workflow: str = "wf", lease: float = 30) -> Claim:
    claims = await store.claim(worker, [workflow], 1, lease)
    assert len(claims) == 1, claims
    return claims[0]


async def start(store: Store, workflow: str = "wf", **fields: Any) -> Claim:
    """Create a run and claim it."""
    run, _ = await store.create_run(new_run(workflow=workflow, **fields))
    claim = await claim_one(store, workflow=workflow)
    assert claim.run.id == run.id
    return claim


def assert_utc(moment: datetime | None) -> None:
    assert moment is not None and moment.utcoffset() == timedelta(0), moment


# --- creating and reading runs --------------------------------------------------------------------------------


async def test_create_run_records_run_started_as_event_one(store: Store) -> None:
    assert isinstance(store, Store)
    new = new_run(queue="q", priority=3, parent_id="parent")
    run, created = await store.create_run(new)
    assert created
    assert (run.id, run.workflow, run.status, run.input, run.next_seq) == (new.id, "wf", "pending", b'{"n":1}', 2)
    assert (run.queue, run.priority, run.parent_id, run.lease_epoch) == ("q", 3, "parent", 0)
    assert run.lease_owner is None and run.finished_at is None and run.started_at is None
    assert_utc(run.created_at)
    assert run.updated_at == run.created_at
    assert await store.get_run(new.id) == run
    [first] = await store.read_history(new.id)
    assert first == RecordedEvent(
        seq=1,
        at=run.created_at,
        event=RunStarted(workflow="wf", input=new.input, run_id=new.id, random_seed=42, parent_id="parent"),
    )


async def test_create_run_is_idempotent_on_the_run_id(store: Store) -> None:
    first, created = await store.create_run(new_run("same"))
    again, created_again = await store.create_run(
        NewRun(id="same", workflow="other", input=raw("different"), random_seed=7)
    )
    assert created and not created_again
    assert again == first
    assert len(await store.read_history("same")) == 1


async def test_concurrent_creates_of_one_id_create_it_once(store: Store) -> None:
    results = await asyncio.gather(*(store.create_run(new_run("dup")) for _ in range(5)))
    assert sorted(created for _, created in results) == [False] * 4 + [True]
    assert len({run.created_at for run, _ in results}) == 1
    assert len(await store.read_history("dup")) == 1


async def test_unknown_runs_read_as_nothing(store: Store) -> None:
    assert await store.get_run("nope") is None
    assert await store.read_history("nope") == []


async def test_read_history_after_a_sequence_number(store: Store) -> None:
    claim = await start(store)
    assert await store.append([append(claim, step(1) + step(2))]) == [None]
    history_ = await store.read_history(claim.run.id)
    assert [r.seq for r in history_] == [1, 2, 3, 4, 5]
    assert await store.read_history(claim.run.id, after_seq=3) == history_[3:]
    assert await store.read_history(claim.run.id, after_seq=5) == []


# --- claiming ------------------------------------------------------------------------------------------------


async def test_claim_leases_the_run_and_returns_its_history(store: Store) -> None:
    run, _ = await store.create_run(new_run())
    before = now()
    claim = await claim_one(store, "w1", lease=30)
    leased = claim.run
    assert (leased.id, leased.status, leased.lease_owner, leased.lease_epoch) == (run.id, RUNNING, "w1", 1)
    assert leased.wake_at is None
    assert_utc(leased.started_at)
    assert_utc(leased.lease_expires_at)
    assert leased.lease_expires_at is not None
    assert before + timedelta(seconds=25) < leased.lease_expires_at < before + timedelta(seconds=35)
    assert claim.history == await store.read_history(run.id)
    assert await store.get_run(run.id) == leased
    assert await store.claim("w2", ["wf"], 10, 30) == []  # leased: nobody else gets it


async def test_concurrent_claimers_never_get_the_same_run(store: Store) -> None:
    ids = {(await store.create_run(new_run()))[0].id for _ in range(12)}
    batches = await asyncio.gather(*(store.claim(f"w{i}", ["wf"], 3, 30) for i in range(6)))
    claimed = [c.run.id for batch in batches for c in batch]
    assert len(claimed) == len(set(claimed)) == 12
    assert set(claimed) == ids
    for i, batch in enumerate(batches):
        assert all(c.run.lease_owner == f"w{i}" and c.run.lease_epoch == 1 for c in batch)


async def test_two_store_instances_never_claim_the_same_run(store: Store, store_kind: str, new_store: NewStore) -> None:
    if store_kind == "memory":
        pytest.skip("a memory store cannot be shared")
    other = await new_store()  # another process on the same database
    ids = {(await store.create_run(new_run()))[0].id for _ in range(20)}
    batches = await asyncio.gather(
        *(s.claim(f"{name}{i}", ["wf"], 2, 30) for i in range(6) for name, s in (("a", store), ("b", other)))
    )
    claimed = [c.run.id for batch in batches for c in batch]
    assert len(claimed) == len(set(claimed)) == 20
    assert set(claimed) == ids


async def test_claim_takes_only_runs_whose_wake_time_has_come(store: Store) -> None:
    await store.create_run(new_run(wake_at=now() + timedelta(hours=1)))  # not due for an hour
    # A second's margin: on a busy machine the claim below must still come before `soon` is due.
    soon, _ = await store.create_run(new_run(wake_at=now() + timedelta(seconds=1)))
    due, _ = await store.create_run(new_run(wake_at=now() - timedelta(seconds=1)))
    [first] = await store.claim("w1", ["wf"], 10, 30)
    assert first.run.id == due.id
    assert await store.next_wake_at(["wf"]) == soon.wake_at  # before the lease of `due` expires
    assert soon.wake_at is not None
    await asyncio.sleep((soon.wake_at - now()).total_seconds() + 0.1)
    [claim] = await store.claim("w1", ["wf"], 10, 30)
    assert claim.run.id == soon.id and claim.run.wake_at is None
    # `later` wakes in an hour; the lease taken on `due` expires (if never renewed) sooner: that comes first.
    assert await store.next_wake_at(["wf"]) == first.run.lease_expires_at


async def test_claim_order_is_priority_then_wake_or_creation_time(store: Store) -> None:
    for run_id, priority in (("low", 0), ("high", 5), ("mid", 1), ("high2", 5)):
        await store.create_run(new_run(run_id, priority=priority))
    # Created last but due an hour ago: ahead of "low" at the same priority.
    await store.create_run(new_run("early", priority=0, wake_at=now() - timedelta(hours=1)))
    assert [c.run.id for c in await store.claim("w1", ["wf"], 1, 30)] == ["high"]
    assert [c.run.id for c in await store.claim("w1", ["wf"], 10, 30)] == ["high2", "mid", "early", "low"]


async def test_claim_serves_only_the_given_workflows(store: Store) -> None:
    await store.create_run(new_run("a", workflow="a"))
    await store.create_run(new_run("b", workflow="b"))
    await store.create_run(new_run("c", workflow="c"))
    assert await store.claim("w1", [], 10, 30) == []
    assert await store.claim("w1", ["zzz"], 10, 30) == []
    assert sorted(c.run.id for c in await store.claim("w1", ["a", "c"], 10, 30)) == ["a", "c"]
    assert [c.run.id for c in await store.claim("w1", ["a", "b", "c"], 10, 30)] == ["b"]


async def test_an_expired_lease_is_taken_over_with_a_higher_epoch(store: Store) -> None:
    await store.create_run(new_run("r"))
    first = await claim_one(store, "w1", lease=0.2)
    assert await store.claim("w2", ["wf"], 1, 30) == []
    await asyncio.sleep(0.3)
    second = await claim_one(store, "w2", lease=30)
    assert (second.run.id, second.run.lease_owner, second.run.lease_epoch) == ("r", "w2", 2)
    assert second.run.started_at == first.run.started_at
    [outcome] = await store.append([append(first, step(1))])
    assert type(outcome) is LeaseLost
    assert await store.append([append(second, step(1))]) == [None]
    beat = await store.heartbeat("w1", {"r": 1}, 30)
    assert beat.lost == {"r"}


async def test_an_expired_lease_cannot_append_even_if_nobody_took_the_run(store: Store) -> None:
    await store.create_run(new_run("r"))
    claim = await claim_one(store, "w1", lease=0.2)
    await asyncio.sleep(0.3)
    [outcome] = await store.append([append(claim, step(1))])
    assert type(outcome) is LeaseLost
    assert (await store.heartbeat("w1", {"r": 1}, 30)).lost == {"r"}
    with pytest.raises(LeaseLost):
        await store.mark_blocked("r", "w1", 1, "report", now())


async def test_claim_limit_zero_claims_nothing(store: Store) -> None:
    await store.create_run(new_run())
    assert await store.claim("w1", ["wf"], 0, 30) == []


# --- appending -----------------------------------------------------------------------------------------------

EVERY_EVENT: list[Event] = [
    StepScheduled(command_id=1, name="fetch", args=raw({"url": "https://é.example", "n": [1, 2.5, None]}), digest="x"),
    StepFailed(
        command_id=1, name="fetch", attempt=1, error=ErrorInfo("OSError", "down\x00", "tb"), duration_ms=3.25,
        retry_at=datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    ),
    StepCompleted(command_id=1, name="fetch", attempt=2, result=raw({"ok": True, "big": 2**62}), duration_ms=1e-3),
    TimerStarted(command_id=2, fire_at=datetime(2031, 5, 6, 7, 8, 9, 1, tzinfo=UTC), seconds=86400.5),
    TimerFired(command_id=2),
    ValueRecorded(command_id=3, kind="uuid4", value=raw("6d3c7a9e-4c53-4a8f-9d0e-6e0e0f0e6b6f")),
]  # fmt: skip


async def test_appended_events_read_back_identical(store: Store) -> None:
    claim = await start(store)
    at = datetime(2029, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    item = Append(run_id=claim.run.id, worker_id="w1", epoch=1, first_seq=2, events=EVERY_EVENT, at=at)
    assert await store.append([item]) == [None]
    history_ = await store.read_history(claim.run.id)
    assert history_[1:] == [RecordedEvent(seq=2 + i, at=at, event=e) for i, e in enumerate(EVERY_EVENT)]
    stored, sent = history_[1].event, EVERY_EVENT[0]
    assert isinstance(stored, StepScheduled) and isinstance(sent, StepScheduled)
    assert bytes(stored.args) == bytes(sent.args)  # the payload's bytes, as sent
    assert all(r.at.utcoffset() == timedelta(0) for r in history_)
    run = await store.get_run(claim.run.id)
    assert run is not None and run.next_seq == 2 + len(EVERY_EVENT) and run.lease_owner == "w1"


async def test_an_append_without_events_updates_the_row(store: Store) -> None:
    claim = await start(store)
    assert await store.append([append(claim, status=WAITING)]) == [None]
    run = await store.get_run(claim.run.id)
    assert run is not None and run.status == WAITING and run.next_seq == 2 and run.lease_owner == "w1"
    assert run.updated_at >= claim.run.updated_at


async def test_an_append_with_a_stale_epoch_or_another_worker_is_lease_lost(store: Store) -> None:
    claim = await start(store)
    stale = msgspec.structs.replace(append(claim, step(1)), epoch=0)
    stranger = msgspec.structs.replace(append(claim, step(1)), worker_id="w2")
    missing = msgspec.structs.replace(append(claim, step(1)), run_id="nope")
    outcomes = await store.append([stale, stranger, missing])
    assert [type(o) for o in outcomes] == [LeaseLost, LeaseLost, LeaseLost]
    assert claim.run.id in str(outcomes[0])
    assert len(await store.read_history(claim.run.id)) == 1


async def test_an_append_at_the_wrong_sequence_number_is_a_history_conflict(store: Store) -> None:
    claim = await start(store)
    assert await store.append([append(claim, step(1))]) == [None]
    for first_seq in (2, 5):
        [outcome] = await store.append([append(claim, step(2), first_seq=first_seq)])
        assert isinstance(outcome, HistoryConflict)
        assert "next event is 4" in str(outcome)
    assert len(await store.read_history(claim.run.id)) == 3


async def test_a_refused_item_does_not_stop_the_rest_of_its_batch(store: Store) -> None:
    a, b, c = [await start(store) for _ in range(3)]
    outcomes = await store.append(
        [append(a, step(1)), append(b, step(1), first_seq=9), append(c, step(1), status=COMPLETED, result=b"1")]
    )
    assert outcomes[0] is None and isinstance(outcomes[1], HistoryConflict) and outcomes[2] is None
    assert [len(await store.read_history(x.run.id)) for x in (a, b, c)] == [3, 1, 3]
    finished = await store.get_run(c.run.id)
    assert finished is not None and finished.status == COMPLETED


async def test_two_appends_to_one_run_in_one_batch_apply_in_order(store: Store) -> None:
    claim = await start(store)
    first = append(claim, step(1))
    second = append(claim, step(2), first_seq=4)
    stale = append(claim, step(3), first_seq=4)
    outcomes = await store.append([first, second, stale])
    assert outcomes[:2] == [None, None] and isinstance(outcomes[2], HistoryConflict)
    assert [r.seq for r in await store.read_history(claim.run.id)] == [1, 2, 3, 4, 5]


async def test_an_empty_batch_does_nothing(store: Store) -> None:
    assert await store.append([]) == []


# --- releasing, finishing ------------------------------------------------------------------------------------


async def test_release_until_a_wake_time(store: Store) -> None:
    claim = await start(store)
    wake = now() + timedelta(hours=2)
    events: list[Event] = [TimerStarted(command_id=1, fire_at=wake, seconds=7200)]
    assert await store.append([append(claim, events, status=WAITING, wake_at=wake, release=True)]) == [None]
    run = await store.get_run(claim.run.id)
    assert run is not None
    assert (run.status, run.lease_owner, run.lease_expires_at, run.wake_at) == (WAITING, None, None, wake)
    assert run.lease_epoch == 1 and run.finished_at is None
    assert await store.claim("w2", ["wf"], 10, 30) == []
    assert await store.next_wake_at(["wf"]) == wake
    assert await store.next_wake_at(["other"]) is None


async def test_a_released_run_without_wake_time_is_ready_again(store: Store) -> None:
    claim = await start(store)
    assert await store.append([append(claim, step(1), release=True)]) == [None]
    again = await claim_one(store, "w2")
    assert (again.run.lease_owner, again.run.lease_epoch, again.run.next_seq) == ("w2", 2, 4)
    assert again.history == await store.read_history(claim.run.id)


async def test_an_append_that_keeps_the_lease_still_sets_wake_at(store: Store) -> None:
    claim = await start(store)
    wake = now() + timedelta(minutes=5)
    assert await store.append([append(claim, wake_at=wake)]) == [None]
    run = await store.get_run(claim.run.id)
    assert run is not None and run.wake_at == wake and run.lease_owner == "w1"
    # A leased run counts by its lease's expiry (when another worker could take it), not by its wake time.
    assert await store.next_wake_at(["wf"]) == run.lease_expires_at


@pytest.mark.parametrize(
    ("status", "fields", "event"),
    [
        (COMPLETED, {"result": b'{"total":3}'}, RunCompleted(result=raw({"total": 3}))),
        (FAILED, {"error": ErrorInfo("ValueError", "bad \u00e9\x00", "Traceback…")}, RunFailed(ErrorInfo("V", "m"))),
        (CANCELLED, {}, RunCancelled(reason="asked")),
    ],
)
async def test_a_terminal_append_finishes_the_run_for_good(
    store: Store, status: str, fields: dict[str, Any], event: Event
) -> None:
    claim = await start(store, priority=9)
    wake = now() - timedelta(seconds=1)
    assert await store.append([append(claim, [event], status=status, wake_at=wake, **fields)]) == [None]
    run = await store.get_run(claim.run.id)
    assert run is not None and run.finished and run.status == status
    assert_utc(run.finished_at)
    assert (run.lease_owner, run.lease_expires_at, run.wake_at) == (None, None, None)
    assert run.result == fields.get("result") and run.error == fields.get("error")
    assert await store.claim("w2", ["wf"], 10, 30) == []
    [late] = await store.append([append(claim, step(1))])
    assert type(late) is LeaseLost
    assert await store.next_wake_at(["wf"]) is None


async def test_a_later_append_keeps_result_and_error_it_does_not_set(store: Store) -> None:
    claim = await start(store)
    assert await store.append([append(claim, error=ErrorInfo("E", "first"))]) == [None]
    assert await store.append([append(claim, first_seq=2, result=b"1", status=COMPLETED)]) == [None]
    run = await store.get_run(claim.run.id)
    assert run is not None and run.error == ErrorInfo("E", "first") and run.result == b"1"


# --- heartbeats, cancellation, blocked runs -------------------------------------------------------------------


async def test_heartbeat_extends_held_leases_and_reports_lost_ones(store: Store) -> None:
    claim = await start(store)
    await store.create_run(new_run("short"))
    short = await claim_one(store, "w1", lease=0.3)
    beat = await store.heartbeat("w1", {claim.run.id: 1, short.run.id: 1, "gone": 1, "stale": 3}, 30)
    assert beat.lost == {"gone", "stale"} and beat.cancels == {}
    await asyncio.sleep(0.4)  # past the short lease's first expiry: the heartbeat renewed it
    assert await store.append([append(short, step(1))]) == [None]
    run = await store.get_run(short.run.id)
    assert run is not None and run.lease_expires_at is not None and run.lease_expires_at > now() + timedelta(seconds=20)
    assert (await store.heartbeat("w2", {claim.run.id: 1}, 30)).lost == {claim.run.id}
    assert (await store.heartbeat("w1", {}, 30)).lost == frozenset()


async def test_heartbeat_reports_cancel_requests(store: Store) -> None:
    claim = await start(store)
    cancelled = await store.request_cancel(claim.run.id, "user asked")
    assert cancelled.cancel_reason == "user asked" and cancelled.lease_owner == "w1"
    beat = await store.heartbeat("w1", {claim.run.id: 1}, 30)
    assert beat.cancels == {claim.run.id: "user asked"} and beat.lost == frozenset()


async def test_cancel_requests_wake_a_sleeping_run_and_leave_finished_ones_alone(store: Store) -> None:
    with pytest.raises(RunNotFound):
        await store.request_cancel("nope", "why")
    sleeper = await start(store)
    wake = now() + timedelta(days=1)
    assert await store.append([append(sleeper, status=WAITING, wake_at=wake, release=True)]) == [None]
    run = await store.request_cancel(sleeper.run.id, "stop")
    assert (run.cancel_reason, run.wake_at, run.status) == ("stop", None, WAITING)
    assert await store.get_run(sleeper.run.id) == run
    again = await claim_one(store, "w2")
    assert again.run.id == sleeper.run.id and again.run.cancel_reason == "stop"
    assert await store.append([append(again, [RunCancelled(reason="stop")], status=CANCELLED)]) == [None]
    done = await store.get_run(sleeper.run.id)
    assert await store.request_cancel(sleeper.run.id, "again") == done


async def test_mark_blocked_flags_releases_and_retries_later(store: Store) -> None:
    claim = await start(store)
    retry = now() + timedelta(seconds=1)  # a second's margin for the checks below, which come before it
    with pytest.raises(LeaseLost):
        await store.mark_blocked(claim.run.id, "w1", 0, "report", retry)
    with pytest.raises(LeaseLost):
        await store.mark_blocked("nope", "w1", 1, "report", retry)
    await asyncio.sleep(0.01)
    await store.mark_blocked(claim.run.id, "w1", 1, "command 3 changed", retry)
    run = await store.get_run(claim.run.id)
    assert run is not None and run.updated_at > claim.run.updated_at
    assert (run.blocked, run.wake_at, run.lease_owner, run.lease_expires_at) == ("command 3 changed", retry, None, None)
    assert await store.claim("w2", ["wf"], 10, 30) == []
    assert await store.next_wake_at(["wf"]) == retry
    await asyncio.sleep((retry - now()).total_seconds() + 0.1)
    again = await claim_one(store, "w2")
    assert again.run.blocked == "command 3 changed"  # still blocked until the fixed code gets further
    assert await store.append([append(again, step(1))]) == [None]
    unblocked = await store.get_run(claim.run.id)
    assert unblocked is not None and unblocked.blocked is None


async def test_next_wake_at_skips_leased_finished_and_other_workflows(store: Store) -> None:
    assert await store.next_wake_at(["wf"]) is None
    t1, t2 = now() + timedelta(hours=1), now() + timedelta(hours=2)
    await store.create_run(new_run(wake_at=t2))
    await store.create_run(new_run(workflow="other", wake_at=t1))
    assert await store.next_wake_at(["wf"]) == t2
    assert await store.next_wake_at(["wf", "other"]) == t1
    assert await store.next_wake_at([]) is None


# --- listing, registration ------------------------------------------------------------------------------------


async def test_list_runs_pages_newest_first_with_every_run_once(store: Store) -> None:
    for i in range(7):
        await store.create_run(new_run(f"run{i}", workflow="even" if i % 2 == 0 else "odd"))
    everything = (await store.list_runs(limit=100)).runs
    assert len(everything) == 7
    assert everything == sorted(everything, key=lambda r: (r.created_at, r.id), reverse=True)
    seen, cursor, pages = [], None, 0
    while True:
        page = await store.list_runs(limit=3, cursor=cursor)
        seen += page.runs
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3 and seen == everything
    odd = await store.list_runs(workflow="odd", limit=2)
    assert [r.id for r in odd.runs] == [r.id for r in everything if r.workflow == "odd"][:2]
    rest = await store.list_runs(workflow="odd", limit=2, cursor=odd.next_cursor)
    assert len(rest.runs) == 1 and rest.next_cursor is None


async def test_list_runs_filters_by_status(store: Store) -> None:
    await store.create_run(new_run("pending"))
    claim = await start(store, workflow="x")
    await store.append([append(claim, status=COMPLETED, result=b"null")])
    assert [r.id for r in (await store.list_runs(status=COMPLETED)).runs] == [claim.run.id]
    assert [r.id for r in (await store.list_runs(status="pending", workflow="wf")).runs] == ["pending"]
    assert (await store.list_runs(status=FAILED)).runs == []


async def test_a_bad_cursor_is_a_clear_error(store: Store) -> None:
    with pytest.raises(DurableError, match="invalid cursor"):
        await store.list_runs(cursor="garbage!")


async def test_registered_workflows_are_known(store: Store) -> None:
    assert await store.known_workflows() == set()
    await store.register_workflows("w1", ["a", "b"])
    await store.register_workflows("w2", ["b", "c"])
    assert await store.known_workflows() == {"a", "b", "c"}
    await store.register_workflows("w1", ["a"])
    await store.register_workflows("w2", [])
    assert await store.known_workflows() == {"a"}


# --- wake-ups -----------------------------------------------------------------------------------------------


async def test_waiters_hear_that_a_run_finished(store: Store) -> None:
    claim = await start(store)
    waiter = asyncio.create_task(store.hub.wait_finished(claim.run.id, 5))
    other = asyncio.create_task(store.hub.wait_finished("someone-else", 0.3))
    await asyncio.sleep(0.05)
    assert await store.append([append(claim, [RunCompleted(result=raw(1))], status=COMPLETED)]) == [None]
    assert await waiter is True
    assert await other is False


async def test_workers_hear_of_new_and_released_work(store: Store) -> None:
    signal = store.hub.subscribe_work()
    try:
        await store.create_run(new_run())
        assert await signal.wait(2)
        claim = await claim_one(store)
        assert await store.append([append(claim, step(1))]) == [None]
        assert not await signal.wait(0.05)  # a plain step is not news
        assert await store.append([append(claim, first_seq=4, release=True)]) == [None]
        assert await signal.wait(2)
    finally:
        signal.close()


# --- property: histories round-trip exactly -------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
_raws = _json_values.map(raw)
_ids = st.integers(0, 2**31 - 1)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_times = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
_errors = st.builds(ErrorInfo, st.text(max_size=20), st.text(max_size=40), st.text(max_size=40))
_events = st.one_of(
    st.builds(StepScheduled, command_id=_ids, name=st.text(max_size=10), args=_raws, digest=st.text(max_size=8)),
    st.builds(StepCompleted, command_id=_ids, name=st.text(max_size=10), attempt=_ids, result=_raws,
              duration_ms=_floats),
    st.builds(StepFailed, command_id=_ids, name=st.text(max_size=10), attempt=_ids, error=_errors,
              duration_ms=_floats, retry_at=st.none() | _times),
    st.builds(TimerStarted, command_id=_ids, fire_at=_times, seconds=_floats),
    st.builds(TimerFired, command_id=_ids),
    st.builds(ValueRecorded, command_id=_ids, kind=st.text(max_size=8), value=_raws),
)  # fmt: skip
_batches = st.lists(st.tuples(st.lists(_events, max_size=4), _times, st.none() | _errors), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=_batches)
async def test_any_sequence_of_appends_reads_back_exactly(
    store: Store, batches: list[tuple[list[Event], datetime, ErrorInfo | None]]
) -> None:
    workflow = uuid.uuid4().hex  # every example gets runs of its own in the shared store
    claim = await start(store, workflow=workflow)
    expected = list(claim.history)
    seq = 2
    for events, at, error in batches:
        item = Append(run_id=claim.run.id, worker_id="w1", epoch=1, first_seq=seq, events=events, at=at, error=error)
        assert await store.append([item]) == [None]
        expected += [RecordedEvent(seq=seq + i, at=at, event=e) for i, e in enumerate(events)]
        seq += len(events)
    assert await store.read_history(claim.run.id) == expected
    assert await store.append([append(claim, first_seq=seq, release=True)]) == [None]
    again = await claim_one(store, "w2", workflow=workflow)
    assert again.history == expected
    errors = [error for _, _, error in batches if error is not None]
    assert again.run.error == (errors[-1] if errors else None)
