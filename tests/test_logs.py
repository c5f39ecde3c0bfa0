"""Per-step log capture as a user sees it: what step bodies log and print lands with the right run, step and
attempt (async steps interleaving on one loop, sync steps in threads), still reaches the terminal and the
application's handlers, is bounded, and is read back with ``engine.get_logs``, ``get_execution(include_logs=)``
and ``durable logs``; ``ctx.logger`` lines are kept once and never re-emitted on replay. Over every store."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import durable
from durable import _logs
from history import MAX_LINE_CHARS, LogLine

app_log = logging.getLogger("tests.logs.app")

TAGS = ["alpha", "beta", "gamma", "delta"]


@pytest.fixture(autouse=True)
def _info_level(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Let INFO records through, as an application's logging configuration would (pytest's own handlers are on
    the root logger, so the capture does not lower the level itself)."""
    caplog.set_level(logging.INFO)
    yield
    assert _logs._installed == 0, "the capture hooks outlived the engine"
    assert not isinstance(sys.stdout, _logs._TeeStream) and not isinstance(sys.stderr, _logs._TeeStream)


@durable.step
async def chatty_async(tag: str) -> str:
    for i in range(3):
        print(f"{tag} print {i}")
        await asyncio.sleep(0)
        app_log.info("%s log %d", tag, i)
        sys.stdout.write(f"{tag} part-")  # a partial line, completed after other steps have written theirs
        await asyncio.sleep(0.001)
        sys.stdout.write(f"{i}\n")
    return tag


@durable.workflow(name="logs_concurrent_async")
async def concurrent_async(ctx: durable.WorkflowContext) -> list[str]:
    return list(await asyncio.gather(*(chatty_async(tag) for tag in TAGS)))


_barrier = threading.Barrier(len(TAGS), timeout=10)


@durable.step
def chatty_sync(tag: str) -> str:
    _barrier.wait()  # every thread is inside its step before any writes: their lines interleave
    for i in range(3):
        print(f"{tag} print {i}", file=sys.stderr)
        app_log.warning("%s log %d", tag, i)
        time.sleep(0.001)
    return tag


@durable.workflow(name="logs_concurrent_sync")
async def concurrent_sync(ctx: durable.WorkflowContext) -> list[str]:
    return list(await asyncio.gather(*(chatty_sync(tag) for tag in TAGS)))


def by_step(lines: list[LogLine]) -> dict[tuple[str | None, int | None], list[LogLine]]:
    grouped: dict[tuple[str | None, int | None], list[LogLine]] = {}
    for line in lines:
        grouped.setdefault((line.step, line.command_id), []).append(line)
    return grouped


