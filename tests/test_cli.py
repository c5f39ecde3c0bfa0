"""The ``durable`` command line as a user sees it: in-process through ``main([...])`` and as real processes
(``python -m durable``), against a SQLite file of the test's own (and once against PostgreSQL)."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from durable import _format
from durable._cli import main

from .conftest import _admin, run_async, sqlite_url_with_schema, with_database

ORDER = {"order_id": "T-1", "items": ["book", "mug"], "amount": 9.5}

SLOW_APP = '''
import durable

@durable.workflow
async def waits_an_hour(ctx) -> str:
    await ctx.sleep(3600)
    return "woke up"
'''


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No database URL or colour settings leak in from the developer's shell; sys.path is restored."""
    for name in ("DURABLE_DATABASE_URL", "FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url_with_schema(tmp_path / "x.db")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``durable ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*argv: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m durable ARGV`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "durable", *argv], capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env=_child_env(),
    )


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DURABLE_DATABASE_URL", "FORCE_COLOR")}


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def worker(url: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts ``python -m durable worker MODULES`` on the test's database; each must exit 0 on SIGTERM."""
    started: list[tuple[subprocess.Popen[str], Path]] = []

    def start(*modules: str, database_url: str = url) -> subprocess.Popen[str]:
        log = tmp_path / f"worker{len(started)}.log"
        argv = [sys.executable, "-m", "durable", "--database-url", database_url, "worker", *modules,
                "--lease-seconds", "3"]
        with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                                    env=_child_env())
        started.append((proc, log))
        wait_until(lambda: "serving" in log.read_text() or proc.poll() is not None, what="the worker to start")
        assert proc.poll() is None, log.read_text()
        return proc

    yield start
    for proc, log in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        text = log.read_text()
        assert proc.returncode == 0, text
        assert "SIGTERM" in text and "stopped" in text and "Traceback" not in text, text


def show_json(capsys: pytest.CaptureFixture[str], url: str, run_id: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "--database-url", url, "show", run_id, "--json")
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


# -- demo ---------------------------------------------------------------------------------------------------


