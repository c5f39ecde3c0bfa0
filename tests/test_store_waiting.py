"""The Store contract for waiting on the world, run against every store (memory, SQLite, PostgreSQL): inboxes
(``send_message``, ``read_inbox``, messages consumed by appends), inputs asked of people (``open_inputs``,
``list_pending_inputs``, ``provide_input``), children (the "child" message a finishing child leaves its parent,
``list_children``), published state, runs that continue as new runs, and heartbeats reporting messages.
``MemoryStore`` is the reference; the database stores must behave exactly like it. At the end, what only the
databases promise: a message sent by one process reaches another's hub, and a schema 1 database upgrades.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

import history
from history import (
    CANCELLED,
    COMPLETED,
    CONTINUED,
    FAILED,
    WAITING,
    CarriedMessage,
    ChildOutcome,
    Claim,
    ErrorInfo,
    Event,
    InputAlreadyProvided,
    InputNotPending,
    LeaseLost,
    Message,
    MessageReceived,
    PendingInput,
    RecordedEvent,
    RunAlreadyFinished,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    RunNotFound,
    RunStarted,
    Store,
)
from history._sql import load_migrations

from .conftest import with_database
from .test_store_contract import append, claim_one, new_run, now, raw, start, step
from .test_store_databases import VERSIONS

NewStore = Callable[..., Awaitable[Store]]
LATER = timedelta(hours=1)


def versions_after(version: int) -> list[int]:
    """The schema versions an upgrade from ``version`` applies (every later migration shipped)."""
    return [m.version for m in load_migrations("postgres") if m.version > version]


async def park(store: Store, claim: Claim, wake_at: datetime | None = None, **fields: Any) -> None:
    """Release ``claim``'s run as waiting until ``wake_at`` (default: an hour from now)."""
    item = append(claim, status=WAITING, wake_at=wake_at or now() + LATER, release=True, **fields)
    assert await store.append([item]) == [None]


async def waiting(store: Store, workflow: str = "wf", **fields: Any) -> str:
    """A run that was claimed and then released to sleep for an hour: what a run waiting for the world is."""
    claim = await start(store, workflow=workflow, **fields)
    await park(store, claim)
    return claim.run.id


def asked(
    run_id: str, key: str, workflow: str = "wf", created_at: datetime | None = None, **fields: Any
) -> PendingInput:
    return PendingInput(
        run_id=run_id,
        key=key,
        prompt=f"what {key}?",
        spec=b'{"type":"string"}',
        created_at=created_at or now(),
        workflow=workflow,
        **fields,
    )


def received(message: Message) -> MessageReceived:
    """The event a worker records for ``message``."""
    return MessageReceived(message_id=message.id, kind=message.kind, name=message.name, payload=raw(None))


def listen(store: Store) -> list[str]:
    """Run ids the store's hub reports messages for, in order (unsubscribed when the test's store closes)."""
    heard: list[str] = []
    store.hub.on_message(heard.append)
    return heard


async def inbox_ids(store: Store, run_id: str) -> list[int]:
    return [m.id for m in await store.read_inbox(run_id)]


def keys(inputs: Sequence[PendingInput]) -> list[tuple[str, str]]:
    return [(p.run_id, p.key) for p in inputs]


# --- runs: start fields, state, continued ---------------------------------------------------------------------


async def test_create_run_records_deadline_continued_from_and_carried_messages(store: Store) -> None:
    deadline = datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
    carried = (CarriedMessage(kind="event", name="late", payload=raw({"n": 1})),)
    new = new_run(deadline=deadline, continued_from="previous", parent_id="p", carried=carried)
    run, created = await store.create_run(new)
    assert created and run.continued_from == "previous" and run.state is None
    assert await store.get_run(new.id) == run
    [first] = await store.read_history(new.id)
    assert first.event == RunStarted(
        workflow="wf", input=new.input, run_id=new.id, random_seed=42, parent_id="p", deadline=deadline,
        continued_from="previous", carried=carried,
    )  # fmt: skip
    plain, _ = await store.create_run(new_run())
    assert plain.continued_from is None
    [started] = await store.read_history(plain.id)
    assert isinstance(started.event, RunStarted) and started.event.deadline is None


