"""``durable send-event``, ``durable inputs list|provide`` and what ``durable show``/``list`` say about runs that
wait on the world, as a user sees them: in-process ``main([...])`` against a SQLite file of the test's own (and
once PostgreSQL), with the workflows of ``tests/wf_world.py`` run by a real worker process. Also the golden
histories of waiting on the world (``tests/golden/world/``), replayed against that code."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import durable
from durable._cli_world import spec_summary
from history import MemoryStore

from .conftest import sqlite_url_with_schema
from .test_cli import _child_env, run_cli, wait_until

ROOT = Path(__file__).parent.parent
GOLDEN_WORLD = Path(__file__).parent / "golden" / "world"
"""Histories recorded once (not regenerated: they pin what older code wrote) by running the workflows of
``wf_world`` and ``received_early`` below on a ``history.MemoryStore`` (events sent before a worker first ran the
run, where a file's name says so) and exporting them with ``durable.replay.make_document``/``write_history``, as
``durable history export`` does. ``broken_event_renamed.json`` is ``event_before_wait_filtered.json`` with the
waited event renamed (and its own run id, so that the folder imports into one database): it must diverge.
Kept apart from ``tests/golden/``, whose test replays only completed runs of ``wf_samples``."""

StartWorker = Callable[..., subprocess.Popen[str]]


@durable.workflow(name="golden_received_early")
async def received_early(ctx: durable.WorkflowContext, order_id: str) -> list[Any]:
    """Recorded in tests/golden/world/received_before_wait.json: both "paid" events reach the history before
    the code waits for "paid"; the filter passes over the other order's."""
    hello = await ctx.wait_for_event("hello")
    paid = await ctx.wait_for_event("paid", filter=lambda e: e["order_id"] == order_id)
    return [hello, paid["amount"]]


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No database URL or colour settings leak in from the developer's shell; sys.path is restored."""
    for name in ("DURABLE_DATABASE_URL", "FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url_with_schema(tmp_path / "world.db")


@pytest.fixture
def worker(url: str, tmp_path: Path) -> Iterator[StartWorker]:
    """Starts ``python -m durable worker tests.wf_world`` from the project's root (so ``tests.wf_world``
    imports); stop it early with ``stop(proc)``. Each must exit 0 on SIGTERM, without a traceback."""
    started: list[tuple[subprocess.Popen[str], Path]] = []

    def start(database_url: str = url) -> subprocess.Popen[str]:
        log = tmp_path / f"worker{len(started)}.log"
        argv = [sys.executable, "-m", "durable", "--database-url", database_url, "worker", "tests.wf_world",
                "--lease-seconds", "3"]
        with log.open("w") as stderr:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                                    env=_child_env())
        started.append((proc, log))
        wait_until(lambda: "serving" in log.read_text() or proc.poll() is not None, what="the worker to start")
        assert proc.poll() is None, log.read_text()
        return proc

    yield start
    for proc, log in started:
        stop(proc)
        text = log.read_text()
        assert proc.returncode == 0 and "Traceback" not in text, text


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def cli(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    return run_cli(capsys, "--database-url", url, *argv)


def show(capsys: pytest.CaptureFixture[str], url: str, run_id: str) -> dict[str, Any]:
    code, out, err = cli(capsys, url, "show", run_id, "--json")
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def status(capsys: pytest.CaptureFixture[str], url: str, run_id: str) -> str:
    return str(show(capsys, url, run_id)["execution"]["status"])


def start(capsys: pytest.CaptureFixture[str], url: str, workflow: str, run_id: str, *args: Any) -> None:
    code, out, err = cli(capsys, url, "start", workflow, "--args", json.dumps(list(args)), "--id", run_id, "--app",
                         "tests.wf_world")  # known even before a worker registers it
    assert (code, out.strip()) == (0, run_id), err


def one_line_error(code: int, err: str) -> str:
    """What a refusal must look like: exit 1, one ``error:`` line on stderr."""
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, (code, err)
    return err


# -- send-event -------------------------------------------------------------------------------------------------


def test_send_event_completes_a_waiting_run(capsys: pytest.CaptureFixture[str], url: str, worker: StartWorker) -> None:
    worker()
    start(capsys, url, "waits_for_payment", "pay-1", "o-1", 3600)
    wait_until(lambda: status(capsys, url, "pay-1") == "waiting", what="the run to wait")
    code, out, err = cli(capsys, url, "show", "pay-1")
    assert code == 0 and "wakes at  " in out, err  # the wait's timeout, an hour away
    assert "event_wait_started  #1 payment_confirmed  wait for event 'payment_confirmed' until" in out

    code, out, err = cli(capsys, url, "send-event", "pay-1", "payment_confirmed", "--data",
                         '{"order_id": "other", "amount": 1}')  # the filter passes over it
    assert code == 0 and "event 'payment_confirmed' sent to run pay-1" in out, err
    code, out, err = cli(capsys, url, "send-event", "pay-1", "payment_confirmed", "--data",
                         '{"order_id": "o-1", "amount": 42}')
    assert code == 0, err
    wait_until(lambda: status(capsys, url, "pay-1") == "completed", what="the event to complete the run")
    document = show(capsys, url, "pay-1")
    assert document["execution"]["result"] == {"paid": 42}
    received = [e["event"] for e in document["history"] if e["event"]["type"] == "message_received"]
    assert [(e["name"], e["payload"]["order_id"]) for e in received] == [
        ("payment_confirmed", "other"), ("payment_confirmed", "o-1")
    ]
    code, out, err = cli(capsys, url, "show", "pay-1")
    assert "message_received" in out and "event 'payment_confirmed' = {\"order_id\":\"o-1\",\"amount\":42}" in out

    err = one_line_error(*cli(capsys, url, "send-event", "pay-1", "payment_confirmed")[::2])
    assert err == "error: run 'pay-1' has completed; it takes no more events or input\n"
    err = one_line_error(*cli(capsys, url, "send-event", "nope", "payment_confirmed")[::2])
    assert f"no run with id 'nope' in {url}" in err and "durable list" in err


def test_send_event_before_the_run_waits_is_kept(
    capsys: pytest.CaptureFixture[str], url: str, worker: StartWorker
) -> None:
    start(capsys, url, "waits_for_payment", "pay-2", "o-2", 3600)  # no worker yet: the run has not run at all
    code, _, err = cli(capsys, url, "send-event", "pay-2", "payment_confirmed", "--data",
                       '{"order_id": "o-2", "amount": 5}')
    assert code == 0, err
    worker()
    wait_until(lambda: status(capsys, url, "pay-2") == "completed", what="the run to take the early event")
    assert show(capsys, url, "pay-2")["execution"]["result"] == {"paid": 5}


# -- inputs -----------------------------------------------------------------------------------------------------

LAPTOP_SPEC = {
    "type": "form",
    "fields": [
        {"name": "laptop", "type": "select", "options": ["mac", "thinkpad"], "required": True},
        {"name": "notes", "type": "text", "max_length": 10},
    ],
}


def test_inputs_are_listed_with_their_schema_and_validated_field_by_field(
    capsys: pytest.CaptureFixture[str], url: str, worker: StartWorker
) -> None:
    worker()
    start(capsys, url, "approval", "appr-1", 3600)
    start(capsys, url, "laptop_form", "form-1")
    wait_until(lambda: cli(capsys, url, "inputs", "list")[1].count("\n") == 3, what="both inputs to be asked")

    code, out, err = cli(capsys, url, "inputs", "list")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["run", "key", "prompt", "expects", "asked", "timeout"]
    assert rows[0].split()[:2] == ["appr-1", "manager_approval"] and "Approve order?" in rows[0]
    assert "one of approve|reject" in rows[0]
    assert rows[0].split()[-2:] != ["none"]  # the approval times out after an hour: its deadline is shown
    assert rows[1].split()[:2] == ["form-1", "laptop"] and rows[1].endswith("none")
    assert "form: laptop* (mac|thinkpad), notes (text, max 10)" in rows[1]
    assert "durable inputs provide appr-1 manager_approval --value JSON" in err

    code, out, err = cli(capsys, url, "inputs", "list", "--run", "form-1", "--json")
    assert code == 0, err
    (listed,) = json.loads(out)
    assert {k: listed[k] for k in ("run_id", "workflow", "key", "prompt", "spec", "timeout_at")} == {
        "run_id": "form-1", "workflow": "laptop_form", "key": "laptop", "prompt": "Which laptop?",
        "spec": LAPTOP_SPEC, "timeout_at": None,
    }
    code, out, _ = cli(capsys, url, "inputs", "list", "--workflow", "approval", "--json")
    assert [(i["run_id"], i["spec"]) for i in json.loads(out)] == [
        ("appr-1", {"type": "single_choice", "choices": ["approve", "reject"]})
    ]

    # a wrong answer: every problem on a line of its own, exit 1, and the input stays pending
    code, out, err = cli(capsys, url, "inputs", "provide", "form-1", "laptop", "--value",
                         json.dumps({"laptop": "amiga", "notes": "x" * 20, "color": "red"}))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "error: input 'laptop' of run 'form-1' was not accepted:",
        "  color: is not a field of this form",
        "  laptop: must be one of ['mac', 'thinkpad'], got 'amiga'",
        "  notes: must be at most 10 characters, got 20",
        "(not applied: the input is still pending; its schema: `durable inputs list --run form-1 --json`)",
    ]
    code, out, err = cli(capsys, url, "inputs", "provide", "appr-1", "manager_approval", "--value", '"maybe"')
    assert code == 1 and "  value: must be one of ['approve', 'reject'], got 'maybe'" in err.splitlines()
    code, out, _ = cli(capsys, url, "inputs", "list", "--json")
    assert [i["key"] for i in json.loads(out)] == ["manager_approval", "laptop"]
    assert show(capsys, url, "form-1")["pending_inputs"][0]["spec"] == LAPTOP_SPEC
    code, out, _ = cli(capsys, url, "show", "form-1")
    assert "wakes at  when an event, input or child's outcome it waits for arrives" in out  # no timeout
    assert "Waiting for input (1)" in out and "durable inputs provide form-1 laptop --value JSON" in out
    assert "form: laptop* (mac|thinkpad), notes (text, max 10)" in out

    # a right one completes the run; its input is no longer listed
    code, out, err = cli(capsys, url, "inputs", "provide", "form-1", "laptop", "--value", '{"laptop": "mac"}')
    assert code == 0 and out == 'input \'laptop\' of run form-1 provided: {"laptop":"mac"}\n', err
    wait_until(lambda: status(capsys, url, "form-1") == "completed", what="the answer to complete the run")
    assert show(capsys, url, "form-1")["execution"]["result"] == {"laptop": "mac"}
    code, out, _ = cli(capsys, url, "inputs", "list", "--run", "form-1")
    assert out == "no pending inputs of run form-1\n"
    err = one_line_error(*cli(capsys, url, "inputs", "provide", "form-1", "laptop", "--value", "{}")[::2])
    assert err == "error: run 'form-1' has completed; it takes no more events or input\n"


def test_an_input_provided_twice_keeps_the_first_answer(
    capsys: pytest.CaptureFixture[str], url: str, worker: StartWorker
) -> None:
    first = worker()
    start(capsys, url, "approval", "appr-2", 3600)
    wait_until(lambda: "manager_approval" in cli(capsys, url, "inputs", "list")[1], what="the input")
    stop(first)  # both answers arrive while no worker runs: the second cannot race the run's end

    code, out, err = cli(capsys, url, "inputs", "provide", "appr-2", "manager_approval", "--value", '"reject"')
    assert code == 0 and "provided: \"reject\"" in out, err
    err = one_line_error(*cli(capsys, url, "inputs", "provide", "appr-2", "manager_approval", "--value",
                              '"approve"')[::2])
    assert err == "error: input 'manager_approval' of run 'appr-2' was provided already: this answer was not applied\n"
    err = one_line_error(*cli(capsys, url, "inputs", "provide", "appr-2", "director_approval", "--value", "1")[::2])
    assert "run 'appr-2' does not wait for an input named 'director_approval'" in err
    err = one_line_error(*cli(capsys, url, "inputs", "provide", "nope", "manager_approval", "--value", "1")[::2])
    assert f"no run with id 'nope' in {url}" in err

    worker()
    wait_until(lambda: status(capsys, url, "appr-2") == "completed", what="the run to take the first answer")
    execution = show(capsys, url, "appr-2")["execution"]
    assert (execution["result"], execution["state"]) == ("reject", {"decision": "reject"})


# -- show and list: children, state, continue-as-new ------------------------------------------------------------


def test_show_lists_children_state_and_the_continue_as_new_chain(
    capsys: pytest.CaptureFixture[str], url: str, worker: StartWorker
) -> None:
    worker()
    code, out, err = cli(capsys, url, "start", "parent", "--id", "par", "--wait", "--timeout", "30")
    assert code == 0, err
    wait_until(lambda: all(c["status"] == "completed" or c["status"] == "failed"
                           for c in show(capsys, url, "par")["children"]), what="the children to finish")
    code, out, err = cli(capsys, url, "show", "par")
    assert code == 0, err
    children = out.split("Children (3)\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[:3] for line in children] == [
        ["id", "workflow", "status"],
        ["par-1", "child_adds", "completed"],
        ["par-2", "child_adds", "completed"],
        ["par-3", "child_fails", "failed"],
    ]
    assert "child_finished  #3 child  run par-3 failed: ValueError: the child broke" in out
    assert "child_started   #2 child  run par-2 of child_adds (not awaited)" in out
    document = show(capsys, url, "par")
    assert document["execution"]["children"] == ["par-1", "par-2", "par-3"]
    assert document["children"][2] == {"id": "par-3", "workflow": "child_fails", "status": "failed"}
    code, out, _ = cli(capsys, url, "show", "par-3")
    assert "  parent    par\n" in out and "status    failed" in out

    # continue-as-new: the result follows the chain; each run shows its neighbours
    code, out, err = cli(capsys, url, "start", "counter", "--args", "[0, 2]", "--id", "cnt", "--wait",
                         "--timeout", "30")
    assert (code, out.split()) == (0, ["cnt", "2"]), err
    code, out, _ = cli(capsys, url, "show", "cnt~1")
    assert "status    continued" in out
    assert "prev run  cnt  (this run continues it: continue-as-new)" in out
    assert "next run  cnt~2  (continued as new)" in out
    assert "run_continued" in out and "continued as run cnt~2, input [2,2]" in out
    code, out, err = cli(capsys, url, "list", "--status", "continued")
    assert code == 0, err
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [
        ["cnt~1", "counter", "continued"], ["cnt", "counter", "continued"]
    ]
    code, out, _ = cli(capsys, url, "list", "--workflow", "counter")
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["completed", "continued", "continued"]
    err = one_line_error(*cli(capsys, url, "send-event", "cnt", "tick")[::2])
    assert err == ("error: run 'cnt' has continued; it takes no more events or input; its chain goes on as run "
                   "cnt~2 (completed)\n")

    # published state, while the run waits and after
    start(capsys, url, "publishes_state", "st")
    wait_until(lambda: status(capsys, url, "st") == "waiting", what="the run to publish and wait")
    code, out, _ = cli(capsys, url, "show", "st")
    state = out.split("State (ctx.set_state)\n", 1)[1].split("\n\n", 1)[0]
    assert json.loads(state) == {"stage": "waiting", "progress": {"done": 1, "of": 2}}
    assert ["state_updated", "progress", "=", '{"done":1,"of":2}'] in [line.split()[2:] for line in out.splitlines()]
    assert show(capsys, url, "st")["pending_inputs"] == []


def test_show_and_cancel_a_run_that_cleans_up(
    capsys: pytest.CaptureFixture[str], url: str, worker: StartWorker
) -> None:
    worker()
    start(capsys, url, "cleans_up", "cl", "o-1")
    wait_until(lambda: status(capsys, url, "cl") == "waiting", what="the sleep")
    code, out, err = cli(capsys, url, "cancel", "cl", "--reason", "customer asked")
    assert code == 0, err
    wait_until(lambda: status(capsys, url, "cl") == "cancelled", what="the cancellation")
    code, out, _ = cli(capsys, url, "show", "cl")
    assert "cancel_requested" in out and "reason: customer asked" in out
    assert ["#2", "note", "completed"] in [line.split()[:3] for line in out.splitlines()]  # the cleanup step ran
    assert '-> "cleanup after: customer asked"' in out


# -- Postgres ---------------------------------------------------------------------------------------------------


def test_events_and_inputs_on_postgres(
    capsys: pytest.CaptureFixture[str], postgres_url: str, worker: StartWorker
) -> None:
    worker(postgres_url)
    start(capsys, postgres_url, "approval", "appr", 3600)
    start(capsys, postgres_url, "waits_for_payment", "pay", "o-1", 3600)
    wait_until(lambda: "manager_approval" in cli(capsys, postgres_url, "inputs", "list")[1], what="the input")
    code, out, _ = cli(capsys, postgres_url, "inputs", "provide", "appr", "manager_approval", "--value", '"no"')
    assert code == 1
    code, out, err = cli(capsys, postgres_url, "inputs", "provide", "appr", "manager_approval", "--value",
                         '"approve"')
    assert code == 0, err
    code, out, err = cli(capsys, postgres_url, "send-event", "pay", "payment_confirmed", "--data",
                         '{"order_id": "o-1", "amount": 3}')
    assert code == 0, err
    wait_until(lambda: status(capsys, postgres_url, "appr") == "completed", what="the approval")
    wait_until(lambda: status(capsys, postgres_url, "pay") == "completed", what="the payment")
    assert show(capsys, postgres_url, "pay")["execution"]["result"] == {"paid": 3}
    code, out, _ = cli(capsys, postgres_url, "show", "appr")
    assert '"decision": "approve"' in out


# -- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["send-event", "r", "e", "--data", "{bad"], "--data is not valid JSON"),
        (["inputs", "provide", "r", "k", "--value", "approve"], "A text is a JSON string: --value '\"approve\"'"),
        (["inputs", "list", "--limit", "0"], "between 1 and 1000"),
    ],
)
def test_malformed_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], url: str, argv: list[str], expected: str
) -> None:
    code, out, err = cli(capsys, url, *argv)
    assert code == 2 and expected in err and "Traceback" not in out + err


