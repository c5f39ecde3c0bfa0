"""``durable logs`` as a user sees it: in-process through ``main([...])``, and ``--follow`` as a real process
tailing a run while it executes (on SQLite and PostgreSQL: the database is what the processes share)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest

import durable
from durable._cli import main

from .conftest import sqlite_url_with_schema
from .test_logs import greeting, retried, traceback_workflow


@pytest.fixture(autouse=True)
def _info_level(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO)  # as an application's logging configuration would
    for name in ("DURABLE_DATABASE_URL", "FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url_with_schema(tmp_path / "logs.db")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what the steps printed while the run ran
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def finished_run(url: str, workflow: durable.Workflow, *args: object) -> str:
    async def run() -> str:
        async with durable.Engine(url) as engine:
            handle = await engine.start(workflow, *args)
            try:
                await handle.result(timeout=30)
            except durable.WorkflowFailed:
                pass
            return handle.id

    return asyncio.run(run())


def test_logs_prints_time_level_step_attempt_logger_and_message(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = finished_run(url, greeting, "ada")
    code, out, err = run_cli(capsys, "logs", run_id, "--database-url", url)
    assert (code, err) == (0, "")
    printed, logged = out.splitlines()
    assert printed.endswith(" INFO     #1 greets attempt 1 stdout: hello ada")
    assert logged.endswith(" INFO     #1 greets attempt 1 tests.logs.app: greeted ada")
    assert printed[:4].isdigit() and printed[10] == " "  # starts with the date and time


def test_logs_filters_by_level_step_and_attempt(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = finished_run(url, retried, f"cli-{time.monotonic()}")
    code, out, _ = run_cli(capsys, "logs", run_id, "--level", "error", "--database-url", url)
    assert code == 0
    assert [line.split(None, 3)[3] for line in out.splitlines()] == [
        "#1 flaky attempt 1 tests.logs.app: attempt 1 failed", "#1 flaky attempt 2 tests.logs.app: attempt 2 failed"]
    code, out, _ = run_cli(capsys, "logs", run_id, "--step", "flaky", "--attempt", "3", "--database-url", url)
    assert [line.split(None, 3)[3] for line in out.splitlines()] == ["#1 flaky attempt 3 stdout: attempt 3 starts"]
    code, out, err = run_cli(capsys, "logs", run_id, "--step", "other", "--database-url", url)
    assert (code, out) == (0, "") and f"no log lines match for run {run_id}" in err


def test_logs_shows_tracebacks_indented_and_json_with_extra_fields(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = finished_run(url, traceback_workflow)
    _, out, _ = run_cli(capsys, "logs", run_id, "--database-url", url)
    head, *traceback = out.rstrip("\n").split("\n")
    assert head.endswith("#1 fails_loudly attempt 1 tests.logs.app: charging 7 failed")
    assert traceback[0] == "    Traceback (most recent call last):"
    assert traceback[-1] == "    ZeroDivisionError: no money"
    _, out, _ = run_cli(capsys, "logs", run_id, "--json", "--database-url", url)
    [document] = [json.loads(line) for line in out.splitlines()]
    assert document["message"] == "charging 7 failed" and document["extra"]["order"] == 7
    where = (document["step"], document["attempt"], document["level"], document["stream"])
    assert where == ("fails_loudly", 1, 40, "log")
    assert (document["trace_id"], document["span_id"]) == (None, None)  # the engine that ran it does not trace


def test_logs_of_an_unknown_run_or_a_bad_level_exit_with_a_message(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "logs", "nope", "--database-url", url)
    assert (code, out) == (1, "")
    assert "error: no run with id 'nope'" in err and "durable list" in err
    code, out, err = run_cli(capsys, "logs", "nope", "--level", "loud", "--database-url", url)
    assert code == 2 and "unknown log level 'loud'" in err


@durable.step
def waits_for_go(path: str) -> str:
    print("first")
    while not Path(path).exists():  # the test says when to go on, once the tail has shown "first"
        time.sleep(0.05)
    print("second")
    return "done"


@durable.workflow(name="logs_follow")
async def followed(ctx: durable.WorkflowContext, path: str) -> str:
    result = await waits_for_go(path)
    ctx.logger.warning("all done")
    return result


async def test_follow_tails_a_running_workflow_until_it_ends(engine_url: str, store_kind: str, tmp_path: Path) -> None:
    if store_kind == "memory":
        pytest.skip("another process cannot see a memory store")
    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if k not in ("DURABLE_DATABASE_URL", "FORCE_COLOR")}
    async with durable.Engine(engine_url) as engine:
        handle = await engine.start(followed, str(go))
        tail = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "durable", "logs", handle.id, "--follow", "--database-url", engine_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        try:
            assert tail.stdout is not None
            first = await asyncio.wait_for(tail.stdout.readline(), timeout=30)  # the step is still running
            assert first.decode().rstrip().endswith("#1 waits_for_go attempt 1 stdout: first")
            go.touch()
            rest, err = await asyncio.wait_for(tail.communicate(), timeout=30)
        finally:
            if tail.returncode is None:
                tail.kill()
                await tail.wait()
        assert await handle.result(timeout=10) == "done"
    lines = rest.decode().splitlines()
    assert [line.split(None, 3)[3] for line in lines] == [
        "#1 waits_for_go attempt 1 stdout: second", "workflow durable.workflow.logs_follow: all done"]
    assert tail.returncode == 0, err.decode()