async def test_state_is_replaced_by_appends_that_carry_one_and_kept_by_others(store: Store) -> None:
    claim = await start(store)
    assert await store.append([append(claim, step(1), state=b'{"progress":1}')]) == [None]
    run = await store.get_run(claim.run.id)
    assert run is not None and run.state == b'{"progress":1}'
    assert await store.append([append(claim, step(2), first_seq=4)]) == [None]  # state=None leaves it
    assert await store.append([append(claim, first_seq=6, state=b'{"progress":2,"note":"\\u00e9"}')]) == [None]
    run = await store.get_run(claim.run.id)
    assert run is not None and run.state == b'{"progress":2,"note":"\\u00e9"}'
    [stale] = await store.append([msgspec.structs.replace(append(claim, first_seq=6, state=b"{}"), epoch=0)])
    assert type(stale) is LeaseLost
    await park(store, claim, wake_at=now() - timedelta(seconds=1), first_seq=6)
    again = await claim_one(store, "w2")
    assert again.run.state == b'{"progress":2,"note":"\\u00e9"}'
    assert [r.state for r in (await store.list_runs()).runs] == [again.run.state]


async def test_a_continued_run_is_finished_and_never_claimed(store: Store) -> None:
    claim = await start(store)
    successor, _ = await store.create_run(new_run(continued_from=claim.run.id))
    event = RunContinued(new_run_id=successor.id, input=raw({"n": 2}))
    item = append(claim, [event], status=CONTINUED, result=msgspec.json.encode(successor.id), wake_at=now())
    assert await store.append([item]) == [None]
    run = await store.get_run(claim.run.id)
    assert run is not None and run.status == CONTINUED and run.finished and run.finished_at is not None
    assert (run.lease_owner, run.wake_at) == (None, None)
    [taken] = await store.claim("w2", ["wf"], 10, 30)
    assert taken.run.id == successor.id
    assert await store.claim("w3", ["wf"], 10, 30) == []
    assert await store.next_wake_at(["wf"]) == taken.run.lease_expires_at  # the successor's lease, not the run
    assert [r.id for r in (await store.list_runs(status=CONTINUED)).runs] == [claim.run.id]
    with pytest.raises(RunAlreadyFinished, match=claim.run.id):
        await store.send_message(claim.run.id, "event", "go", b"1")


# --- the inbox --------------------------------------------------------------------------------------------------


async def test_messages_to_missing_or_finished_runs_are_refused(store: Store) -> None:
    with pytest.raises(RunNotFound, match="nope"):
        await store.send_message("nope", "event", "go", b"1")
    claim = await start(store)
    assert await store.append([append(claim, [RunCompleted(result=raw(1))], status=COMPLETED)]) == [None]
    with pytest.raises(RunAlreadyFinished, match=f"run '{claim.run.id}' has completed"):
        await store.send_message(claim.run.id, "event", "go", b"1")
    assert await store.read_inbox(claim.run.id) == []


async def test_send_message_queues_messages_in_order(store: Store) -> None:
    run, _ = await store.create_run(new_run())
    before = now() - timedelta(seconds=1)
    first = await store.send_message(run.id, "event", "approved", b'{"by":"ann"}')
    second = await store.send_message(run.id, "event", "approved", b"2")
    other, _ = await store.create_run(new_run())
    await store.send_message(other.id, "event", "x", b"3")
    assert (first.run_id, first.kind, first.name, first.payload) == (run.id, "event", "approved", b'{"by":"ann"}')
    assert first.id < second.id
    assert before < first.sent_at <= second.sent_at < now() + timedelta(seconds=1)
    assert first.sent_at.utcoffset() == timedelta(0)
    assert await store.read_inbox(run.id) == [first, second]
    assert await store.read_inbox("nope") == []


async def test_a_waiting_run_is_claimable_right_after_a_message(store: Store) -> None:
    run_id = await waiting(store)
    assert await store.claim("w2", ["wf"], 10, 30) == []
    heard = listen(store)
    signal = store.hub.subscribe_work()
    try:
        await store.send_message(run_id, "event", "go", b"1")
        assert await signal.wait(2)
    finally:
        signal.close()
    assert heard[:1] == [run_id]
    run = await store.get_run(run_id)
    assert run is not None and run.wake_at is None and run.status == WAITING
    again = await claim_one(store, "w2")
    assert again.run.id == run_id and again.run.lease_epoch == 2


async def test_a_message_to_a_leased_run_leaves_its_lease_and_wake_time(store: Store) -> None:
    claim = await start(store)
    wake = now() + LATER
    assert await store.append([append(claim, wake_at=wake)]) == [None]
    before = await store.get_run(claim.run.id)
    heard = listen(store)
    await store.send_message(claim.run.id, "event", "go", b"1")
    assert heard[:1] == [claim.run.id]  # the worker holding it is told
    after = await store.get_run(claim.run.id)
    assert after == before


