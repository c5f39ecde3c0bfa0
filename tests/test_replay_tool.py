"""The replay tool as a user meets it: ``durable.replay.replay()``, the pytest helper, and the ``durable history``
and ``durable replay`` commands (in-process through ``main([...])``, and as real processes)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import pytest

import durable
import durable.replay
from durable._cli import main
from history import MemoryStore, RecordedEvent, TimerStarted, open_store

from . import wf_samples as wf
from .conftest import sqlite_url_with_schema

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parent.parent
SIDE_EFFECTS: list[str] = []


@durable.step
async def charge(order_id: str, amount: float) -> str:
    SIDE_EFFECTS.append(f"charged {order_id}")  # a real side effect: must never happen during a replay
    return f"ch-{order_id}"


@durable.step
async def ship(order_id: str) -> str:
    SIDE_EFFECTS.append(f"shipped {order_id}")
    return f"sh-{order_id}"


async def helper(ctx: durable.WorkflowContext, order_id: str) -> str:
    note = f"shipping {order_id}"
    return await ship(order_id) + note[:0]


NAP = 3600.0
"""How long ``order_v1`` sleeps: an hour (the fixture records it with a short nap, then moves the history's clock
on by an hour, as if the worker had waited)."""


async def order_v1(ctx: durable.WorkflowContext, order_id: str, amount: float) -> dict[str, Any]:
    charged = await charge(order_id, amount)
    await ctx.sleep(NAP)  # an hour: a replay never waits for it
    shipped = await helper(ctx, order_id)
    return {"charged": charged, "shipped": shipped}


def record(workflow: durable.Workflow, *args: Any) -> list[RecordedEvent]:
    """Run ``workflow`` to its end on an in-memory engine; return its history."""

    async def main_() -> list[RecordedEvent]:
        async with durable.Engine(store=MemoryStore(), workflows=[workflow], horizon=1.0) as engine:
            run = await engine.start(workflow, *args)
            try:
                await run.result(timeout=20)
            except durable.WorkflowFailed:
                pass
            return await engine.get_history(run.id)

    return asyncio.run(main_())


@pytest.fixture(scope="module")
def order_history() -> list[RecordedEvent]:
    global NAP
    NAP = 0.01
    try:
        events = record(durable.Workflow(order_v1, name="order"), "A-1", 9.5)
    finally:
        NAP = 3600.0
    hour = timedelta(seconds=3600 - 0.01)
    moved: list[RecordedEvent] = []
    for rec in events:
        event = rec.event
        if isinstance(event, TimerStarted):
            event = msgspec.structs.replace(event, seconds=3600.0, fire_at=event.fire_at + hour)
        late = bool(moved) and any(isinstance(m.event, TimerStarted) for m in moved)
        moved.append(RecordedEvent(seq=rec.seq, at=rec.at + hour if late else rec.at, event=event))
    return moved


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DURABLE_DATABASE_URL", "FORCE_COLOR", "NO_COLOR", "PYTHONBREAKPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))


def variant(fn: Any) -> durable.Workflow:
    return durable.Workflow(fn, name="order")


# -- the Python API ------------------------------------------------------------------------------------------


def test_replay_matches_without_running_steps_sleeping_or_io(
    order_history: list[RecordedEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [type(r.event).__name__ for r in order_history].count("TimerStarted") == 1
    SIDE_EFFECTS.clear()

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("replay opened a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    started = time.perf_counter()
    result = durable.replay.replay(variant(order_v1), order_history)
    assert time.perf_counter() - started < 1.0  # the hour-long sleep was answered from the history
    assert SIDE_EFFECTS == []  # no step body ran
    assert result.ok and result.divergence is None and result.matches_recorded is True
    assert result.result == {"charged": "ch-A-1", "shipped": "sh-A-1"}
    assert result.commands == [
        'event 2: #1 step charge("A-1",9.5)',
        "event 4: #2 timer 3600s",
        'event 6: #3 step ship("A-1")',
    ]
    assert (result.events, result.total_events, result.waiting_for) == (8, 8, [])
    report = result.report()
    assert report.startswith("OK  run ") and "the code re-issued the 3 recorded commands" in report
    assert 'returned {"charged":"ch-A-1","shipped":"sh-A-1"}: the same as recorded (event 8)' in report


def test_replay_takes_a_plain_function_a_registry_or_a_file(
    order_history: list[RecordedEvent], tmp_path: Path
) -> None:
    path = durable.replay.write_history(tmp_path / "order.json", [durable.replay.make_document(order_history)])
    assert durable.replay.replay(order_v1, path).ok  # a plain async def takes the history's workflow name
    assert durable.replay.replay({"order": variant(order_v1)}, str(path)).source == str(path)
    assert durable.replay.replay([variant(order_v1)], durable.replay.load_history(path)).ok
    with pytest.raises(durable.UnknownWorkflowError, match="no workflow is registered as 'order'"):
        durable.replay.replay(None, path)
    with pytest.raises(ValueError, match="the history is of workflow 'order'"):
        durable.replay.replay(wf.arith, path)


def test_a_divergence_is_reported_as_a_diff_with_the_line_of_code(order_history: list[RecordedEvent]) -> None:
    async def renamed(ctx: durable.WorkflowContext, order_id: str, amount: float) -> dict[str, Any]:
        charged = await wf.add(1, 2)  # the changed line
        return {"charged": charged}

    result = durable.replay.replay(variant(renamed), order_history)
    assert not result.ok and result.divergence is not None
    assert result.divergence.seq == 2 and result.commands == []
    assert result.divergence.location is not None and result.divergence.location.startswith(__file__)
    report = result.report()
    assert "DIVERGED  run" in report and "at event 2 of 8" in report
    assert "  - event 2, recorded:  step 'charge' with arguments [\"A-1\",9.5]" in report
    assert "  + the code issued:    step 'add' with arguments [1,2]" in report
    assert "charged = await wf.add(1, 2)  # the changed line" in report  # the source line itself
    assert "hint: the step was renamed, or a new step was inserted" in report


def test_a_step_added_at_the_end_shows_where_the_code_waits(order_history: list[RecordedEvent]) -> None:
    async def extended(ctx: durable.WorkflowContext, order_id: str, amount: float) -> dict[str, Any]:
        result = await order_v1(ctx, order_id, amount)
        await ship("again")  # new
        return result

    result = durable.replay.replay(variant(extended), order_history)
    assert not result.ok and result.divergence is not None and result.divergence.seq == 8
    assert len(result.commands) == 3  # all recorded ones matched before the end
    report = result.report()
    assert "still waiting" in report and "the code waits at" in report and 'await ship("again")  # new' in report


def test_a_different_result_is_not_ok(order_history: list[RecordedEvent]) -> None:
    async def recomputed(ctx: durable.WorkflowContext, order_id: str, amount: float) -> dict[str, Any]:
        result = await order_v1(ctx, order_id, amount)
        return {**result, "extra": True}

    result = durable.replay.replay(variant(recomputed), order_history)
    assert result.divergence is None and result.matches_recorded is False and not result.ok
    assert result.mismatch is not None and '"extra":true' in result.mismatch
    assert result.report().startswith("DIFFERENT END")


def test_failed_and_in_flight_runs() -> None:
    failed = record(wf.boom)
    result = durable.replay.replay(wf.boom, failed)
    assert result.ok and result.error is not None and result.error.message == "the workflow itself failed"
    in_flight = record(wf.arith, 4)[:5]  # as if exported while the third step ran
    result = durable.replay.replay(wf.arith, in_flight)
    assert result.ok and result.recorded_end is None and result.outcome is None
    assert result.waiting_for == ["#3 step add(10,1)", "#4 step add(10,2)"]
    assert "the run is in flight" in result.report()


def test_until_stops_after_an_event_and_captures_the_local_variables(order_history: list[RecordedEvent]) -> None:
    result = durable.replay.replay(variant(order_v1), order_history, until=5)
    assert result.ok and result.events == 5 and result.outcome is None
    assert result.waiting_for == ['#3 step ship("A-1")']
    assert [f.function for f in result.frames] == ["order_v1", "helper"]
    assert result.locals["charged"] == "ch-A-1" and result.locals["order_id"] == "A-1"
    assert "shipped" not in result.locals  # not assigned yet at event 5
    assert result.frames[1].locals["note"] == "shipping A-1"
    report = result.report()
    assert report.startswith("STOPPED after event 5 of 8")
    assert "locals of order_v1 at" in report and "charged = 'ch-A-1'" in report
    assert "locals of helper at" in report and "note = 'shipping A-1'" in report
    ended = durable.replay.replay(variant(order_v1), order_history, until=100)
    assert ended.frames == [] and "the workflow had ended by event 8" in ended.report()
    with pytest.raises(ValueError, match="until= is an event number"):
        durable.replay.replay(variant(order_v1), order_history, until=0)


def test_break_at_opens_the_debugger_in_the_workflow_frame(
    order_history: list[RecordedEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def debugger(frame: FrameType) -> None:
        seen.append((frame.f_code.co_name, dict(frame.f_locals)))

    result = durable.replay.replay(variant(order_v1), order_history, break_at="ship", debugger=debugger)
    assert result.ok and result.break_hits == 1
    assert seen[0][0] == "helper" and seen[0][1]["note"] == "shipping A-1"

    # the default debugger is pdb, at that frame
    stops: list[FrameType] = []
    monkeypatch.setattr("pdb.Pdb.set_trace", lambda self, frame=None: stops.append(frame))
    SIDE_EFFECTS.clear()
    assert durable.replay.replay(variant(order_v1), order_history, break_at="charge").break_hits == 1
    assert [f.f_code.co_name for f in stops] == ["order_v1"] and SIDE_EFFECTS == []
    monkeypatch.setenv("PYTHONBREAKPOINT", "0")  # turns it off, as for breakpoint()
    durable.replay.replay(variant(order_v1), order_history, break_at="charge")
    assert len(stops) == 1


def test_breakpoint_in_workflow_code_works_during_replay(
    order_history: list[RecordedEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def debugged(ctx: durable.WorkflowContext, order_id: str, amount: float) -> dict[str, Any]:
        charged = await charge(order_id, amount)
        breakpoint()
        await ctx.sleep(3600)
        return {"charged": charged, "shipped": await helper(ctx, order_id)}

    monkeypatch.setattr(sys, "breakpointhook", lambda *a, **k: calls.append(sys._getframe(1).f_code.co_name))
    assert durable.replay.replay(variant(debugged), order_history).ok
    assert calls == ["debugged"]


# -- the pytest helper: the deploy guard ----------------------------------------------------------------------


def test_check_histories_replays_the_golden_set() -> None:
    results = durable.replay.check_histories(GOLDEN)
    by_file = {Path(r.source or "").stem: r for r in results}
    assert set(by_file) == {p.stem for p in GOLDEN.glob("*.json")}
    assert [name for name, r in by_file.items() if not r.ok] == ["broken_arith_renamed_step"]


def test_assert_histories_replay_passes_fails_and_refuses_an_empty_folder(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for path in GOLDEN.glob("*.json"):
        if not path.stem.startswith("broken_"):
            shutil.copy(path, good)
    assert len(durable.replay.assert_histories_replay(good)) == 4
    shutil.copy(GOLDEN / "broken_arith_renamed_step.json", good)
    with pytest.raises(AssertionError) as info:
        durable.replay.assert_histories_replay(good)
    assert "1 of 5 histories no longer replay" in str(info.value)
    assert "step 'divide'" in str(info.value) and "wf_samples.py" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssertionError, match="no history files"):
        durable.replay.assert_histories_replay(tmp_path / "empty")


# -- the command line ---------------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*argv: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DURABLE_DATABASE_URL", "FORCE_COLOR")}
    return subprocess.run([sys.executable, "-m", "durable", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def record_into(url: str, workflow: durable.Workflow, *args: Any, run_id: str) -> list[RecordedEvent]:
    """Run ``workflow`` to its end on the database at ``url``; return its history."""

    async def main_() -> list[RecordedEvent]:
        async with durable.Engine(url, workflows=[workflow], horizon=1.0) as engine:
            run = await engine.start(workflow, *args, workflow_id=run_id)
            try:
                await run.result(timeout=20)
            except durable.WorkflowFailed:
                pass
            return await engine.get_history(run.id)

    return asyncio.run(main_())


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return sqlite_url_with_schema(tmp_path / "runs.db")


def test_history_table_export_and_replay(capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    record_into(sqlite_url, wf.retrying, "cli", 1, run_id="r-1")
    code, out, err = run_cli(capsys, "--database-url", sqlite_url, "history", "r-1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Run r-1  retrying  completed  5 events") and "\x1b[" not in out  # plain when piped
    assert lines[1].split() == ["seq", "time", "type", "command", "attempt", "duration", "details"]
    failed = lines[4].split()
    assert failed[:6] == ["3", failed[1], "step_failed", "#1", "flaky", "1"] and "ConnectionError:" in lines[4]
    assert "retry at" in lines[4] and " ms " in lines[4]
    assert lines[5].split()[2:6] == ["step_completed", "#1", "flaky", "2"] and '-> "cli ok after 2"' in lines[5]
    assert lines[6].split()[2] == "run_completed"
    monkeypatch.setenv("FORCE_COLOR", "1")
    code, out, _ = run_cli(capsys, "--database-url", sqlite_url, "history", "show", "r-1")
    assert "\x1b[33mstep_failed\x1b[0m" in out and "\x1b[32mstep_completed\x1b[0m" in out
    monkeypatch.delenv("FORCE_COLOR")

    code, out, err = run_cli(capsys, "--database-url", sqlite_url, "history", "r-1", "--json")
    assert code == 0, err
    document = durable.replay.load_history(out.encode())
    assert document.run.status == "completed" and len(document.events) == 5

    path = tmp_path / "r-1.json"
    code, out, err = run_cli(capsys, "--database-url", sqlite_url, "history", "export", "r-1", "-o", str(path))
    assert code == 0 and f"exported 1 run (5 events) to {path}" in err
    code, out, err = run_cli(capsys, "replay", str(path), "--app", "tests.wf_samples")
    assert code == 0, err
    assert out.startswith(f"OK  run r-1 (workflow retrying) from {path}")
    code, out, err = run_cli(capsys, "--database-url", sqlite_url, "replay", "r-1", "--app", "tests.wf_samples")
    assert code == 0 and out.startswith("OK  run r-1") and sqlite_url in out.splitlines()[0], err


def test_export_by_filter_to_json_lines_and_a_directory_then_import(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    for n in range(3):
        record_into(sqlite_url, wf.arith, n, run_id=f"a-{n}")
    record_into(sqlite_url, wf.boom, run_id="b-1")
    base = ["--database-url", sqlite_url, "history", "export"]
    code, _, err = run_cli(capsys, *base, "--workflow", "arith", "--since", "1d", "-o", str(tmp_path / "a.jsonl"))
    assert code == 0 and "exported 3 runs (30 events)" in err, err
    assert [d.run.id for d in durable.replay.load_histories(tmp_path / "a.jsonl")] == ["a-2", "a-1", "a-0"]
    code, _, err = run_cli(capsys, *base, "--status", "failed", "-o", f"{tmp_path / 'failed'}/")
    assert code == 0 and sorted(p.name for p in (tmp_path / "failed").iterdir()) == ["b-1.json"], err
    code, out, _ = run_cli(capsys, *base, "--workflow", "arith", "--limit", "2")  # stdout: JSON lines
    assert [json.loads(line)["run"]["id"] for line in out.splitlines()] == ["a-2", "a-1"]
    code, _, err = run_cli(capsys, *base, "--workflow", "arith", "-o", str(tmp_path / "x.json"))
    assert code == 2 and "3 runs match, but" in err and ".jsonl" in err
    code, _, err = run_cli(capsys, *base)
    assert code == 2 and "name the runs to export" in err
    code, _, err = run_cli(capsys, *base, "--since", "fortnight")
    assert code == 2 and "--since 'fortnight' is not a duration ago" in err

    # import into another database: the runs are there, shown and replayed like the originals
    other = f"sqlite:///{tmp_path / 'other.db'}"
    code, out, err = run_cli(capsys, "--database-url", other, "history", "import", str(tmp_path / "a.jsonl"),
                             str(tmp_path / "failed"))
    assert code == 0 and out.count("imported run") == 4 and "4 run(s) imported" in err, err
    code, out, err = run_cli(capsys, "--database-url", other, "show", "a-1")
    assert code == 0 and "status    completed" in out and '"pair":[11,12]' not in out, err
    assert "Steps (4)" in out and "multiply" in out
    code, out, err = run_cli(capsys, "--database-url", other, "show", "b-1")
    assert code == 0 and "status    failed" in out and "the workflow itself failed" in out, err
    code, out, err = run_cli(capsys, "--database-url", other, "history", "import", str(tmp_path / "a.jsonl"))
    assert code == 0 and out.count("already, with the same events: skipped") == 3, err
    code, out, err = run_cli(capsys, "--database-url", other, "replay", "a-2", "--app", "tests.wf_samples")
    assert code == 0 and out.startswith("OK  run a-2"), err


def test_importing_a_different_history_under_an_existing_id_is_refused(
    capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path
) -> None:
    record_into(sqlite_url, wf.arith, 1, run_id="same")
    path = tmp_path / "same.json"
    events = durable.replay.load_history(GOLDEN / "arith.json").events
    document = durable.replay.make_document(events)
    text = durable.replay.write_history(path, [document]).read_text().replace("golden-arith", "same")
    path.write_text(text)
    code, _, err = run_cli(capsys, "--database-url", sqlite_url, "history", "import", str(path))
    assert code == 1 and "exists already" in err and "another history" in err and "Traceback" not in err


def test_cli_replay_reports_a_divergence_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "replay", str(GOLDEN), "--app", "tests.wf_samples")
    assert code == 1, err
    assert out.count("\nOK  run") + out.startswith("OK  run") == 4
    assert "DIVERGED  run golden-arith (workflow arith)" in out
    assert "- event 4, recorded:  step 'divide'" in out and "+ the code issued:    step 'multiply'" in out
    assert "wf_samples.py:" in out and "p = await multiply(s, 2)" in out
    assert out.rstrip().endswith("5 runs replayed: 4 OK, 1 not")
    code, out, _ = run_cli(capsys, "replay", str(GOLDEN), "--app", "tests.wf_samples", "--run", "golden-retrying")
    assert code == 0 and out.startswith("OK  run golden-retrying")


def test_cli_until_prints_locals_and_break_at_opens_pdb(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(GOLDEN / "arith.json")
    code, out, err = run_cli(capsys, "replay", path, "--app", "tests.wf_samples", "--until", "5")
    assert code == 0, err
    assert out.startswith("STOPPED after event 5 of 10")
    assert "the code now waits for: #3 step add(10,1); #4 step add(10,2)" in out
    assert "locals of arith at" in out and "    s = 5" in out and "    p = 10" in out and "    x = 4" in out

    stops: list[FrameType] = []
    monkeypatch.setattr("pdb.Pdb.set_trace", lambda self, frame=None: stops.append(frame))
    code, out, err = run_cli(capsys, "replay", path, "--app", "tests.wf_samples", "--break-at", "multiply")
    assert code == 0 and out.startswith("OK"), err
    assert [(f.f_code.co_name, f.f_locals["s"]) for f in stops] == [("arith", 5)]
    code, out, err = run_cli(capsys, "replay", path, "--app", "tests.wf_samples", "--break-at", "nope")
    assert code == 0 and "never called a step of that name" in out and "add, multiply" in out
    code, _, err = run_cli(capsys, "replay", str(GOLDEN), "--app", "tests.wf_samples", "--until", "3")
    assert code == 2 and "pick one with --run RUN_ID" in err


def _damaged(tmp_path: Path, name: str, old: str, new: str) -> str:
    text = (GOLDEN / "arith.json").read_text()
    assert old in text
    (tmp_path / name).write_text(text.replace(old, new, 1))
    return str(tmp_path / name)


@pytest.fixture
def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], list[str]]]:
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('cannot start')\n")
    cut = tmp_path / "cut.json"
    cut.write_bytes((GOLDEN / "arith.json").read_bytes()[:1000])
    app = ["--app", "tests.wf_samples"]
    return {
        "truncated": (["replay", str(cut), *app], ["is cut short"]),
        "hand-edited": (["replay", _damaged(tmp_path, "e.json", '"seq":5', '"seq":6'), *app],
                        ["events jump from seq 4 to seq 6"]),
        "unknown event type": (["replay", _damaged(tmp_path, "t.json", '"type":"step_completed"', '"type":"x"'),
                                *app], ["event 3 has type 'x'"]),
        "newer format": (["replay", _damaged(tmp_path, "n.json", '"version": 1', '"version": 9'), *app],
                         ["made by a newer Durable (history format 9", "upgrade"]),
        "app fails to import": (["replay", str(GOLDEN / "arith.json"), "--app", "broken_app"],
                                ["cannot import module 'broken_app'", "RuntimeError: cannot start"]),
        "app not given": (["replay", str(GOLDEN / "arith.json"), "--app", "json"],
                          ["is of workflow 'arith', which no imported module defines", "--app"]),
        "missing file": (["replay", str(tmp_path / "nope.json"), *app], ["no such file"]),
        "unknown run": (["replay", "no-such-run", *app], ["neither a history file nor a run"]),
        "import of a bad file": (["history", "import", str(cut)], ["is cut short"]),
        "unknown run (history)": (["history", "no-such-run"], ["no run with id 'no-such-run'", "durable list"]),
    }


CASES = ["truncated", "hand-edited", "unknown event type", "newer format", "app fails to import", "app not given",
         "missing file", "unknown run", "import of a bad file", "unknown run (history)"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_paragraph_and_exit_1(
    case: str, bad_inputs: dict[str, Any], capsys: pytest.CaptureFixture[str], sqlite_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    if case == "app not given":  # a registry as a fresh process has it
        monkeypatch.setattr("durable._definitions._REGISTRY", {})
    argv, expected = bad_inputs[case]
    code, out, err = run_cli(capsys, "--database-url", sqlite_url, *argv)
    assert code == 1, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in out + err
    for text in expected:
        assert text in err, err
    code, _, err = run_cli(capsys, "--database-url", sqlite_url, "--debug", *argv)
    assert code == 1 and "Traceback (most recent call last)" in err


def test_replay_as_a_process(tmp_path: Path) -> None:
    ok = run_process("replay", str(GOLDEN / "arith.json"), "--app", "tests.wf_samples")
    assert ok.returncode == 0 and ok.stdout.startswith("OK  run golden-arith"), ok.stderr
    diverged = run_process("replay", str(GOLDEN / "broken_arith_renamed_step.json"), "--app", "tests.wf_samples")
    assert diverged.returncode == 1 and "DIVERGED" in diverged.stdout and diverged.stderr == ""
    (tmp_path / "bad.json").write_text('{"format": "durable.history", "version": 3, "run": {}, "events": []}')
    bad = run_process("replay", str(tmp_path / "bad.json"), "--app", "tests.wf_samples")
    assert bad.returncode == 1 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert "newer Durable" in bad.stderr and "Traceback" not in bad.stderr


BREAKPOINT_APP = '''
import durable

@durable.step
async def add_one(x: int) -> int:
    return x + 1

@durable.workflow
async def inspected(ctx, x: int) -> int:
    y = await add_one(x)
    breakpoint()
    return y * 2
'''


def test_real_pdb_sessions_during_a_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pdb itself, driven through stdin: --break-at, and breakpoint() written in the workflow."""
    pdb_session = subprocess.run(
        [sys.executable, "-m", "durable", "replay", str(GOLDEN / "arith.json"), "--app", "tests.wf_samples",
         "--break-at", "multiply"], input="p s, x\nc\n", capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert pdb_session.returncode == 0, pdb_session.stderr
    assert "wf_samples.py(45)arith()" in pdb_session.stdout and "(Pdb) (5, 4)" in pdb_session.stdout
    assert "OK  run golden-arith" in pdb_session.stdout

    (tmp_path / "bp_app.py").write_text(BREAKPOINT_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONBREAKPOINT", "0")  # recording it: no debugger
    import bp_app

    events = record(bp_app.inspected, 20)
    durable.replay.write_history(tmp_path / "bp.json", [durable.replay.make_document(events)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONBREAKPOINT"}
    session = subprocess.run([sys.executable, "-m", "durable", "replay", "bp.json", "--app", "bp_app"],
                             input="p y\nc\n", capture_output=True, text=True, cwd=tmp_path, timeout=60, env=env)
    assert session.returncode == 0, session.stdout + session.stderr
    # stopped in the workflow, on the line after breakpoint(), as breakpoint() always does
    assert "bp_app.py(12)inspected()" in session.stdout and "(Pdb) 21" in session.stdout
    assert "OK  run" in session.stdout and "returned 42" in session.stdout


# -- --follow: a live run, as a user watches it ---------------------------------------------------------------------

FOLLOW_APP = '''
import durable

@durable.step
async def tick(n: int) -> int:
    return n

@durable.workflow
async def ticking(ctx, n: int) -> int:
    total = 0
    for i in range(n):
        total += await tick(i)
        await ctx.sleep(0.3)
    return total
'''


@pytest.fixture
def follow_worker(tmp_path: Path, sqlite_url: str) -> Iterator[subprocess.Popen[str]]:
    (tmp_path / "follow_app.py").write_text(FOLLOW_APP)
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "durable", "--database-url", sqlite_url, "worker",
                                 "follow_app"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    deadline = time.monotonic() + 20
    while "serving" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, log.read_text()
    yield proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)


def test_follow_streams_the_events_of_a_live_run(
    follow_worker: subprocess.Popen[str], sqlite_url: str, tmp_path: Path
) -> None:
    started = run_process("--database-url", sqlite_url, "start", "ticking", "--input", "8", "--id", "live",
                          cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    argv = [sys.executable, "-m", "durable", "--database-url", sqlite_url, "history", "live", "--follow"]
    with subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as follow:
        assert follow.stdout is not None and follow.stderr is not None
        first_line = follow.stdout.readline()
        assert first_line.startswith("Run live  ticking")
        assert "completed" not in first_line  # it was followed while running
        out = follow.stdout.read()  # (not communicate(): it would skip what readline() buffered)
        assert follow.wait(timeout=30) == 0, follow.stderr.read()
    rows = [line.split() for line in out.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))  # every event once, in order
    assert rows[-1][2] == "run_completed" and "result 28" in out
    assert out.rstrip().endswith("run live ended: completed")
    history = asyncio.run(_read(sqlite_url, "live"))
    assert len(rows) == len(history)

    jsonl = run_process("--database-url", sqlite_url, "history", "live", "--json", "--follow", cwd=tmp_path)
    entries = [msgspec.json.decode(line, type=RecordedEvent) for line in jsonl.stdout.splitlines()]
    assert entries == history


async def _read(url: str, run_id: str) -> list[RecordedEvent]:
    store = open_store(url)
    await store.open()
    try:
        return await store.read_history(run_id)
    finally:
        await store.close()


# -- PostgreSQL: exported from the database, replayed identically from the file --------------------------------------


def test_a_history_exported_from_postgres_replays_identically_from_the_file(
    capsys: pytest.CaptureFixture[str], postgres_url: str, tmp_path: Path
) -> None:
    runs = {
        "pg-arith": record_into(postgres_url, wf.arith, 3, run_id="pg-arith"),
        "pg-values": record_into(postgres_url, wf.values, run_id="pg-values"),
        "pg-timers": record_into(postgres_url, wf.asyncio_timers, run_id="pg-timers"),
        "pg-catches": record_into(postgres_url, wf.catches, "no", run_id="pg-catches"),
    }
    out_dir = tmp_path / "exported"
    code, _, err = run_cli(capsys, "--database-url", postgres_url, "history", "export", *runs, "-o", f"{out_dir}/")
    assert code == 0 and "exported 4 runs" in err, err
    for run_id, events in runs.items():
        document = durable.replay.load_history(out_dir / f"{run_id}.json")
        assert document.events == events  # seq, time (to the microsecond) and payload bytes
        from_db = durable.replay.replay(None, events)
        from_file = durable.replay.replay(None, document)
        assert from_db.ok and from_file.ok
        assert (from_file.commands, from_file.outcome, from_file.events) == (
            from_db.commands, from_db.outcome, from_db.events)
    code, out, err = run_cli(capsys, "replay", str(out_dir), "--app", "tests.wf_samples")
    assert code == 0 and "4 runs replayed: 4 OK, 0 not" in out, err
    code, out, err = run_cli(capsys, "--database-url", postgres_url, "replay", "pg-values", "--app",
                             "tests.wf_samples")
    assert code == 0 and out.startswith("OK  run pg-values"), err

    # and into another database (SQLite here) for reproducing elsewhere
    other = f"sqlite:///{tmp_path / 'laptop.db'}"
    code, _, err = run_cli(capsys, "--database-url", other, "history", "import", str(out_dir))
    assert code == 0 and "4 run(s) imported" in err, err
    imported = asyncio.run(_read(other, "pg-arith"))
    assert [r.event for r in imported] == [r.event for r in runs["pg-arith"]]
    assert [r.at for r in imported[1:]] == [r.at for r in runs["pg-arith"][1:]]
    code, out, err = run_cli(capsys, "--database-url", other, "show", "pg-catches")
    assert code == 0 and "status    completed" in out and "NonRetryableError" in out, err


def test_import_into_postgres_then_show_and_replay_from_it(
    capsys: pytest.CaptureFixture[str], postgres_url: str, tmp_path: Path
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    for path in GOLDEN.glob("*.json"):
        if not path.stem.startswith("broken_"):
            shutil.copy(path, good)
    code, out, err = run_cli(capsys, "--database-url", postgres_url, "history", "import", str(good))
    assert code == 0 and "4 run(s) imported" in err, err
    code, out, err = run_cli(capsys, "--database-url", postgres_url, "show", "golden-retrying")
    assert code == 0 and "status    completed" in out and "step_failed" in out, err
    code, out, err = run_cli(capsys, "--database-url", postgres_url, "replay", "golden-arith", "--app",
                             "tests.wf_samples")
    assert code == 0 and out.startswith("OK  run golden-arith"), err
    # the broken golden history has the same run id as arith.json, and other events: refused, nothing written
    code, _, err = run_cli(capsys, "--database-url", postgres_url, "history", "import",
                           str(GOLDEN / "broken_arith_renamed_step.json"))
    assert code == 1 and "exists already in" in err and "another history" in err
