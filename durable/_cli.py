"""The ``durable`` command line: ``worker``, ``start``, ``show``, ``list``, ``cancel``, ``db upgrade``, ``demo``,
(from ``_cli_history``) ``history`` and ``replay``, (from ``_cli_world``) ``send-event`` and ``inputs``, (from
``_cli_queues``) ``queues``, (from ``_cli_list``) ``list``, (from ``_cli_logs``) ``logs``, (from ``_cli_watch``)
``watch``, (from ``_cli_stats``) ``stats`` and (from ``_cli_cleanup``) ``cleanup``.

Every command returns an exit code from ``main``; bad input (an unknown workflow or run, invalid JSON, a
database that is down, a module that fails to import) is reported in one paragraph on stderr, and only
``--debug`` shows a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec

from history import DatabaseUnavailable, DurableError, RunNotFound, default_url, open_store

from . import _format
from ._definitions import registered_workflows
from ._engine import Engine
from ._worker import Worker
from .errors import ResultTimeout, WorkflowCancelled, WorkflowFailed

log = logging.getLogger("durable.cli")

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


class UsageError(Exception):
    """Bad input the user can fix; its message is printed as is (exit code 2)."""


# -- entry point --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``durable`` command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from . import _cli_history

    parser = build_parser()
    try:
        args = parser.parse_args(_cli_history.normalize_argv(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse exits on --help and on usage errors; we return the code instead
        return exc.code if isinstance(exc.code, int) else 2
    _configure_logging(args)
    command: Command = args.command
    try:
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`durable show RUN | head`): stop quietly, as `cat` does
        with contextlib.suppress(OSError, ValueError):  # else Python reports the pipe again when it flushes at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        return _report(exc, args)


def _report(exc: Exception, args: argparse.Namespace) -> int:
    """Print ``exc`` as one paragraph (with its traceback under ``--debug``); return the exit code."""
    if args.debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = _explain(exc, args)
    print(f"error: {message}", file=sys.stderr)
    return 2 if isinstance(exc, UsageError) else 1


def _explain(exc: Exception, args: argparse.Namespace) -> str:
    """The one-paragraph message for an error: our own errors already say what to do next."""
    if isinstance(exc, DatabaseUnavailable):
        return f"{exc}{_database_hint(args.database_url, str(exc))}"
    if isinstance(exc, (DurableError, UsageError)):
        return str(exc)
    hint = "" if args.debug else " (run again with --debug for the traceback)"
    return f"unexpected {type(exc).__name__}: {exc}{hint}"


def _database_hint(url: str, message: str) -> str:
    """How to get a database running, unless the store's message says it already."""
    if "DURABLE_DATABASE_URL" in message:  # the store's message says what to do already
        return ""
    if url.startswith(("postgresql:", "postgres:")):
        return (
            f". Is PostgreSQL running at {url}? Start one with `docker run -d -p 5432:5432 "
            "-e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`, or use the embedded SQLite default by unsetting "
            "DURABLE_DATABASE_URL"
        )
    return ". Check that the directory exists and is writable"