async def test_an_append_consumes_its_own_runs_messages_only_if_it_is_applied(store: Store) -> None:
    claim = await start(store)
    mine = [await store.send_message(claim.run.id, "event", f"e{i}", b"1") for i in range(3)]
    other = await store.create_run(new_run())
    theirs = await store.send_message(other[0].id, "event", "x", b"1")
    stale = msgspec.structs.replace(append(claim, [received(mine[0])], consumed=[mine[0].id]), epoch=0)
    [refused] = await store.append([stale])
    assert type(refused) is LeaseLost
    assert await inbox_ids(store, claim.run.id) == [m.id for m in mine]
    item = append(claim, [received(mine[0]), received(mine[2])], consumed=[mine[0].id, mine[2].id, theirs.id])
    assert await store.append([item]) == [None]
    assert await store.read_inbox(claim.run.id) == [mine[1]]
    assert await store.read_inbox(other[0].id) == [theirs]  # another run's message is not this append's
    again = append(claim, [received(mine[1])], first_seq=4, consumed=[mine[1].id, mine[0].id])
    assert await store.append([again]) == [None]  # consuming twice is harmless
    assert await store.read_inbox(claim.run.id) == []


async def test_side_changes_of_a_refused_item_do_not_leak_into_its_batch(store: Store) -> None:
    a, b = await start(store), await start(store)
    ma = await store.send_message(a.run.id, "event", "x", b"1")
    mb = await store.send_message(b.run.id, "event", "x", b"1")
    good = append(a, consumed=[ma.id], state=b'{"a":1}', open_inputs=[asked(a.run.id, "k")])
    bad = append(b, first_seq=7, consumed=[mb.id], state=b'{"b":1}', open_inputs=[asked(b.run.id, "k")])
    outcomes = await store.append([good, bad])
    assert outcomes[0] is None and outcomes[1] is not None
    assert await store.read_inbox(a.run.id) == [] and await store.read_inbox(b.run.id) == [mb]
    run_a, run_b = await store.get_run(a.run.id), await store.get_run(b.run.id)
    assert run_a is not None and run_b is not None and (run_a.state, run_b.state) == (b'{"a":1}', None)
    assert keys(await store.list_pending_inputs()) == [(a.run.id, "k")]


async def test_a_run_released_to_sleep_with_unread_messages_is_ready_at_once(store: Store) -> None:
    claim = await start(store)
    first = await store.send_message(claim.run.id, "event", "a", b"1")
    second = await store.send_message(claim.run.id, "event", "b", b"2")
    # It records the first message only, and releases itself to sleep: the second one must not wait an hour.
    await park(store, claim, consumed=[first.id])
    run = await store.get_run(claim.run.id)
    assert run is not None and run.wake_at is None and run.lease_owner is None
    again = await claim_one(store, "w2")
    # Recording the last one, it may sleep.
    wake = now() + LATER
    await park(store, again, wake_at=wake, consumed=[second.id])
    run = await store.get_run(claim.run.id)
    assert run is not None and run.wake_at == wake
    assert await store.claim("w3", ["wf"], 10, 30) == []


async def test_a_blocked_run_with_unread_messages_still_waits_for_its_retry(store: Store) -> None:
    claim = await start(store)
    await store.send_message(claim.run.id, "event", "a", b"1")
    retry = now() + LATER
    await store.mark_blocked(claim.run.id, "w1", 1, "command 2 changed", retry)
    run = await store.get_run(claim.run.id)
    assert run is not None and run.wake_at == retry  # not claimed, diverged and blocked again in a loop
    assert await store.claim("w2", ["wf"], 10, 30) == []


async def test_heartbeat_reports_held_runs_with_unconsumed_messages(store: Store) -> None:
    quiet, busy = await start(store), await start(store)
    await store.create_run(new_run("gone"))
    message = await store.send_message(busy.run.id, "event", "x", b"1")
    await store.send_message("gone", "event", "x", b"1")  # not held by w1: never reported
    leases = {quiet.run.id: 1, busy.run.id: 1, "gone": 1}
    beat = await store.heartbeat("w1", leases, 30)
    assert beat.messages == {busy.run.id} and beat.lost == {"gone"}
    assert (await store.heartbeat("w2", {busy.run.id: 1}, 30)).messages == frozenset()  # lost, not reported
    assert await store.append([append(busy, [received(message)], consumed=[message.id])]) == [None]
    assert (await store.heartbeat("w1", leases, 30)).messages == frozenset()


