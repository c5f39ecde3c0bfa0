"""``durable history`` (show, ``--json``, ``--follow``, ``export``, ``import``) and ``durable replay``.

``durable history RUN_ID`` is short for ``durable history show RUN_ID`` (``normalize_argv`` inserts ``show``).
Every error is one paragraph on stderr with exit code 1 (``--debug`` adds the traceback); ``durable replay``
exits 0 when every run replays identically and 1 otherwise, so it can gate a deploy in CI.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from history import (
    STATUSES,
    CancelRequested,
    ChildFinished,
    ChildStarted,
    DurableError,
    EventWaitStarted,
    InputRequested,
    MessageReceived,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    RunRecord,
    RunStarted,
    StateUpdated,
    StepCompleted,
    StepFailed,
    StepScheduled,
    Store,
    TimerFired,
    TimerStarted,
    ValueRecorded,
    event_type,
    open_store,
)

from . import _format
from ._cli import UsageError, import_modules
from ._definitions import registered_workflows
from ._history_file import (
    HistoryDocument,
    HistoryFileError,
    encode_document,
    iter_histories,
    make_document,
    write_history,
)
from ._history_transfer import import_document, parse_since, read_run, select_runs
from .errors import UnknownWorkflowError
from .replay import ReplayResult, replay

_FOLLOW_POLL = 0.2
"""Seconds between reads of a followed run's new events (a finish notification ends the wait sooner)."""

_SUBCOMMANDS = ("show", "export", "import")
_GLOBAL_WITH_VALUE = ("--database-url",)


class _AppImportError(DurableError):
    """The ``--app`` module of ``durable replay`` failed to import (exit 1, like every replay failure)."""


# -- arguments --------------------------------------------------------------------------------------------------


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """``durable history RUN_ID …`` → ``durable history show RUN_ID …`` (the other actions are named)."""
    args = list(argv)
    index = 0
    while index < len(args):  # skip the global options before the command
        token = args[index]
        if token in _GLOBAL_WITH_VALUE:
            index += 2
        elif token.startswith("-"):
            index += 1
        else:
            break
    if index + 1 < len(args) and args[index] == "history":
        following = args[index + 1]
        if following not in _SUBCOMMANDS and following not in ("-h", "--help"):
            args.insert(index + 1, "show")
    return args


def add_commands(add: Any, common: list[argparse.ArgumentParser]) -> None:
    """Register ``history`` and ``replay``: ``add`` makes a command's parser, ``common`` holds the global options
    (so that they are accepted after the action too)."""
    history = add("history", help="a run's event history: show (`history RUN_ID`), export, import")
    actions = history.add_subparsers(metavar="ACTION", required=True)
    _add_show(actions, common)
    _add_export(actions, common)
    _add_import(actions, common)
    _add_replay(add)


def _add_show(actions: Any, common: list[argparse.ArgumentParser]) -> None:
    p = actions.add_parser("show", parents=common, help="the events of a run as a table (the default action)")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--json", action="store_true",
                   help="the history as a JSON document (docs/history-format.md); with --follow, one event a line")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events until the run ends")
    p.set_defaults(command=cmd_history_show)


def _add_export(actions: Any, common: list[argparse.ArgumentParser]) -> None:
    p = actions.add_parser(
        "export", parents=common,
        help="write runs' histories to a file: one run (.json), many (.jsonl, or a directory), stdout",
    )
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs to export (or select them with filters)")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="FILE.json (one run), FILE.jsonl (one run a line) or DIR/ (a FILE.json per run); "
                        "default: stdout")
    p.add_argument("--workflow", metavar="W", help="runs of this workflow")
    p.add_argument("--status", choices=STATUSES, help="runs in this status")
    p.add_argument("--since", metavar="WHEN", help="runs created since: 30m, 12h, 1d, 2w, or an ISO date/time")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="at most N runs, newest first (1000)")
    p.set_defaults(command=cmd_history_export)


def _add_import(actions: Any, common: list[argparse.ArgumentParser]) -> None:
    p = actions.add_parser("import", parents=common,
                           help="write the runs of history files into the database (--database-url)")
    p.add_argument("files", nargs="+", metavar="FILE", help=".json, .jsonl, or a directory of them")
    p.set_defaults(command=cmd_history_import)


def _add_replay(add: Any) -> None:
    p = add("replay", help="re-execute workflow code against recorded histories; exit 1 if any diverges")
    p.add_argument("source", metavar="FILE|DIR|RUN_ID",
                   help="a history file (.json, .jsonl), a directory of them, or a run id read from the database")
    p.add_argument("--app", action="append", default=[], metavar="MODULE",
                   help="import MODULE (defining the workflows) first; repeatable")
    p.add_argument("--run", metavar="RUN_ID", help="only this run of a multi-run file or directory")
    p.add_argument("--until", type=int, metavar="N", help="stop after event N and print the workflow's variables")
    p.add_argument("--break-at", metavar="STEP", help="open pdb in the workflow where it calls step STEP")
    p.set_defaults(command=cmd_replay)