async def test_concurrent_async_steps_keep_their_own_lines(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        handle = await engine.start(concurrent_async)
        assert await handle.result(timeout=30) == TAGS
        lines = await engine.get_logs(handle.id)
    grouped = by_step(lines)
    assert sorted(grouped) == [("chatty_async", cid) for cid in range(1, 5)]
    for (_, cid), own in grouped.items():
        tag = TAGS[cid - 1]
        assert {line.attempt for line in own} == {1}
        printed = [line.message for line in own if line.stream == "stdout"]
        logged = [line.message for line in own if line.stream == "log"]
        assert printed == [f"{tag} print 0", f"{tag} part-0", f"{tag} print 1", f"{tag} part-1",
                           f"{tag} print 2", f"{tag} part-2"]  # fmt: skip
        assert logged == [f"{tag} log {i}" for i in range(3)]
        assert {(line.logger, line.level_name) for line in own if line.stream == "log"} == {("tests.logs.app", "INFO")}
    assert [line.id for line in lines] == sorted(line.id for line in lines)


async def test_threaded_sync_steps_keep_their_own_lines(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        handle = await engine.start(concurrent_sync)
        assert await handle.result(timeout=30) == TAGS
        lines = await engine.get_logs(handle.id)
    grouped = by_step(lines)
    assert sorted(grouped) == [("chatty_sync", cid) for cid in range(1, 5)]
    for (_, cid), own in grouped.items():
        tag = TAGS[cid - 1]
        assert [line.message for line in own if line.stream == "stderr"] == [f"{tag} print {i}" for i in range(3)]
        assert [line.message for line in own if line.stream == "log"] == [f"{tag} log {i}" for i in range(3)]
        assert {(line.level_name, line.attempt) for line in own} == {("WARNING", 1)}


_flaky_calls: dict[str, int] = {}


@durable.step(retry=durable.Retry(max_attempts=3, backoff="constant", base=0.01))
async def flaky(key: str) -> str:
    _flaky_calls[key] = attempt = _flaky_calls.get(key, 0) + 1
    print(f"attempt {attempt} starts")
    if attempt < 3:
        app_log.error("attempt %d failed", attempt)
        raise RuntimeError(f"boom {attempt}")
    return "ok"


@durable.workflow(name="logs_retried")
async def retried(ctx: durable.WorkflowContext, key: str) -> str:
    return await flaky(key)


async def test_a_retried_steps_attempts_are_kept_apart(engine_url: str) -> None:
    key = engine_url + str(time.monotonic())
    async with durable.Engine(engine_url) as engine:
        handle = await engine.start(retried, key)
        assert await handle.result(timeout=30) == "ok"
        everything = await engine.get_logs(handle.id)
        second = await engine.get_logs(handle.id, step="flaky", attempt=2)
        errors = await engine.get_logs(handle.id, level="error")
    assert [(line.attempt, line.message) for line in everything] == [
        (1, "attempt 1 starts"), (1, "attempt 1 failed"), (2, "attempt 2 starts"), (2, "attempt 2 failed"),
        (3, "attempt 3 starts"),
    ]  # fmt: skip
    assert [line.message for line in second] == ["attempt 2 starts", "attempt 2 failed"]
    assert [line.message for line in errors] == ["attempt 1 failed", "attempt 2 failed"]


@durable.step
def noisy(count: int, width: int) -> int:
    for i in range(count):
        print(f"{i:0{width}d}")
    return count


@durable.workflow(name="logs_noisy")
async def noisy_workflow(ctx: durable.WorkflowContext, count: int, width: int) -> int:
    return await noisy(count, width)


async def test_an_attempt_past_its_limits_keeps_a_marker_of_what_was_dropped(engine_url: str) -> None:
    async with durable.Engine(engine_url, log_limits=durable.LogLimits(max_lines=5)) as engine:
        by_lines = await engine.start(noisy_workflow, 20, 3)
        await by_lines.result(timeout=30)
        lines = await engine.get_logs(by_lines.id)
    assert [line.message for line in lines[:5]] == ["000", "001", "002", "003", "004"]
    assert lines[5].message == "… truncated: 15 more lines not captured (limit 5 lines / 1 MB per attempt)"
    assert (lines[5].level_name, lines[5].step, lines[5].attempt, len(lines)) == ("WARNING", "noisy", 1, 6)

    async with durable.Engine(engine_url, log_limits=durable.LogLimits(max_bytes=2_500)) as engine:
        by_bytes = await engine.start(noisy_workflow, 10, 1000)  # ten lines of 1,000 characters
        await by_bytes.result(timeout=30)
        lines = await engine.get_logs(by_bytes.id)
    assert len(lines) == 3 and len(lines[0].message) == 1000
    assert lines[2].message == "… truncated: 8 more lines not captured (limit 1000 lines / 2.5 kB per attempt)"


@durable.step
async def fails_loudly(order: int) -> None:
    try:
        raise ZeroDivisionError("no money")
    except ZeroDivisionError:
        app_log.exception("charging %d failed", order, extra={"order": order, "card": object()})


@durable.workflow(name="logs_traceback")
async def traceback_workflow(ctx: durable.WorkflowContext) -> None:
    await fails_loudly(7)


async def test_tracebacks_and_extra_fields_are_kept(engine_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with durable.Engine(engine_url) as engine:
        handle = await engine.start(traceback_workflow)
        await handle.result(timeout=30)
        [line] = await engine.get_logs(handle.id)
    assert (line.message, line.level_name, line.logger) == ("charging 7 failed", "ERROR", "tests.logs.app")
    assert line.exc is not None and line.exc.startswith("Traceback") and "ZeroDivisionError: no money" in line.exc
    extra = msgspec.json.decode(line.extra or b"")
    assert extra["order"] == 7 and extra["card"].startswith("<object object at")
    # ...and the application's handlers got the record as usual
    assert [r.getMessage() for r in caplog.records if r.name == "tests.logs.app"] == ["charging 7 failed"]


@durable.step
async def greets(name: str) -> str:
    print(f"hello {name}")
    app_log.info("greeted %s", name)
    return name


@durable.workflow(name="logs_greeting")
async def greeting(ctx: durable.WorkflowContext, name: str) -> str:
    return await greets(name)


async def test_output_still_reaches_the_terminal_and_the_handlers(
    engine_url: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    async with durable.Engine(engine_url) as engine:
        handle = await engine.start(greeting, "ada")
        await handle.result(timeout=30)
        assert len(await engine.get_logs(handle.id)) == 2
    assert "hello ada\n" in capsys.readouterr().out
    assert "greeted ada" in [r.getMessage() for r in caplog.records]


@durable.step
def writes_bytes(text: str) -> None:
    sys.stdout.buffer.write(text.encode() + b"\n")
    sys.stdout.buffer.flush()
    sys.stderr.buffer.writelines([b"half a ", b"line, then the rest\n"])


@durable.workflow(name="logs_bytes")
async def bytes_writer(ctx: durable.WorkflowContext, text: str) -> None:
    await writes_bytes(text)


async def test_bytes_written_to_the_streams_buffers_are_captured_as_text(
    engine_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async with durable.Engine(engine_url) as engine:
        handle = await engine.start(bytes_writer, "día 1 ✓")
        await handle.result(timeout=30)
        lines = await engine.get_logs(handle.id, step="writes_bytes")
    assert [(line.stream, line.message) for line in lines] == [
        ("stdout", "día 1 ✓"), ("stderr", "half a line, then the rest"),
    ]
    out, err = capfd.readouterr()
    assert "día 1 ✓\n" in out and "half a line, then the rest\n" in err  # still reaches the terminal


def _in_a_thread(tag: str) -> None:
    print(f"{tag} from a helper thread")


@durable.step
async def hands_work_to_threads() -> None:
    await asyncio.to_thread(_in_a_thread, "to_thread")  # copies the context itself
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(context.run, _in_a_thread, "copied context").result()
        pool.submit(_in_a_thread, "bare pool").result()  # no context: not the step's


@durable.workflow(name="logs_threads")
async def thread_helper(ctx: durable.WorkflowContext) -> None:
    await hands_work_to_threads()


async def test_threads_a_step_starts_keep_its_lines_when_they_carry_its_context(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        handle = await engine.start(thread_helper)
        await handle.result(timeout=30)
        lines = await engine.get_logs(handle.id)
    assert [line.message for line in lines] == ["to_thread from a helper thread", "copied context from a helper thread"]


async def test_nothing_is_captured_or_installed_when_capture_is_off(engine_url: str) -> None:
    async with durable.Engine(engine_url, capture_logs=False) as engine:
        assert not isinstance(sys.stdout, _logs._TeeStream)
        handle = await engine.start(greeting, "bob")
        await handle.result(timeout=30)
        assert await engine.get_logs(handle.id) == []


@durable.workflow(name="logs_workflow_logger")
async def sleepy_logger(ctx: durable.WorkflowContext, name: str) -> str:
    ctx.logger.info("before the sleep, %s", name)
    await ctx.sleep(0.2)  # past the horizon: the run is released, then claimed again and replayed
    await greets(name)
    ctx.logger.warning("after the sleep")
    return name


def workflow_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "durable.workflow.logs_workflow_logger"]


async def test_ctx_logger_lines_are_kept_once_and_not_emitted_on_replay(
    engine_url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    async with durable.Engine(engine_url, horizon=0.0) as engine:
        handle = await engine.start(sleepy_logger, "cy")
        assert await handle.result(timeout=30) == "cy"
        lines = await engine.get_logs(handle.id)
        history = await engine.get_history(handle.id)
    assert [(line.step, line.message) for line in lines] == [
        (None, "before the sleep, cy"), ("greets", "hello cy"), ("greets", "greeted cy"), (None, "after the sleep"),
    ]  # fmt: skip
    workflow_line = lines[0]
    assert (workflow_line.logger, workflow_line.attempt, workflow_line.command_id) == (
        "durable.workflow.logs_workflow_logger", None, None)
    assert workflow_records(caplog) == ["before the sleep, cy", "after the sleep"]  # replayed twice, emitted once

    capsys.readouterr()
    caplog.clear()
    result = durable.replay.replay(sleepy_logger, history)  # the pure replayer: no store, prints nothing
    assert result.ok
    assert workflow_records(caplog) == []
    assert capsys.readouterr() == ("", "")


async def test_get_execution_includes_the_logs_of_the_run_and_of_each_step(engine_url: str) -> None:
    async with durable.Engine(engine_url) as engine:
        handle = await engine.start(concurrent_async)
        await handle.result(timeout=30)
        plain = await engine.get_execution(handle.id, include_steps=True)
        execution = await engine.get_execution(handle.id, include_steps=True, include_logs=True)
        every = await engine.get_logs(handle.id)
    assert plain.logs is None and plain.steps is not None and plain.steps[0].logs is None
    assert execution.logs == every and len(every) == 4 * 9
    assert execution.steps is not None
    for view in execution.steps:
        assert view.logs == [line for line in every if line.command_id == view.command_id]
        assert len(view.logs) == 9


async def test_get_logs_refuses_an_unknown_run_and_bad_filters(engine_url: str) -> None:
    async with durable.Engine(engine_url, worker=False) as engine:
        with pytest.raises(durable.RunNotFound, match="no run with id 'nope'"):
            await engine.get_logs("nope")
        with pytest.raises(ValueError, match=r"unknown log level 'loud'.*debug, info, warning"):
            await engine.get_logs("nope", level="loud")
        with pytest.raises(ValueError, match="limit must be between 1 and 10,000"):
            await engine.get_logs("nope", limit=0)
        with pytest.raises(ValueError, match="attempt must be an attempt number"):
            await engine.get_logs("nope", attempt=0)
    with pytest.raises(ValueError, match=r"LogLimits\.max_lines must be an int >= 1"):
        durable.LogLimits(max_lines=0)


def test_levels_parse_by_name_or_number() -> None:
    assert [_logs.parse_level(v) for v in ("warning", "WARN", "Error", "15", 25, None)] == [30, 30, 40, 15, 25, None]


UNCONFIGURED = '''
import asyncio, logging, sys
import durable

log = logging.getLogger("plain")

@durable.step
async def talks() -> None:
    log.info("quiet info")
    log.warning("loud warning")

@durable.workflow(name="unconfigured")
async def unconfigured(ctx: durable.WorkflowContext) -> None:
    await talks()

async def main() -> None:
    async with durable.Engine("memory://") as engine:
        handle = await engine.start(unconfigured)
        await handle.result(timeout=30)
        lines = await engine.get_logs(handle.id)
    root = logging.getLogger()
    restored = sys.stdout is sys.__stdout__
    print([line.message for line in lines], logging.getLevelName(root.level), root.handlers, restored)

asyncio.run(main())
'''


def test_with_logging_unconfigured_the_terminal_shows_what_python_would(tmp_path: Path) -> None:
    script = tmp_path / "unconfigured.py"
    script.write_text(UNCONFIGURED)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "DURABLE_DATABASE_URL"})
    assert done.returncode == 0, done.stderr
    assert done.stderr == "loud warning\n"  # Python's last resort, as without Durable: INFO stays silent
    assert done.stdout == "['quiet info', 'loud warning'] WARNING [] True\n"  # both kept; all restored after


_release: dict[str, asyncio.Event] = {}


@durable.step
async def long_running(key: str) -> str:
    print("started")
    app_log.info("working")
    await _release[key].wait()  # the test lets it finish once it has seen the lines above
    print("finished")
    return key


@durable.workflow(name="logs_live_tail")
async def live_tail(ctx: durable.WorkflowContext, key: str) -> str:
    return await long_running(key)


async def test_a_long_steps_lines_are_readable_while_it_runs(engine_url: str) -> None:
    key = f"{engine_url}-{time.monotonic()}"
    _release[key] = asyncio.Event()
    async with durable.Engine(engine_url) as engine:
        handle = await engine.start(live_tail, key)
        early: list[LogLine] = []
        async with asyncio.timeout(30):  # written by the live tail about a second after they were logged
            while len(early) < 2:
                early = await engine.get_logs(handle.id)
                await asyncio.sleep(0.05)
        assert (await engine.get_execution(handle.id)).status == "running"
        _release[key].set()
        assert await handle.result(timeout=30) == key
        every = await engine.get_logs(handle.id)
        after = await engine.get_logs(handle.id, after_id=early[-1].id)
    assert [line.message for line in early] == ["started", "working"]
    assert [line.message for line in every] == ["started", "working", "finished"]
    assert every[:2] == early and [line.message for line in after] == ["finished"]


@given(writes=st.lists(st.text(alphabet="ab\n", max_size=6), max_size=12))
def test_writes_become_the_lines_they_spell(writes: list[str]) -> None:
    capture = _logs._Capture(durable.StepInfo("r", "w", "s", 1, 1), durable.LogLimits(), None)
    for text in writes:
        capture.write("stdout", text)
    lines = [line.message for line in capture.finish()]
    expected = "".join(writes).split("\n")
    if expected[-1] == "":
        expected.pop()  # a newline at the end ends the last line; it starts no new one
    assert lines == expected


def test_a_line_that_never_ends_is_kept_in_bounded_pieces() -> None:
    capture = _logs._Capture(durable.StepInfo("r", "w", "s", 1, 1), durable.LogLimits(), None)
    for _ in range(5):
        capture.write("stdout", "x" * 30_000)
    pieces = [line.message for line in capture.finish()]
    assert "".join(pieces) == "x" * 150_000 and max(map(len, pieces)) == MAX_LINE_CHARS