# --- children -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "fields", "event"),
    [
        (COMPLETED, {"result": b'{"total": 3, "s": "\\u00e9"}'}, RunCompleted(result=raw({"total": 3}))),
        (FAILED, {"error": ErrorInfo("ValueError", 'bad "\u00e9"\x00', "Traceback…")}, RunFailed(ErrorInfo("V", "m"))),
        (CANCELLED, {}, RunCancelled(reason="asked")),
        (CONTINUED, {"result": b'"next-run"'}, RunContinued(new_run_id="next-run", input=raw(1))),
    ],
)
async def test_a_finishing_child_leaves_one_child_message_in_its_parents_inbox(
    store: Store, status: str, fields: dict[str, Any], event: Event
) -> None:
    parent_id = await waiting(store, workflow="parent")
    await store.create_run(new_run("child", parent_id=parent_id))
    child = await claim_one(store, "w2")
    heard = listen(store)
    assert await store.append([append(child, step(1))]) == [None]
    assert await store.read_inbox(parent_id) == [] and heard == []
    assert await store.append([append(child, [event], first_seq=4, status=status, **fields)]) == [None]
    finished = await store.get_run("child")
    assert finished is not None and finished.status == status
    [message] = await store.read_inbox(parent_id)
    assert (message.run_id, message.kind, message.name) == (parent_id, "child", "child")
    assert message.payload == history.child_outcome(finished)
    outcome = msgspec.json.decode(message.payload, type=ChildOutcome)
    assert outcome.status == status
    assert bytes(outcome.result) == fields.get("result", b"null")  # JSON null: no result
    assert outcome.error == fields.get("error")
    assert heard == [parent_id]
    parent = await store.get_run(parent_id)
    assert parent is not None and parent.wake_at is None  # woken: claimable at once
    assert [c.run.id for c in await store.claim("w3", ["parent"], 10, 30)] == [parent_id]
    assert await store.read_inbox("child") == []


async def test_a_leased_parent_is_told_but_keeps_its_lease(store: Store) -> None:
    parent = await start(store, workflow="parent")
    await store.create_run(new_run("child", parent_id=parent.run.id))
    child = await claim_one(store, "w2")
    heard = listen(store)
    assert await store.append([append(child, [RunCompleted(result=raw(7))], status=COMPLETED, result=b"7")]) == [None]
    assert heard == [parent.run.id]
    [message] = await store.read_inbox(parent.run.id)
    assert msgspec.json.decode(message.payload, type=ChildOutcome) == ChildOutcome(COMPLETED, msgspec.Raw(b"7"))
    assert (await store.heartbeat("w1", {parent.run.id: 1}, 30)).messages == {parent.run.id}
    run = await store.get_run(parent.run.id)
    assert run is not None and run.lease_owner == "w1"


async def test_no_child_message_for_a_finished_or_missing_parent(store: Store) -> None:
    parent = await start(store, workflow="parent")
    await store.create_run(new_run("child", parent_id=parent.run.id))
    await store.create_run(new_run("orphan", parent_id="no-such-run"))
    done = [RunCompleted(result=raw(1))]
    assert await store.append([append(parent, done, status=COMPLETED, result=b"1")]) == [None]
    heard = listen(store)
    for _ in range(2):
        claim = await claim_one(store, "w2")
        assert await store.append([append(claim, done, status=COMPLETED, result=b"1")]) == [None]
    assert await store.read_inbox(parent.run.id) == [] and await store.read_inbox("no-such-run") == []
    assert heard == []


async def test_a_parent_released_in_the_same_batch_as_its_finishing_child_is_woken(store: Store) -> None:
    parent = await start(store, workflow="parent")
    await store.create_run(new_run("child", parent_id=parent.run.id))
    child = await claim_one(store, "w1")
    release = append(parent, status=WAITING, wake_at=now() + LATER, release=True)
    finish = append(child, [RunCompleted(result=raw(1))], status=COMPLETED, result=b"1")
    assert await store.append([release, finish]) == [None, None]
    assert [m.kind for m in await store.read_inbox(parent.run.id)] == ["child"]
    run = await store.get_run(parent.run.id)
    assert run is not None and run.wake_at is None and run.lease_owner is None


