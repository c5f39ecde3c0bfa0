"""The log part of the Store contract (``write_logs``, ``read_logs``, ``Append.logs``), against every store."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from history import (
    COMPLETED,
    MAX_LINE_CHARS,
    LeaseLost,
    LogLine,
    RunCompleted,
    Store,
    clean_text,
    line_from_record,
)

from .test_store_contract import append, start, step

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def line(run_id: str, message: str, **fields: object) -> LogLine:
    values: dict[str, object] = dict(run_id=run_id, at=T0, level=20, level_name="INFO", logger="app", message=message)
    values.update(fields)
    return LogLine(**values)  # type: ignore[arg-type]


async def test_lines_of_an_append_commit_with_it_and_read_back_identical(store: Store) -> None:
    claim = await start(store)
    run_id = claim.run.id
    full = line(run_id, "charged ünïcode", level=40, level_name="ERROR", logger="shop.pay", stream="log",
                step="charge", command_id=1, attempt=2, exc="Traceback …\nValueError: no", extra=b'{"order":7}')
    printed = line(run_id, "hello", stream="stdout", step="charge", command_id=1, attempt=2)
    assert await store.append([append(claim, step(1), logs=[full, printed])]) == [None]
    lines = await store.read_logs(run_id)
    assert [msgspec.structs.replace(got, id=0) for got in lines] == [full, printed]
    assert 0 < lines[0].id < lines[1].id
    assert lines[0].at == T0 and lines[0].at.tzinfo is not None


async def test_trace_and_span_ids_round_trip_through_an_append_and_write_logs(store: Store) -> None:
    claim = await start(store)
    run_id = claim.run.id
    tail = line(run_id, "live", step="charge", command_id=1, attempt=1,
                trace_id="4bf92f3577b34da6a3ce929d0e0e4736", span_id="00f067aa0ba902b7")
    traced = line(run_id, "in a span", step="charge", command_id=1, attempt=1,
                  trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331")
    untraced = line(run_id, "no span", step="charge", command_id=1, attempt=1)
    workflow = line(run_id, "workflow", trace_id="0af7651916cd43dd8448eb211c80319c", span_id="0000000000000001")
    await store.write_logs([tail])
    assert await store.append([append(claim, step(1), logs=[traced, untraced, workflow])]) == [None]
    everything = await store.read_logs(run_id)
    assert [msgspec.structs.replace(got, id=0) for got in everything] == [tail, traced, untraced, workflow]
    filtered = await store.read_logs(run_id, step="charge", attempt=1, min_level=20, after_id=everything[0].id)
    assert [(got.trace_id, got.span_id) for got in filtered] == [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"), (None, None),
    ]  # fmt: skip


async def test_a_refused_append_stores_none_of_its_lines(store: Store) -> None:
    claim = await start(store)
    stale = msgspec.structs.replace(append(claim, step(1)), epoch=claim.run.lease_epoch + 5,
                                    logs=[line(claim.run.id, "never")])
    [outcome] = await store.append([stale])
    assert isinstance(outcome, LeaseLost)
    assert await store.read_logs(claim.run.id) == []


async def test_write_logs_is_unfenced_and_numbers_lines_in_order(store: Store) -> None:
    claim = await start(store)
    run_id = claim.run.id
    await store.write_logs([line(run_id, "one"), line(run_id, "two")])
    await store.append([append(claim, step(1), logs=[line(run_id, "three")])])
    await store.write_logs([])
    assert [got.message for got in await store.read_logs(run_id)] == ["one", "two", "three"]


async def test_read_logs_filters_and_pages(store: Store) -> None:
    claim = await start(store)
    run_id = claim.run.id
    other = await start(store)
    lines = [
        line(run_id, "wf", level=10, level_name="DEBUG"),
        line(run_id, "a1", step="a", command_id=1, attempt=1),
        line(run_id, "a2", step="a", command_id=1, attempt=2, level=30, level_name="WARNING"),
        line(run_id, "b1", step="b", command_id=2, attempt=1, level=50, level_name="CRITICAL"),
        line(other.run.id, "elsewhere", step="a", attempt=1),
    ]
    await store.write_logs(lines)

    async def messages(**filters: object) -> list[str]:
        return [got.message for got in await store.read_logs(run_id, **filters)]  # type: ignore[arg-type]

    assert await messages() == ["wf", "a1", "a2", "b1"]
    assert await messages(step="a") == ["a1", "a2"]
    assert await messages(step="a", attempt=2) == ["a2"]
    assert await messages(attempt=1) == ["a1", "b1"]
    assert await messages(min_level=30) == ["a2", "b1"]
    assert await messages(limit=2) == ["wf", "a1"]
    first_two = await store.read_logs(run_id, limit=2)
    assert await messages(after_id=first_two[-1].id) == ["a2", "b1"]
    assert await messages(after_id=first_two[-1].id, min_level=40, limit=5) == ["b1"]
    assert await store.read_logs("no-such-run") == []


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=0, max_size=80))
async def test_any_text_is_stored_and_read_back(store: Store, text: str) -> None:
    claim = await start(store)
    cleaned = clean_text(text)
    await store.write_logs([line(claim.run.id, cleaned, exc=cleaned)])
    [got] = await store.read_logs(claim.run.id)
    assert got.message == cleaned and got.exc == cleaned


def test_clean_text_bounds_and_escapes() -> None:
    assert clean_text("x" * (MAX_LINE_CHARS + 5)).endswith("… [truncated: 5 more characters]")
    assert clean_text("a\x00b") == "a\\x00b"
    assert clean_text("bad \udc80 surrogate") == "bad \\udc80 surrogate"
    assert clean_text("héllo") == "héllo"


def test_a_record_becomes_a_line_with_its_traceback_and_extra_fields() -> None:
    logger = logging.getLogger("shop")
    try:
        raise ValueError("card declined")
    except ValueError:
        import sys

        record = logger.makeRecord("shop", logging.ERROR, __file__, 1, "order %s failed", ("A-1",), sys.exc_info(),
                                   extra={"order": {"id": 7}, "when": object()})
    got = line_from_record(record, "run-1", "charge", 3, 2)
    assert (got.message, got.level, got.level_name, got.logger) == ("order A-1 failed", 40, "ERROR", "shop")
    assert (got.step, got.command_id, got.attempt) == ("charge", 3, 2)
    assert got.exc is not None and "ValueError: card declined" in got.exc
    extra = msgspec.json.decode(got.extra or b"")
    assert extra["order"] == {"id": 7} and extra["when"].startswith("<object object")
    assert abs(got.at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_retention_deletes_the_lines_of_the_runs_it_deletes(store: Store) -> None:
    done = await start(store)
    going_on = await start(store)
    await store.write_logs([line(done.run.id, "old"), line(going_on.run.id, "still running")])
    finish = append(done, [RunCompleted(result=msgspec.Raw(b"1"))], status=COMPLETED, result=b"1", release=True,
                    logs=[line(done.run.id, "last words")])
    assert await store.append([finish]) == [None]
    assert len(await store.read_logs(done.run.id)) == 2
    assert await store.delete_finished({COMPLETED: datetime.now(UTC) + timedelta(minutes=1)}, limit=10) == {
        COMPLETED: 1}
    assert await store.read_logs(done.run.id) == []
    assert [got.message for got in await store.read_logs(going_on.run.id)] == ["still running"]