# -- history show ----------------------------------------------------------------------------------------------


async def cmd_history_show(args: argparse.Namespace) -> int:
    """Print a run's events as a table (or JSON), and with ``--follow`` the new ones until it ends."""
    store = open_store(args.database_url, create_schema=False)
    await store.open()
    try:
        run, events = await read_run(store, args.run_id)
        style = _format.Style.for_stream(sys.stdout)
        if args.json and not args.follow:
            sys.stdout.buffer.write(encode_document(make_document(events, run), pretty=True) + b"\n")
            return 0
        printer = _EventPrinter(style, as_json=args.json)
        if not args.json:
            print(_run_line(run, events, style))
        printer.print(events)
        if args.follow:
            run = await _follow(store, run, events, printer)
            if not args.json:
                print(f"run {run.id} ended: {style.status(run.status)}")
        return 0
    finally:
        await store.close()


async def _follow(store: Store, run: RunRecord, events: list[RecordedEvent], printer: _EventPrinter) -> RunRecord:
    last = events[-1].seq if events else 0
    while True:
        finished = run.finished
        new = await store.read_history(run.id, after_seq=last)
        if new:
            printer.print(new)
            last = new[-1].seq
        if finished:  # the run row and its last event are written in one commit: nothing more can come
            return run
        await store.hub.wait_finished(run.id, _FOLLOW_POLL)
        latest = await store.get_run(run.id)
        run = latest if latest is not None else run


def _run_line(run: RunRecord, events: Sequence[RecordedEvent], style: _format.Style) -> str:
    started = f", started {_format.when(events[0].at)}" if events else ""
    return (f"{style('Run ' + run.id, 'bold')}  {run.workflow}  {style.status(run.status)}  "
            f"{len(events)} events{started} (times are since then)")


class _EventPrinter:
    """Rows of the history table, printed as they come (for ``--follow``) with fixed column widths, so rows
    printed later line up with the first ones."""

    HEADERS = ("seq", "time", "type", "command", "attempt", "duration", "details")
    WIDTHS = (4, 10, 14, 22, 7, 9)

    def __init__(self, style: _format.Style, *, as_json: bool) -> None:
        self.style = style
        self.as_json = as_json
        self.start: datetime | None = None
        self.timer_started: dict[int, datetime] = {}
        self.header_done = False

    def print(self, events: Sequence[RecordedEvent]) -> None:
        if self.as_json:
            for rec in events:
                sys.stdout.buffer.write(encode_document_entry(rec) + b"\n")
            sys.stdout.flush()
            return
        if not self.header_done:
            print(self._line([(h, "dim") for h in self.HEADERS]))
            self.header_done = True
        for rec in events:
            if self.start is None:
                self.start = rec.at
            print(self._line(self._cells(rec)))
        sys.stdout.flush()

    def _line(self, cells: Sequence[_format.Cell]) -> str:
        parts = []
        for index, cell in enumerate(cells):
            text, cell_style = (cell, None) if isinstance(cell, str) else cell
            width = self.WIDTHS[index] if index < len(self.WIDTHS) else 0
            text = text if width or len(text) <= 110 else text[:109] + "…"
            parts.append(self.style(text, cell_style) + " " * max(0, width - len(text)))
        return ("  " + "  ".join(parts)).rstrip()

    def _cells(self, rec: RecordedEvent) -> list[_format.Cell]:
        event = rec.event
        assert self.start is not None
        offset = f"+{(rec.at - self.start).total_seconds():.3f}s"
        attempt = str(event.attempt) if isinstance(event, (StepCompleted, StepFailed)) else ""
        return [str(rec.seq), offset, (event_type(event), _format.event_style(event)),
                _format.event_subject(event), attempt, self._duration(rec), _details(event)]

    def _duration(self, rec: RecordedEvent) -> str:
        event = rec.event
        if isinstance(event, (StepCompleted, StepFailed)):
            return _format.millis(event.duration_ms)
        if isinstance(event, TimerStarted):
            self.timer_started[event.command_id] = rec.at
            return _format.millis(event.seconds * 1000) if event.seconds is not None else ""
        if isinstance(event, TimerFired) and event.command_id in self.timer_started:
            return _format.millis((rec.at - self.timer_started[event.command_id]).total_seconds() * 1000)
        if isinstance(event, (RunCompleted, RunFailed, RunCancelled, RunContinued)) and self.start is not None:
            return _format.millis((rec.at - self.start).total_seconds() * 1000)
        return ""