async def test_list_children_oldest_first(store: Store) -> None:
    await store.create_run(new_run("parent"))
    for name in ("c1", "c2", "c3"):
        await store.create_run(new_run(name, parent_id="parent"))
        await asyncio.sleep(0.002)
    await store.create_run(new_run("grandchild", parent_id="c1"))
    await store.create_run(new_run("stranger"))
    children = await store.list_children("parent")
    assert [c.id for c in children] == ["c1", "c2", "c3"]
    assert children[0] == await store.get_run("c1")
    assert [c.id for c in await store.list_children("c1")] == ["grandchild"]
    assert await store.list_children("stranger") == [] and await store.list_children("nope") == []


# --- inputs ---------------------------------------------------------------------------------------------------


async def test_open_inputs_are_listed_oldest_first_with_filters_and_a_limit(store: Store) -> None:
    a = await start(store, workflow="a")
    b = await start(store, workflow="b")
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    timeout = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    first = asked(a.run.id, "name", "a", created_at=t0, timeout_at=timeout)
    second = asked(b.run.id, "size", "b", created_at=t0 + timedelta(seconds=1))
    third = asked(a.run.id, "color", "a", created_at=t0 + timedelta(seconds=2))
    assert await store.append([append(a, open_inputs=[third, first]), append(b, open_inputs=[second])]) == [None] * 2
    assert await store.list_pending_inputs() == [first, second, third]
    assert await store.list_pending_inputs(run_id=a.run.id) == [first, third]
    assert await store.list_pending_inputs(workflow="b") == [second]
    assert await store.list_pending_inputs(run_id=a.run.id, workflow="b") == []
    assert await store.list_pending_inputs(limit=2) == [first, second]
    assert await store.list_pending_inputs(limit=0) == []
    assert await store.list_pending_inputs(run_id="nope") == []


async def test_asking_again_replaces_the_question_and_closing_removes_it(store: Store) -> None:
    claim = await start(store)
    run_id = claim.run.id
    assert await store.append([append(claim, open_inputs=[asked(run_id, "k"), asked(run_id, "j")])]) == [None]
    again = msgspec.structs.replace(asked(run_id, "k"), prompt="really, what?", spec=b"{}")
    twice = [asked(run_id, "j"), msgspec.structs.replace(asked(run_id, "j"), prompt="last wins")]
    assert await store.append([append(claim, open_inputs=[again, *twice])]) == [None]
    assert {p.key: p.prompt for p in await store.list_pending_inputs()} == {"k": "really, what?", "j": "last wins"}
    assert await store.append([append(claim, close_inputs=["k", "never-asked"])]) == [None]
    assert keys(await store.list_pending_inputs()) == [(run_id, "j")]
    # Asked and no longer waited for in one append (a zero timeout): closed.
    assert await store.append([append(claim, open_inputs=[asked(run_id, "z")], close_inputs=["z", "j"])]) == [None]
    assert await store.list_pending_inputs() == []
    with pytest.raises(InputNotPending, match="'k'"):
        await store.provide_input(run_id, "k", b"1")


async def test_provide_input_answers_once_and_wakes_the_run(store: Store) -> None:
    claim = await start(store)
    run_id = claim.run.id
    await park(store, claim, open_inputs=[asked(run_id, "name"), asked(run_id, "age")])
    heard = listen(store)
    message = await store.provide_input(run_id, "name", b'"Ann"')
    assert (message.run_id, message.kind, message.name, message.payload) == (run_id, "input", "name", b'"Ann"')
    assert await store.read_inbox(run_id) == [message]
    assert heard[:1] == [run_id]
    assert [p.key for p in await store.list_pending_inputs()] == ["age"]
    run = await store.get_run(run_id)
    assert run is not None and run.wake_at is None
    with pytest.raises(InputAlreadyProvided, match=f"input 'name' of run '{run_id}' was provided already"):
        await store.provide_input(run_id, "name", b'"Bob"')
    with pytest.raises(InputNotPending, match=f"run '{run_id}' does not wait for an input named 'height'"):
        await store.provide_input(run_id, "height", b"1")
    assert not isinstance(InputNotPending("x"), InputAlreadyProvided)
    with pytest.raises(RunNotFound, match="nope"):
        await store.provide_input("nope", "name", b"1")
    assert await store.read_inbox(run_id) == [message]  # the refusals changed nothing
    # Closing an answered input (its answer recorded) leaves it answered.
    again = await claim_one(store, "w2")
    assert await store.append([append(again, [received(message)], consumed=[message.id], close_inputs=["name"])]) == [
        None
    ]
    with pytest.raises(InputAlreadyProvided):
        await store.provide_input(run_id, "name", b'"Cy"')
    assert await store.read_inbox(run_id) == []