def test_demo_runs_the_order_workflow_and_prints_its_history(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = run_cli(capsys, "--database-url", url, "demo")
    assert code == 0, err
    assert "Traceback" not in out + err
    # progress, as it happened: the first charge fails and is retried, then the sleep and the parallel steps
    assert "retry  charge_payment  attempt 1 failed" in out
    assert "PaymentGatewayTimeout" in out
    assert "ok     charge_payment  attempt 2" in out
    assert "sleep  1s" in out
    assert out.count("ok     ship_item") == 3
    # the final state and the event history table
    assert "status    completed" in out
    assert '"charge":"ch_a-1001_4250"' in out
    history = out.split("Event history (", 1)[1]
    assert "step_failed     #2 charge_payment   attempt 1" in history and "retry at" in history
    assert "step_completed  #2 charge_payment   attempt 2" in history
    for kind in ("run_started", "value_recorded", "timer_started", "timer_fired", "run_completed"):
        assert kind in history
    assert "What to try next" in out and "durable worker durable._demo" in out


def test_demo_as_a_process_twice_on_one_database(tmp_path: Path, url: str) -> None:
    first = run_process("--database-url", url, "demo")
    assert first.returncode == 0, first.stderr
    second = run_process("--database-url", url, "demo")  # a fresh workflow id each time: it runs again
    assert second.returncode == 0, second.stderr
    ids = [line.split()[-1] for p in (first, second) for line in p.stdout.splitlines() if "run id" in line]
    assert len(set(ids)) == 2
    listing = run_process("--database-url", url, "list")
    assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == ids[::-1]  # newest first


def test_demo_keeps_what_its_steps_logged_without_printing_it(url: str) -> None:
    """The demo's steps log at INFO: the demo prints warnings only, yet `durable logs` shows every line, per
    attempt, and the workflow's own ctx.logger line once."""
    demo = run_process("--database-url", url, "demo")
    assert demo.returncode == 0, demo.stderr
    assert "charging" not in demo.stdout + demo.stderr
    run_id = next(line.split()[-1] for line in demo.stdout.splitlines() if "run id" in line)
    logs = run_process("--database-url", url, "logs", run_id)
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    charging = [" ".join(line.split()[3:7]) for line in lines if "charging A-1001" in line]
    assert charging == ["#2 charge_payment attempt 1", "#2 charge_payment attempt 2"]
    shipping = [line.split()[3] for line in lines if "handed to the carrier" in line]
    assert sorted(shipping) == ["#5", "#6", "#7"]  # three calls of ship_item, told apart
    assert sum("order A-1001: 3 items" in line for line in lines) == 1
    assert sum("handed to the carrier" in line for line in lines) == 3
    shown = run_process("--database-url", url, "show", run_id).stdout
    logs_section = shown.split("Logs (7 lines", 1)[1].split("Event history", 1)[0]
    assert "#2 charge_payment attempt 2 demo.shop: charging A-1001" in logs_section


# -- start / show / list / cancel against a worker process --------------------------------------------------


def test_start_show_list_cancel_with_a_worker_process(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path, worker: Callable[..., Any]
) -> None:
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    worker("durable._demo", "slow_app")  # slow_app is importable from the worker's directory, as with python -m

    # start from another process that has not imported the workflow: the worker's registration tells it exists
    started = run_process("--database-url", url, "start", "process_order", "--input", json.dumps(ORDER))
    assert started.returncode == 0, started.stderr
    first_id = started.stdout.strip()
    assert f"durable show {first_id}" in started.stderr

    # start in-process and wait for the result
    code, out, err = run_cli(capsys, "--database-url", url, "start", "process_order", "--input",
                             json.dumps({**ORDER, "order_id": "T-2"}), "--wait", "--timeout", "30")
    assert code == 0, err
    second_id, result = out.splitlines()
    assert json.loads(result)["shipments"] == ["T-2/book: shipped", "T-2/mug: shipped"]

    wait_until(lambda: show_json(capsys, url, first_id)["execution"]["status"] == "completed", what="run 1")
    document = show_json(capsys, url, first_id)
    assert document["execution"]["result"]["charge"] == "ch_t-1_950"
    assert [s["attempt"] for s in document["execution"]["steps"] if s["name"] == "charge_payment"] == [2]
    assert [e["event"]["type"] for e in document["history"]][:5] == [
        "run_started", "step_scheduled", "step_completed", "step_scheduled", "step_failed"
    ]

    code, out, err = run_cli(capsys, "--database-url", url, "show", first_id)
    assert code == 0, err
    assert f"Run {first_id}" in out and "status    completed" in out
    assert "charge_payment   completed  2" in out  # the steps table: name, status, attempt
    assert "step_failed" in out and "PaymentGatewayTimeout" in out

    # cancel a run that sleeps for an hour (released by the worker, so the cancel is applied at its pickup)
    code, out, err = run_cli(capsys, "--database-url", url, "start", "waits_an_hour", "--id", "sleeper")
    assert (code, out.strip()) == (0, "sleeper"), err
    wait_until(lambda: show_json(capsys, url, "sleeper")["execution"]["status"] == "waiting", what="the sleep")
    code, out, err = run_cli(capsys, "--database-url", url, "cancel", "sleeper", "--reason", "changed my mind")
    assert code == 0 and "sleeper" in out, err
    wait_until(lambda: show_json(capsys, url, "sleeper")["execution"]["status"] == "cancelled", what="cancel")
    assert show_json(capsys, url, "sleeper")["history"][-1]["event"] == {
        "type": "run_cancelled", "reason": "changed my mind"
    }

    code, out, err = run_cli(capsys, "--database-url", url, "list")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("sleeper", "waits_an_hour", "cancelled"),
        (second_id, "process_order", "completed"),
        (first_id, "process_order", "completed"),
    ]
    code, out, _ = run_cli(capsys, "--database-url", url, "list", "--status", "cancelled", "--limit", "5")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["sleeper"]

    # starting with an existing id starts nothing and says so
    code, out, err = run_cli(capsys, "--database-url", url, "start", "waits_an_hour", "--id", "sleeper")
    assert code == 0 and out.strip() == "sleeper" and "exists already" in err