def _details(event: Any) -> str:  # one branch per event kind
    """A short summary of an event's payloads (attempts and durations have their own columns)."""
    if isinstance(event, RunStarted):
        return f"input {_format.short(event.input, 80)}"
    if isinstance(event, StepScheduled):
        return f"args {_format.short(event.args, 80)}"
    if isinstance(event, StepCompleted):
        return f"-> {_format.short(event.result, 80)}"
    if isinstance(event, StepFailed):
        then = "final" if event.retry_at is None else f"retry at {_format.when(event.retry_at)}"
        return f"{then}: {event.error.type}: {_format.short(event.error.message, 70)[1:-1]}"
    if isinstance(event, TimerStarted):
        return f"until {_format.when(event.fire_at)}"
    if isinstance(event, ValueRecorded):
        return f"= {_format.short(event.value, 80)}"
    if isinstance(event, RunCompleted):
        return f"result {_format.short(event.result, 80)}"
    if isinstance(event, RunFailed):
        return f"{event.error.type}: {' '.join(event.error.message.split())[:100]}"
    if isinstance(event, RunCancelled):
        return f"reason: {event.reason}"
    return _details_of_waits(event)


def _details_of_waits(event: Any) -> str:  # one branch per event kind
    """The summary of the events of waiting on the world (messages, inputs, children, state, continuation)."""
    if isinstance(event, EventWaitStarted):
        return f"event {event.name!r}" + (f", until {_format.when(event.timeout_at)}" if event.timeout_at else "")
    if isinstance(event, InputRequested):
        return f"input {event.key!r}: {_format.short(event.prompt, 60)[1:-1]}"
    if isinstance(event, MessageReceived):
        return f"{event.kind} {event.name!r} = {_format.short(event.payload, 70)}"
    if isinstance(event, ChildStarted):
        return f"run {event.child_id} of {event.workflow}" + (", awaited" if event.wait else "")
    if isinstance(event, ChildFinished):
        if event.error is not None:
            return f"run {event.child_id} {event.status}: {event.error.type}: {event.error.message[:80]}"
        outcome = f" -> {_format.short(event.result, 70)}" if event.result is not None else ""
        return f"run {event.child_id} {event.status}{outcome}"
    if isinstance(event, CancelRequested):
        return f"reason: {event.reason}" + (" (the run's timeout)" if event.timeout else "")
    if isinstance(event, StateUpdated):
        return f"{event.key} = {_format.short(event.value, 80)}"
    if isinstance(event, RunContinued):
        return f"continued as run {event.new_run_id}, input {_format.short(event.input, 70)}"
    patch = getattr(event, "patch_id", None)
    return f"patch {patch!r}" if patch is not None else ""


def encode_document_entry(rec: RecordedEvent) -> bytes:
    """One ``events`` entry of the history format, compact (``--json --follow`` prints one a line)."""
    return msgspec.json.encode(rec)


# -- history export / import -------------------------------------------------------------------------------------


async def cmd_history_export(args: argparse.Namespace) -> int:
    """Export runs (by id or filter) to a file, a directory, or stdout."""
    filtered = args.workflow or args.status or args.since
    if not args.run_ids and not filtered:
        raise UsageError("name the runs to export (RUN_ID …) or select them with --workflow, --status or --since")
    if not 1 <= args.limit <= 100_000:
        raise UsageError(f"--limit must be between 1 and 100000, got {args.limit}")
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    store = open_store(args.database_url, create_schema=False)
    await store.open()
    try:
        documents = []
        for run_id in args.run_ids:
            run, events = await read_run(store, run_id)
            documents.append(make_document(events, run))
        if filtered:
            for run in await select_runs(store, workflow=args.workflow, status=args.status, since=since,
                                         limit=args.limit):
                if run.id not in args.run_ids:
                    documents.append(make_document(await store.read_history(run.id), run))
    finally:
        await store.close()
    return _write_documents(documents, args.output, filtered=bool(filtered))


def _write_documents(documents: list[HistoryDocument], output: str | None, *, filtered: bool) -> int:
    if not documents:
        print("no runs match: nothing exported", file=sys.stderr)
        return 0
    events = sum(len(d.events) for d in documents)
    what = f"{len(documents)} run{'s' if len(documents) != 1 else ''} ({events:,} events)"
    if output is None:
        if len(documents) == 1 and not filtered:
            sys.stdout.buffer.write(encode_document(documents[0], pretty=True) + b"\n")
        else:
            sys.stdout.buffer.write(b"".join(encode_document(d) + b"\n" for d in documents))
        return 0
    target = Path(output)
    if output.endswith(("/", os.sep)) or target.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for document in documents:
            write_history(target / f"{_file_name(document.run.id)}.json", [document])
    elif target.suffix == ".jsonl":
        write_history(target, documents)
    elif len(documents) > 1:
        raise UsageError(f"{len(documents)} runs match, but {output} is one run's file: write them to a .jsonl "
                         f"file (one run a line) or a directory (`-o {target.with_suffix('')}/`)")
    else:
        write_history(target, documents)
    print(f"exported {what} to {target}", file=sys.stderr)
    return 0