async def test_concurrent_answers_to_one_input_one_wins(store: Store, store_kind: str, new_store: NewStore) -> None:
    stores = [store] if store_kind == "memory" else [store, await new_store()]  # two processes on one database
    claim = await start(store)
    run_id = claim.run.id
    keys_ = [f"k{i}" for i in range(6)]
    await park(store, claim, open_inputs=[asked(run_id, k) for k in keys_])
    for key in keys_:
        results = await asyncio.gather(
            *(stores[i % len(stores)].provide_input(run_id, key, b"%d" % i) for i in range(4)),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, Message)]
        assert len(wins) == 1, results
        assert all(type(r) is InputAlreadyProvided for r in results if r is not wins[0]), results
    assert sorted(m.name for m in await store.read_inbox(run_id)) == keys_
    assert await store.list_pending_inputs() == []


async def test_a_finishing_run_closes_its_inputs_and_takes_no_answers(store: Store) -> None:
    claim = await start(store)
    other = await start(store)
    run_id = claim.run.id
    assert await store.append([append(claim, open_inputs=[asked(run_id, "a")])]) == [None]
    assert await store.append([append(other, open_inputs=[asked(other.run.id, "a")])]) == [None]
    # Asking once more in the very append that finishes: closed too.
    finish = append(claim, [RunCompleted(result=raw(1))], status=COMPLETED, open_inputs=[asked(run_id, "b")])
    assert await store.append([finish]) == [None]
    assert keys(await store.list_pending_inputs()) == [(other.run.id, "a")]
    with pytest.raises(RunAlreadyFinished, match=run_id):
        await store.provide_input(run_id, "a", b"1")


async def test_a_cancelled_waiting_run_takes_no_more_answers(store: Store) -> None:
    claim = await start(store)
    run_id = claim.run.id
    await park(store, claim, open_inputs=[asked(run_id, "a")])
    await store.request_cancel(run_id, "stop")
    again = await claim_one(store, "w2")
    assert await store.append([append(again, [RunCancelled(reason="stop")], status=CANCELLED)]) == [None]
    assert await store.list_pending_inputs() == []
    with pytest.raises(RunAlreadyFinished, match="has cancelled"):
        await store.provide_input(run_id, "a", b"1")


# --- only the databases: other processes, schema upgrade ------------------------------------------------------


async def test_postgres_messages_reach_other_processes_hubs(postgres_url: str) -> None:
    first = history.open_store(postgres_url)
    second = history.open_store(postgres_url)
    await first.open()
    await second.open()
    try:
        heard = asyncio.Queue[str]()
        first.hub.on_message(heard.put_nowait)
        own = listen(second)
        run_id = await waiting(second, workflow="parent")
        await second.send_message(run_id, "event", "go", b"1")
        assert await asyncio.wait_for(heard.get(), 5) == run_id  # relayed from the other process's NOTIFY
        await asyncio.sleep(0.3)
        assert own == [run_id]  # heard once, right after the commit, and not again from the echo
        await second.create_run(new_run("child", parent_id=run_id))
        child = await claim_one(second, "w2")
        assert await second.append([append(child, [RunCompleted(result=raw(1))], status=COMPLETED)]) == [None]
        assert await asyncio.wait_for(heard.get(), 5) == run_id  # the child's message to its parent, too
    finally:
        await second.close()
        await first.close()


async def test_a_message_racing_a_release_never_leaves_the_run_asleep(
    store: Store, store_kind: str, new_store: NewStore
) -> None:
    """Whichever commits first, a message sent while its run is being released to sleep wakes the run: the
    sender sees the run unleased, or the release sees the message. Raced many times, from two processes."""
    other = store if store_kind == "memory" else await new_store()
    await store.create_run(new_run("r"))
    for attempt in range(25):
        claim = await claim_one(store, "w1")
        release = append(claim, status=WAITING, wake_at=now() + LATER, release=True)
        outcome, _ = await asyncio.gather(store.append([release]), other.send_message("r", "event", "e", b"1"))
        assert outcome == [None]
        run = await store.get_run("r")
        assert run is not None and run.wake_at is None, attempt
        [message] = await store.read_inbox("r")  # recorded, so that the next round starts with an empty inbox
        again = await claim_one(store, "w1")
        assert await store.append([append(again, [received(message)], consumed=[message.id], release=True)]) == [None]


