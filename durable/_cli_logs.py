"""``durable logs RUN_ID``: a run's captured log lines (``--step``, ``--attempt``, ``--level``, ``--json``), and
with ``--follow`` the new ones as they come until the run ends.

One line per log line: ``time level #command step attempt N logger: message``, the traceback of a record logged with
``exc_info`` indented below it. The workflow's own ``ctx.logger`` lines show ``workflow`` where a step's name
goes; printed lines show ``stdout`` or ``stderr`` where a logger's name goes. ``--json`` prints one JSON object
per line (the ``LogLine`` fields, ``extra`` decoded). An unknown run id exits 1 with a message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from history import LogLine, RunNotFound

from . import _format
from ._engine import Engine
from ._logs import MAX_READ, parse_level

FOLLOW_POLL = 0.5
"""Seconds between reads of a followed run's new lines (a person watching; not a hot path)."""

_LEVEL_STYLES = {"DEBUG": "dim", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}


def add_commands(add: Any, common: list[argparse.ArgumentParser]) -> None:
    """Register ``logs`` (``common``'s global options are accepted after it too, through ``add``)."""
    p = add("logs", help="a run's captured logs: what its steps logged and printed, and ctx.logger")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--step", metavar="STEP", help="only the lines of steps named STEP")
    p.add_argument("--attempt", type=_attempt, metavar="N", help="only the lines of attempt N")
    p.add_argument("--level", type=_level, metavar="LEVEL",
                   help="lowest level: debug, info, warning, error, critical or a number (prints on stderr count "
                        "as warning)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the run ends")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(command=cmd_logs)


def _level(text: str) -> int:
    try:
        level = parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert level is not None
    return level


def _attempt(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an attempt number (1 or more), got {text!r}")
    return value


async def cmd_logs(args: argparse.Namespace) -> int:
    """Print the run's lines; with ``--follow``, poll for new ones until the run has finished and all are out."""
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        printer = _LinePrinter(_format.Style.for_stream(sys.stdout), as_json=args.json)
        last = 0
        while True:
            run = await engine.store.get_run(args.run_id)  # before the lines: see below
            if run is None:
                raise RunNotFound(f"no run with id {args.run_id!r} in {engine.url}: check the id with `durable list`")
            finished = run.finished
            lines = await engine.get_logs(args.run_id, step=args.step, attempt=args.attempt, level=args.level,
                                          after_id=last, limit=MAX_READ)
            printer.print(lines)
            if lines:
                last = lines[-1].id
            if len(lines) == MAX_READ:
                continue  # more to read at once
            # A finished run's last lines committed with its end (read before them): nothing more can come.
            if not args.follow or finished:
                break
            await engine.store.hub.wait_finished(args.run_id, FOLLOW_POLL)
        if not printer.count and not args.json:
            filtered = args.step or args.attempt or args.level
            print(f"no log lines{' match' if filtered else ''} for run {args.run_id}", file=sys.stderr)
    return 0


SHOW_TAIL = 20
"""How many of a run's last log lines ``durable show`` prints (``durable logs`` prints them all)."""


def tail_section(run_id: str, lines: Sequence[LogLine], style: _format.Style) -> str | None:
    """``durable show``'s "Logs" section: the run's last lines, and how to see the rest; ``None`` without lines."""
    if not lines:
        return None
    printer = _LinePrinter(style, as_json=False)
    more = "+" if len(lines) == MAX_READ else ""
    parts = [style(f"\nLogs ({len(lines)}{more} lines; all of them: durable logs {run_id})", "bold")]
    if len(lines) > SHOW_TAIL:
        parts.append(style(f"  … {len(lines) - SHOW_TAIL}{more} earlier lines", "dim"))
    parts += [_indent(printer.format(line), 2) for line in lines[-SHOW_TAIL:]]
    return "\n".join(parts)


class _LinePrinter:
    def __init__(self, style: _format.Style, *, as_json: bool) -> None:
        self.style = style
        self.as_json = as_json
        self.count = 0

    def print(self, lines: Sequence[LogLine]) -> None:
        for line in lines:
            print(self._json(line) if self.as_json else self.format(line))
            self.count += 1
        sys.stdout.flush()

    def format(self, line: LogLine) -> str:
        """``time level #command step attempt N logger: message``, the traceback indented under it. The command
        number tells apart calls of one step (``#5 ship_item``, ``#6 ship_item``), as in ``durable show``."""
        style = self.style
        where = "workflow" if line.step is None else f"#{line.command_id} {line.step} attempt {line.attempt}"
        source = line.stream if line.stream != "log" else line.logger
        level = style(f"{line.level_name:<8}", _LEVEL_STYLES.get(line.level_name))
        head = f"{style(_format.when(line.at), 'dim')} {level} {style(where, 'cyan')} {source}:"
        text = head + " " + _indent(line.message, 4).lstrip() if line.message else head
        if line.exc:
            text += "\n" + style(_indent(line.exc.rstrip("\n"), 4), "red")
        return text

    @staticmethod
    def _json(line: LogLine) -> str:
        document = msgspec.to_builtins(line)
        document["extra"] = None if line.extra is None else msgspec.json.decode(line.extra)
        return msgspec.json.encode(document).decode()


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + part for part in text.split("\n"))