def test_inputs_list_of_nothing_or_of_an_unknown_run(capsys: pytest.CaptureFixture[str], url: str) -> None:
    assert cli(capsys, url, "inputs", "list")[1] == "no pending inputs\n"
    assert cli(capsys, url, "inputs", "list", "--json")[1] == "[]\n"
    err = one_line_error(*cli(capsys, url, "inputs", "list", "--run", "nope")[::2])
    assert "no run with id 'nope'" in err


def test_spec_summaries() -> None:
    assert spec_summary({"type": "text"}) == "text"
    assert spec_summary({"type": "text", "max_length": 500}) == "text (max 500 chars)"
    assert spec_summary({"type": "multi_choice", "choices": ["a", "b", 3]}) == "list of a|b|3"
    form = {"type": "form", "fields": [
        {"name": "qty", "type": "number", "required": True, "min": 1, "max": 10},
        {"name": "ok", "type": "boolean"},
        {"name": "price", "type": "number", "min": 0},
    ]}
    assert spec_summary(form) == "form: qty* (number 1..10), ok (boolean), price (number 0..)"


# -- golden histories of waiting on the world -------------------------------------------------------------------

def _golden_params() -> list[Any]:
    params = []
    for path in durable.replay.history_files(GOLDEN_WORLD):
        params.append(pytest.param(path, id=path.stem))
    return params