def _configure_logging(args: argparse.Namespace) -> None:
    """Log to stderr: INFO for the worker (what it serves, what it does), WARNING otherwise, DEBUG with --debug.

    The level is the stderr handler's; the root logger passes INFO and up, so that the INFO records of step
    bodies and ``ctx.logger`` reach log capture (``durable logs``) in any command that runs workflows (``demo``,
    ``worker``) without being printed by commands that show WARNING only.
    """
    level = logging.DEBUG if args.debug else (logging.INFO if args.command is cmd_worker else logging.WARNING)
    logging.basicConfig(level=min(level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)


# -- arguments ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command. The global options are accepted after the command too."""
    parser = argparse.ArgumentParser(
        prog="durable",
        description="Durable workflows: run workers, start and inspect runs. Try `durable demo` first.",
    )
    _global_options(parser, default_url(), False)
    common = _global_options(argparse.ArgumentParser(add_help=False), argparse.SUPPRESS, argparse.SUPPRESS)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add = functools.partial(sub.add_parser, parents=[common])
    # they import this module: hence here
    from . import _cli_cleanup, _cli_history, _cli_list, _cli_logs, _cli_queues, _cli_stats, _cli_watch, _cli_world

    _add_worker(add)
    _add_start(add)
    _add_show(add)
    _cli_list.add_commands(add)  # list, with its filters
    _add_cancel(add)
    db = add("db", help="database schema commands").add_subparsers(metavar="ACTION", required=True)
    upgrade = db.add_parser("upgrade", help="create or upgrade the schema", parents=[common])
    upgrade.set_defaults(command=cmd_db_upgrade)
    add("demo", help="run a sample workflow end to end and show its history").set_defaults(command=cmd_demo)
    _cli_history.add_commands(add, [common])  # history, history export/import, replay
    _cli_world.add_commands(add, [common])  # send-event, inputs list/provide
    _cli_queues.add_commands(add, [common])  # queues list/stats/pause/resume/set
    _cli_logs.add_commands(add, [common])  # logs
    _cli_watch.add_commands(add, [common])  # watch
    _cli_stats.add_commands(add, [common])  # stats
    _cli_cleanup.add_commands(add, [common])  # cleanup
    return parser


def _global_options(parser: argparse.ArgumentParser, url: Any, debug: Any) -> argparse.ArgumentParser:
    parser.add_argument(
        "--database-url",
        default=url,
        metavar="URL",
        help="postgresql://…, sqlite:///file.db or memory:// (default: $DURABLE_DATABASE_URL, else "
        "sqlite:///durable.db)",
    )
    parser.add_argument("--debug", action="store_true", default=debug, help="show tracebacks and debug logs")
    return parser


def _add_worker(add: Any) -> None:
    p = add("worker", help="run a worker that executes the workflows of MODULE(s)")
    p.add_argument("modules", nargs="+", metavar="MODULE", help="modules defining @durable.workflow functions")
    p.add_argument("--concurrency", type=_positive(int), default=100, metavar="N", help="most runs at once (100)")
    p.add_argument("--lease-seconds", type=_positive(float), default=30.0, metavar="S", help="lease length (30 s)")
    p.add_argument("--grace", type=float, default=10.0, metavar="S", help="time to finish steps on stop (10 s)")
    p.add_argument("--queue", action="append", metavar="NAME=N", dest="queues", type=_queue_option,
                   help="serve this queue with N runs at once (repeatable; default: every queue)")
    p.add_argument("--no-capture-logs", action="store_false", dest="capture_logs",
                   help="do not keep what steps log and print (see `durable logs`)")
    p.add_argument("--retention", type=_retention_option, metavar="KIND=AGE,…",
                   help="delete old finished runs periodically, e.g. completed=30d,failed=90d[,cancelled=7d]"
                        "[,every=1h] (default: keep every run)")
    p.set_defaults(command=cmd_worker)


def _queue_option(text: str) -> tuple[str, int]:
    from ._cli_queues import parse_queue_option

    return parse_queue_option(text)


def _retention_option(text: str) -> Any:
    from ._cli_cleanup import retention_option

    return retention_option(text)


def _add_start(add: Any) -> None:
    p = add("start", help="start a run of WORKFLOW and print its id")
    p.add_argument("workflow", metavar="WORKFLOW")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--input", metavar="JSON", help="one JSON value: the workflow's argument")
    given.add_argument("--args", metavar="JSON_LIST", help="a JSON list: the workflow's positional arguments")
    p.add_argument("--id", dest="workflow_id", metavar="WORKFLOW_ID", help="idempotency key / run id")
    p.add_argument("--app", action="append", default=[], metavar="MODULE", help="import MODULE first")
    p.add_argument("--wait", action="store_true", help="wait for the result and print it")
    p.add_argument("--timeout", type=float, metavar="S", help="with --wait: give up waiting after S seconds")
    p.set_defaults(command=cmd_start)


def _add_show(add: Any) -> None:
    p = add("show", help="a run's status, state, pending inputs, children, steps and event history")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.set_defaults(command=cmd_show)


def _add_cancel(add: Any) -> None:
    p = add("cancel", help="cancel a run")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--reason", default="cancelled from the command line", metavar="TEXT")
    p.set_defaults(command=cmd_cancel)


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000, got {value}")
    return value


def import_modules(names: Sequence[str]) -> None:
    """Import the user's modules (registering their workflows); the current directory is importable, as with
    ``python -m``, so ``durable worker myapp.workflows`` works from a project's root."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise UsageError(
                f"cannot import module {name!r}: {type(exc).__name__}: {exc}. Check the module path (dotted, "
                f"importable from {os.getcwd()}), or run with --debug for the traceback."
            ) from exc


def parse_input(args: argparse.Namespace) -> tuple[Any, ...]:
    """The workflow's positional arguments from ``--input`` (one value) or ``--args`` (a list)."""
    text, flag = (args.input, "--input") if args.input is not None else (args.args, "--args")
    if text is None:
        return ()
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise UsageError(
            f"{flag} is not valid JSON ({exc}): {text!r}. Quote it for the shell, e.g. "
            f"--input '{{\"order_id\": \"A-1\"}}' (strings need double quotes inside)."
        ) from None
    if flag == "--input":
        return (value,)
    if not isinstance(value, list):
        raise UsageError(f"--args must be a JSON list of positional arguments, e.g. '[1, \"two\"]'; got {text!r}")
    return tuple(value)


# -- commands -----------------------------------------------------------------------------------------------


async def cmd_worker(args: argparse.Namespace) -> int:
    """Serve the workflows of the given modules until SIGTERM/SIGINT, then shut down gracefully."""
    import_modules(args.modules)
    workflows = registered_workflows()
    if not workflows:
        raise UsageError(
            f"no @durable.workflow was registered by importing {', '.join(args.modules)}: name the modules that "
            f"define your workflows"
        )
    store = open_store(args.database_url)
    await store.open()
    try:
        queues = dict(args.queues) if args.queues else None
        worker = Worker(store, workflows, concurrency=args.concurrency, queues=queues,
                        lease_seconds=args.lease_seconds, retention=args.retention,
                        capture_logs=args.capture_logs)
        log.info("serving %s from %s; stop with Ctrl-C or SIGTERM", ", ".join(sorted(workflows)), store.url)
        with _StopOnSignals(worker, args.grace) as stopping:
            await worker.run()
            await asyncio.gather(*stopping.tasks)
        log.info("worker %s stopped", worker.worker_id)
    finally:
        await store.close()
    return 0


class _StopOnSignals:
    """While active, SIGTERM/SIGINT shut the worker down gracefully (finish in-flight steps, release leases);
    a second signal abandons what is still running."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, worker: Worker, grace: float) -> None:
        self.worker = worker
        self.grace = grace
        self.tasks: list[asyncio.Task[None]] = []  # the shutdowns under way, awaited before exiting
        self._installed: list[signal.Signals] = []
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> _StopOnSignals:
        for signum in self.SIGNALS:
            try:
                self._loop.add_signal_handler(signum, self._handle, signum)
            except (NotImplementedError, RuntimeError):  # Windows' loop has none; nor has a non-main thread
                continue
            self._installed.append(signum)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum in self._installed:
            self._loop.remove_signal_handler(signum)

    def _handle(self, signum: signal.Signals) -> None:
        forced = bool(self.tasks)
        what = "stopping now" if forced else f"finishing in-flight steps (up to {self.grace:g}s)"
        log.info("%s: %s", signum.name, what)
        self.tasks.append(self._loop.create_task(self.worker.shutdown(0.0 if forced else self.grace)))


async def cmd_start(args: argparse.Namespace) -> int:
    """Start a run; print its id (and with ``--wait`` its result)."""
    import_modules(args.app)
    inputs = parse_input(args)
    async with Engine(args.database_url, worker=False) as engine:
        try:
            handle = await engine.start(args.workflow, *inputs, workflow_id=args.workflow_id)
        except (TypeError, ValueError) as exc:  # the input does not fit the workflow's parameters
            raise UsageError(str(exc)) from exc
        if handle.created:
            note = f"started run {handle.id} of {handle.workflow}"
        else:
            note = f"a run with id {handle.id} exists already: returned it, started nothing"
        print(handle.id)
        print(f"{note} (see it with `durable show {handle.id}`)", file=sys.stderr)
        if not args.wait:
            return 0
        return await _wait(handle, args.timeout, args.debug)


async def _wait(handle: Any, timeout: float | None, debug: bool) -> int:
    """Print the run's result as JSON, or its failure; return the exit code."""
    try:
        result = await handle.result(timeout=timeout)
    except WorkflowFailed as exc:
        if debug and exc.remote_traceback:
            print(exc.remote_traceback.rstrip(), file=sys.stderr)
        print(f"error: {exc} (its traceback: `durable show {handle.id}`)", file=sys.stderr)
        return 1
    except (WorkflowCancelled, ResultTimeout) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(msgspec.json.encode(result).decode())
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    """Print a run's summary, steps and history (or all of it as JSON)."""
    from ._cli_logs import tail_section
    from ._cli_world import world_sections, world_view
    from ._logs import MAX_READ

    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        execution = await engine.get_execution(args.run_id, include_steps=True)
        events = await engine.get_history(args.run_id)
        world = await world_view(engine, execution)
        lines = await engine.get_logs(args.run_id, limit=MAX_READ)
    if args.json:  # payloads stay as stored
        document = msgspec.json.encode({"execution": execution, **world.as_json(), "history": events})
        print(msgspec.json.format(document, indent=2).decode())
        return 0
    style = _format.Style.for_stream(sys.stdout)
    print(_format.execution_summary(execution, style))
    for section in world_sections(execution, world, style):
        print(section)
    if execution.steps:
        print(style(f"\nSteps ({len(execution.steps)})", "bold"))
        print(_format.steps_table(execution.steps, style))
        for step_traceback in _format.step_tracebacks(execution.steps, style):
            print(step_traceback)
    if (logs := tail_section(args.run_id, lines, style)) is not None:
        print(logs)
    print(style(f"\nEvent history ({len(events)} events)", "bold"))
    print(_format.history_table(events, style))
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a run and say what happened."""
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        try:
            execution = await engine.cancel(args.run_id, reason=args.reason)
        except RunNotFound:  # the store's own message names neither the database nor the way to find ids
            raise RunNotFound(
                f"no run with id {args.run_id!r} in {engine.url}: check the id with `durable list`"
            ) from None
    if execution.status == "cancelled":
        print(f"run {execution.id} is cancelled ({execution.cancel_reason or args.reason})")
    elif execution.finished_at is not None:
        print(f"run {execution.id} had already finished ({execution.status}): unchanged")
    else:
        print(f"run {execution.id} ({execution.status}): cancellation requested; it ends as cancelled when its "
              f"worker next checks in (see `durable show {execution.id}`)")
    return 0


async def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Create or upgrade the schema; print the migrations applied and the current version."""
    store = open_store(args.database_url)
    upgrade = getattr(store, "upgrade", None)
    if upgrade is None:
        await store.open()  # opening creates or upgrades the schema
        await store.close()
        print(f"schema of {store.url} is up to date")
        return 0
    applied: list[int] = await upgrade()
    current = getattr(store, "schema_version", None)
    done = f"applied migration(s) {', '.join(map(str, applied))}" if applied else "already up to date"
    version = f" (schema version {current})" if current is not None else ""
    print(f"{store.url}: {done}{version}")
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    """Run the sample workflow end to end on the chosen database (the embedded SQLite file by default)."""
    from ._demo import run_demo

    return await run_demo(args.database_url)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