async def test_a_child_finishing_while_its_parent_is_released_never_leaves_the_parent_asleep(
    store: Store, store_kind: str, new_store: NewStore
) -> None:
    other = store if store_kind == "memory" else await new_store()
    await store.create_run(new_run("parent", workflow="parent"))
    for attempt in range(25):
        parent = await claim_one(store, "w1", workflow="parent")
        await store.create_run(new_run(f"child{attempt}", parent_id="parent"))
        child = await claim_one(other, "w2")
        release = append(parent, status=WAITING, wake_at=now() + LATER, release=True)
        finish = append(child, [RunCompleted(result=raw(1))], status=COMPLETED)
        outcomes = await asyncio.gather(store.append([release]), other.append([finish]))
        assert outcomes == [[None], [None]]
        run = await store.get_run("parent")
        assert run is not None and run.wake_at is None, attempt
        [message] = await store.read_inbox("parent")
        again = await claim_one(store, "w1", workflow="parent")
        await store.append([append(again, [received(message)], consumed=[message.id], release=True)])


async def test_two_batches_finishing_each_others_childrens_parents_both_apply(
    store: Store, store_kind: str, new_store: NewStore
) -> None:
    """Batch A holds parent PA and finishes a child of PB; batch B holds PB and finishes a child of PA. On
    Postgres both lock their own runs, then the other's (a deadlock that is broken and retried)."""
    other = store if store_kind == "memory" else await new_store()
    for attempt in range(5):
        pa, pb = f"pa{attempt}", f"pb{attempt}"
        for parent in (pa, pb):
            await store.create_run(new_run(parent, workflow="parent"))
        held_a = await claim_one(store, "a", workflow="parent")
        held_b = await claim_one(other, "b", workflow="parent")
        await store.create_run(new_run(f"ca{attempt}", parent_id=held_b.run.id))
        await store.create_run(new_run(f"cb{attempt}", parent_id=held_a.run.id))
        child_a = await claim_one(store, "a")
        child_b = await claim_one(other, "b")
        done = [RunCompleted(result=raw(1))]
        outcomes = await asyncio.gather(
            store.append([append(held_a, step(1)), append(child_a, done, status=COMPLETED)]),
            other.append([append(held_b, step(1)), append(child_b, done, status=COMPLETED)]),
        )
        assert outcomes == [[None, None], [None, None]]
        for parent in (held_a, held_b):
            assert [m.kind for m in await store.read_inbox(parent.run.id)] == ["child"]