@pytest.mark.parametrize("path", _golden_params())
def test_golden_world_histories_replay(path: Path) -> None:
    from . import wf_world  # noqa: F401  (registers the workflows the histories were recorded with)

    results = durable.replay.check_histories(path)
    assert results
    if path.stem.startswith("broken_"):
        assert all(isinstance(r.divergence, durable.NonDeterminismError) for r in results), results
        return
    for result in results:
        assert result.ok, result.report()
        assert result.recorded_end is not None  # every golden run ended: the replay checked how


def test_golden_world_histories_cover_every_event_of_waiting() -> None:
    types = {rec.event.__struct_config__.tag for doc in durable.replay.load_histories(GOLDEN_WORLD)
             for rec in doc.events}
    assert {"event_wait_started", "input_requested", "message_received", "child_started", "child_finished",
            "state_updated", "cancel_requested", "run_cancelled", "run_failed", "run_continued"} <= types
    received_early = durable.replay.load_history(GOLDEN_WORLD / "received_before_wait.json").events
    kinds = [rec.event.__struct_config__.tag for rec in received_early]
    assert kinds.index("message_received") < kinds.index("event_wait_started", 2)  # arrived before its wait


def test_replay_command_on_the_golden_histories(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "replay", str(GOLDEN_WORLD / "children.jsonl"), "--app", "tests.wf_world")
    assert code == 0, out + err
    assert "4 runs replayed: 4 OK, 0 not" in out
    code, out, err = run_cli(capsys, "replay", str(GOLDEN_WORLD / "broken_event_renamed.json"), "--app",
                             "tests.wf_world")
    assert code == 1 and "DIVERGED" in out and "wf_world.py:38" in out