def test_start_show_list_on_postgres(
    capsys: pytest.CaptureFixture[str], postgres_url: str, worker: Callable[..., Any]
) -> None:
    code, out, err = run_cli(capsys, "--database-url", postgres_url, "db", "upgrade")
    assert code == 0 and "already up to date" in out, err
    worker("durable._demo", database_url=postgres_url)
    code, out, err = run_cli(capsys, "--database-url", postgres_url, "start", "process_order", "--input",
                             json.dumps(ORDER), "--wait", "--timeout", "30")
    assert code == 0, err
    run_id, result = out.splitlines()
    assert json.loads(result)["charge"] == "ch_t-1_950"
    code, out, err = run_cli(capsys, "--database-url", postgres_url, "show", run_id)
    assert code == 0 and "status    completed" in out and "step_failed" in out, err
    code, out, err = run_cli(capsys, "--database-url", postgres_url, "list", "--workflow", "process_order")
    assert code == 0 and out.splitlines()[1].split()[:3] == [run_id, "process_order", "completed"], err


def test_db_upgrade_creates_the_schema_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code, out, err = run_cli(capsys, "--database-url", url, "db", "upgrade")
    assert code == 0 and "applied migration(s) 1" in out, err
    code, out, err = run_cli(capsys, "db", "upgrade", "--database-url", url)  # global options go anywhere
    assert code == 0 and "already up to date" in out, err


LOOKING_COMMANDS = [
    ["list"], ["show", "r-1"], ["history", "r-1"], ["logs", "r-1"], ["stats"], ["cleanup", "--completed-older-than",
    "30d"], ["cancel", "r-1"], ["send-event", "r-1", "paid"], ["inputs", "list"], ["queues", "list"],
]