async def test_postgres_retries_an_append_that_deadlocked(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A deadlock made on purpose: the append holds parent "pa" (a run of its batch) and waits for parent "pb"
    (whose child it finishes), which another transaction holds while it waits for "pa". PostgreSQL fails the
    append (its wait began first, so its deadlock check runs first); the store runs it again, and it applies."""
    store = history.open_store(postgres_url)
    await store.open()
    other = await asyncpg.connect(postgres_url)
    try:
        for parent in ("pa", "pb"):
            await store.create_run(new_run(parent, workflow="parent"))
        held = await claim_one(store, "w1", workflow="parent")
        await store.create_run(new_run("child", parent_id="pb"))
        child = await claim_one(store, "w1")
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT FROM durable_runs WHERE id = 'pb' FOR UPDATE")
        finish = append(child, [RunCompleted(result=raw(1))], status=COMPLETED)
        appending = asyncio.create_task(store.append([append(held, step(1)), finish]))
        waiting_for_lock = "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
        for _ in range(200):  # until the append waits for "pb"
            if await other.fetchval(waiting_for_lock) or appending.done():
                break
            await asyncio.sleep(0.01)
        with caplog.at_level("INFO", logger="durable.history"):
            await other.execute("UPDATE durable_runs SET updated_at = updated_at WHERE id = 'pa'")  # the cycle
            await tx.commit()
            assert await asyncio.wait_for(appending, 10) == [None, None]
        assert "deadlocked" in caplog.text
        assert [m.kind for m in await store.read_inbox("pb")] == ["child"]
    finally:
        await other.close()
        await store.close()


async def _schema_1_postgres(url: str) -> None:
    from history._postgres import PostgresStore

    old = PostgresStore(url)
    old._migrations = old._migrations[:1]
    assert await old.upgrade() == [1]


SCHEMA_1_ROWS = [  # (id, status, result, error, wake_at, lease_owner, parent_id)
    ("done", "completed", b'{"ok":true}', None, None, None, None),
    ("failed", "failed", None, '{"type":"E","message":"m","traceback":""}', None, None, "done"),
    ("sleeping", "waiting", None, None, datetime(2031, 1, 1, tzinfo=UTC), None, None),
    ("ready", "pending", None, None, None, None, None),
]


def _schema_1_event(run_id: str) -> bytes:
    return history.encode_event(RunStarted(workflow="wf", input=raw(1), run_id=run_id, random_seed=1))


async def _check_upgraded(store: Store) -> None:
    """What a schema 1 database with SCHEMA_1_ROWS looks like once upgraded and opened."""
    for run_id, status, result, error, wake_at, _, parent_id in SCHEMA_1_ROWS:
        run = await store.get_run(run_id)
        assert run is not None
        assert (run.status, run.result, run.wake_at, run.parent_id) == (status, result, wake_at, parent_id)
        assert run.error == (None if error is None else ErrorInfo("E", "m"))
        assert (run.state, run.continued_from) == (None, None)
        assert [r.seq for r in await store.read_history(run_id)] == [1]
    assert [c.id for c in await store.list_children("done")] == ["failed"]
    assert await store.next_wake_at(["wf"]) == datetime(2031, 1, 1, tzinfo=UTC)
    claim = await claim_one(store, "w1")
    assert claim.run.id == "ready" and claim.history == [
        RecordedEvent(1, claim.history[0].at, history.decode_event(_schema_1_event("ready")))
    ]
    item = append(claim, [RunContinued(new_run_id="next", input=raw(1))], status=CONTINUED, state=b"{}")
    assert await store.append([item]) == [None]  # the new status and column are accepted
    await store.send_message("sleeping", "event", "go", b"1")
    assert [c.run.id for c in await store.claim("w1", ["wf"], 10, 30)] == ["sleeping"]


async def test_a_postgres_database_at_schema_1_upgrades_keeping_its_runs(postgres_server_url: str) -> None:
    from history._postgres import PostgresStore

    name = f"durable_m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_server_url, name)
    try:
        await _schema_1_postgres(url)
        conn = await asyncpg.connect(url)
        try:
            for run_id, status, result, error, wake_at, owner, parent_id in SCHEMA_1_ROWS:
                await conn.execute(
                    """INSERT INTO durable_runs (id, workflow, status, input, result, error, created_at, updated_at,
                                                 finished_at, wake_at, next_seq, lease_owner, parent_id)
                       VALUES ($1, 'wf', $2, '1', $3, $4, now(), now(),
                               CASE WHEN $2 IN ('completed', 'failed') THEN now() END, $5, 2, $6, $7)""",
                    run_id, status, result, error, wake_at, owner, parent_id,
                )  # fmt: skip
                event = _schema_1_event(run_id)
                await conn.execute("INSERT INTO durable_events VALUES ($1, 1, now(), 'run_started', $2)", run_id, event)
        finally:
            await conn.close()
        assert await PostgresStore(url).upgrade() == VERSIONS[1:]
        store = history.open_store(url)
        await store.open()
        try:
            await _check_upgraded(store)
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_sqlite_database_at_schema_1_upgrades_keeping_its_runs(tmp_path: Path) -> None:
    from history._sqlite import SqliteStore, _us

    url = f"sqlite:///{tmp_path / 'd.db'}"
    old = SqliteStore(url)
    old._migrations = old._migrations[:1]
    assert await old.upgrade() == [1]
    db = sqlite3.connect(tmp_path / "d.db", isolation_level=None)
    try:
        t = _us(now())
        for run_id, status, result, error, wake_at, owner, parent_id in SCHEMA_1_ROWS:
            finished_at = t if status in ("completed", "failed") else None
            db.execute(
                """INSERT INTO durable_runs (id, workflow, status, input, result, error, created_at, updated_at,
                                             finished_at, wake_at, next_seq, lease_owner, parent_id)
                   VALUES (?, 'wf', ?, x'31', ?, ?, ?, ?, ?, ?, 2, ?, ?)""",
                (run_id, status, result, error, t, t, finished_at, wake_at and _us(wake_at), owner, parent_id),
            )
            event = _schema_1_event(run_id)
            db.execute("INSERT INTO durable_events VALUES (?, 1, ?, 'run_started', ?)", (run_id, t, event))
    finally:
        db.close()
    assert await SqliteStore(url).upgrade() == VERSIONS[1:]
    store = history.open_store(url)
    await store.open()
    try:
        await _check_upgraded(store)
    finally:
        await store.close()
    db = sqlite3.connect(tmp_path / "d.db", isolation_level=None)
    try:  # the events guard, which names durable_runs, survived the rebuild of that table
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM durable_events WHERE run_id = 'ready'")
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'durable_runs'")}
        assert {"durable_runs_ready", "durable_runs_leases", "durable_runs_created", "durable_runs_parent"} <= indexes
    finally:
        db.close()