def test_divergence_report_names_the_event_that_changed() -> None:
    from . import wf_world  # noqa: F401

    (result,) = durable.replay.check_histories(GOLDEN_WORLD / "broken_event_renamed.json")
    assert "payment_received" in str(result.divergence) and "payment_confirmed" in str(result.divergence)


# -- engine bugs found while writing this (xfail until fixed) ----------------------------------------------------



@durable.workflow(name="cli_world_ticks_then_continues")
async def ticks_then_continues(ctx: durable.WorkflowContext, n: int, seen: list[int]) -> list[int]:
    seen = [*seen, await ctx.wait_for_event("tick")]
    if n < 2:
        ctx.continue_as_new(n + 1, seen)
    return seen


async def test_events_received_before_continue_as_new_reach_the_next_run() -> None:
    store = MemoryStore()
    async with durable.Engine(store=store, worker=False) as client:
        run = await client.start(ticks_then_continues, 0, [], workflow_id="ticks")
        for tick in range(3):  # all three are in the inbox when the first run first waits
            await client.send_event(run.id, "tick", tick)
        worker = durable.Worker(store, {ticks_then_continues.name: ticks_then_continues})
        task = asyncio.get_running_loop().create_task(worker.run())
        try:
            assert await run.result(timeout=2) == [0, 1, 2]
        finally:
            await worker.shutdown(1)
            await task