@pytest.mark.parametrize("argv", LOOKING_COMMANDS, ids=lambda argv: " ".join(argv[:2]))
def test_commands_that_use_runs_refuse_a_database_without_them_and_leave_it_as_it_was(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    missing = tmp_path / "typo.db"
    code, out, err = run_cli(capsys, "--database-url", f"sqlite:///{missing}", *argv)
    assert (code, out) == (1, "")
    assert f"there is no SQLite database {missing}" in err and "DURABLE_DATABASE_URL" in err
    assert not missing.exists()  # not created empty on the way
    other = tmp_path / "someone_elses.db"
    sqlite3.connect(other).execute("CREATE TABLE notes (body TEXT)").connection.commit()
    code, out, err = run_cli(capsys, "--database-url", f"sqlite:///{other}", *argv)
    assert (code, out) == (1, "")
    assert "has no Durable schema: is it the database your workers use?" in err
    tables = {row[0] for row in sqlite3.connect(other).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"notes"}


def test_a_postgres_database_without_the_schema_is_refused_not_filled(
    capsys: pytest.CaptureFixture[str], postgres_server_url: str
) -> None:
    name = f"durable_empty_{uuid.uuid4().hex[:8]}"
    empty = with_database(postgres_server_url, name)
    run_async(lambda: _admin(postgres_server_url, f"CREATE DATABASE {name}"))
    try:
        for argv in (["list"], ["logs", "r-1"], ["stats"], ["watch", "r-1"]):
            code, out, err = run_cli(capsys, "--database-url", empty, *argv)
            assert (code, out) == (1, "") and "has no Durable schema" in err, err
        assert run_async(lambda: _tables(empty)) == []
        code, out, err = run_cli(capsys, "--database-url", empty, "db", "upgrade")  # what the message suggests
        assert code == 0, err
        code, out, err = run_cli(capsys, "--database-url", empty, "list")
        assert code == 0, err
    finally:
        run_async(lambda: _admin(postgres_server_url, f"DROP DATABASE {name} WITH (FORCE)"))


async def _tables(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [row[0] for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    finally:
        await conn.close()


def test_failed_run_shows_its_error_and_the_step_traceback(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path, worker: Callable[..., Any]
) -> None:
    (tmp_path / "failing_app.py").write_text(textwrap.dedent('''
        import durable

        @durable.step(retry=durable.Retry(max_attempts=2, backoff="constant", base=0.1))
        def explode(x: int) -> int:
            raise ValueError(f"boom {x}")

        @durable.workflow
        async def fails(ctx, x: int) -> int:
            return await explode(x)
    '''))
    worker("failing_app")
    code, out, err = run_cli(capsys, "--database-url", url, "start", "fails", "--args", "[7]", "--wait",
                             "--timeout", "30")
    assert code == 1
    assert "failed after 2 attempts: ValueError: boom 7" in err and "durable show" in err
    assert "Traceback" not in err  # a failed run is reported in a line; `show` has the tracebacks
    run_id = out.strip()
    code, out, err = run_cli(capsys, "--database-url", url, "show", run_id)
    assert code == 0, err
    assert "status    failed" in out and "traceback of step #1 explode" in out
    assert 'raise ValueError(f"boom {x}")' in out


# -- bad input: one paragraph on stderr, no traceback, non-zero exit ----------------------------------------

BAD_INPUTS = {
    "invalid json": (["start", "process_order", "--input", "{bad"], ["--input is not valid JSON", "'{bad'"]),
    "args not a list": (["start", "process_order", "--args", "5"], ["--args must be a JSON list"]),
    "unknown workflow": (["start", "no_such_workflow"], ["'no_such_workflow'", "durable worker"]),
    "unknown run (show)": (["show", "no-such-run"], ["no run with id 'no-such-run'", "durable list"]),
    "unknown run (cancel)": (["cancel", "no-such-run"], ["no run with id 'no-such-run'", "durable list"]),
    "module not found": (["worker", "no_such_module_xyz"], ["cannot import module 'no_such_module_xyz'"]),
    "module that raises": (["worker", "broken_app"], ["cannot import module 'broken_app'", "RuntimeError: nope"]),
    "bad url": (["--database-url", "mysql://x/y", "list"], ["unsupported database URL 'mysql://x/y'"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_paragraph_without_traceback(
    case: str, capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('nope')\n")
    monkeypatch.chdir(tmp_path)
    argv, expected = BAD_INPUTS[case]
    if argv[0] != "--database-url":
        argv = ["--database-url", url, *argv]
    code, out, err = run_cli(capsys, *argv)
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one paragraph, one line
    assert "Traceback" not in out + err
    for text in expected:
        assert text in err


def test_worker_of_a_module_without_workflows_says_so(url: str) -> None:
    process = run_process("--database-url", url, "worker", "json")  # a process of its own: a fresh registry
    assert process.returncode == 2
    assert process.stderr == (
        "error: no @durable.workflow was registered by importing json: name the modules that define your "
        "workflows\n"
    )


def test_database_down_names_the_url_and_how_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    down = "postgresql://127.0.0.1:1/x"
    for argv in (["list"], ["show", "some-id"], ["start", "process_order"], ["worker", "durable._demo"]):
        code, out, err = run_cli(capsys, "--database-url", down, *argv)
        assert code == 1, argv
        assert err.startswith(f"error: cannot connect to PostgreSQL at {down}") and err.count("\n") == 1, err
        assert "docker run" in err and "Traceback" not in out + err
    process = run_process("--database-url", down, "list")  # and the same from a real process, nothing else
    assert process.returncode == 1 and process.stdout == ""
    assert process.stderr.startswith("error: cannot connect") and process.stderr.count("\n") == 1, process.stderr


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, _, err = run_cli(capsys, "--database-url", url, "--debug", "show", "no-such-run")
    assert code == 1
    assert "Traceback" in err and "RunNotFound" in err and err.rstrip().endswith("`durable list`")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--limit", "0"]) == 2
    assert "between 1 and 1000" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


# -- formatting ---------------------------------------------------------------------------------------------


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    assert _format.Style.for_stream(Terminal()).status("failed") == "\x1b[31mfailed\x1b[0m"  # type: ignore[arg-type]
    assert _format.Style.for_stream(io.StringIO()).enabled is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert _format.Style.for_stream(Terminal()).status("failed") == "failed"  # type: ignore[arg-type]


def test_tables_line_up_with_colour() -> None:
    style = _format.Style(True)
    text = _format.table(["a", "b"], [[("failed", "red"), "x"], ["ok", "yy"]], style)
    plain = [line.replace("\x1b[31m", "").replace("\x1b[2m", "").replace("\x1b[0m", "") for line in text.splitlines()]
    assert plain == ["  a       b", "  failed  x", "  ok      yy"]