def _file_name(run_id: str) -> str:
    """A run id as a file name: anything but letters, digits, ``-``, ``_`` and ``.`` becomes ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id) or "run"


async def cmd_history_import(args: argparse.Namespace) -> int:
    """Import every run of the files into the database."""
    store = open_store(args.database_url)
    await store.open()
    imported = present = 0
    try:
        for file in args.files:
            for where, document in iter_histories(file):
                if await import_document(store, document, where):
                    imported += 1
                    print(f"imported run {document.run.id} ({document.run.workflow}, {len(document.events)} "
                          f"events, {document.run.status}) from {where}")
                else:
                    present += 1
                    print(f"run {document.run.id} is in {store.url} already, with the same events: skipped")
    finally:
        await store.close()
    if imported + present == 0:
        raise HistoryFileError(f"no history files (*.json, *.jsonl) in {', '.join(args.files)}: nothing imported")
    print(f"{imported} run(s) imported into {store.url}" + (f", {present} already there" if present else "")
          + (f"; see one with `durable show {document.run.id}`" if imported else ""), file=sys.stderr)
    return 0


# -- replay -----------------------------------------------------------------------------------------------------


async def cmd_replay(args: argparse.Namespace) -> int:
    """Replay histories against the code of ``--app``; 0 if all replay identically, else 1."""
    _import_apps(args.app)
    sources = await _load_sources(args)
    if args.run is not None:
        sources = [(where, d) for where, d in sources if d.run.id == args.run]
        if not sources:
            raise HistoryFileError(f"no run {args.run!r} in {args.source}: see the ids with `durable replay "
                                   f"{args.source}` (every run is replayed without --run)")
    if (args.until is not None or args.break_at) and len(sources) > 1:
        raise UsageError(f"--until and --break-at debug one run, but {args.source} holds {len(sources)}: pick "
                         f"one with --run RUN_ID")
    if args.until is not None and args.until < 1:
        raise UsageError(f"--until takes an event number (1 or more), got {args.until}")
    color = _format.Style.for_stream(sys.stdout).enabled
    results = [_replay_one(where, document, args) for where, document in sources]
    for result in results:
        print(result.report(color=color))
        _notes(result, args, sources)
    failed = [r for r in results if not r.ok]
    if len(results) > 1:
        print(f"\n{len(results)} runs replayed: {len(results) - len(failed)} OK, {len(failed)} not")
    return 1 if failed else 0


def _import_apps(modules: Sequence[str]) -> None:
    try:
        import_modules(modules)
    except UsageError as exc:
        raise _AppImportError(str(exc)) from exc.__cause__


async def _load_sources(args: argparse.Namespace) -> list[tuple[str, HistoryDocument]]:
    path = Path(args.source)
    if path.exists() or path.suffix in (".json", ".jsonl") or os.sep in args.source:
        return list(iter_histories(path))  # a missing file is reported as such
    store = open_store(args.database_url, create_schema=False)
    await store.open()
    try:
        run = await store.get_run(args.source)
        if run is None:
            raise HistoryFileError(f"{args.source!r} is neither a history file nor a run in {store.url}: give the "
                                   f"path of a file from `durable history export`, or a run id from `durable list`")
        events = await store.read_history(run.id)
    finally:
        await store.close()
    return [(f"{store.url}", make_document(events, run))]


def _replay_one(where: str, document: HistoryDocument, args: argparse.Namespace) -> ReplayResult:
    try:
        result = replay(None, document, until=args.until, break_at=args.break_at)
    except UnknownWorkflowError:
        known = ", ".join(sorted(registered_workflows())) or "none"
        modules = f" (imported: {', '.join(args.app)})" if args.app else ""
        raise UnknownWorkflowError(
            f"{where}: run {document.run.id!r} is of workflow {document.run.workflow!r}, which no imported module "
            f"defines{modules}; registered workflows: {known}. Pass the module that defines it: --app myapp.workflows"
        ) from None
    return dataclasses.replace(result, source=where)


def _notes(result: ReplayResult, args: argparse.Namespace, sources: Sequence[tuple[str, HistoryDocument]]) -> None:
    if args.until is not None and args.until > result.total_events:
        print(f"  (--until {args.until}: the history has {result.total_events} events; all were replayed)")
    if args.break_at and result.break_hits == 0:
        names = sorted({r.event.name for _, d in sources for r in d.events if isinstance(r.event, StepScheduled)})
        print(f"  (--break-at {args.break_at}: the code never called a step of that name during the replay; steps "
              f"in the history: {', '.join(names) or 'none'})")
