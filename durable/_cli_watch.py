"""``durable watch [RUN_ID] [--workflow W]``: print runs' events as they happen (``engine.subscribe``).

With a run id it prints the run's history so far, then each new event, and exits once the run ends; without,
the events of every run (or of one workflow's runs) from now on, until interrupted. The rows look like
``durable history``'s; the start of a step attempt that is not in the history (announced live by its worker
while it runs, or a retry's attempt, recorded only with its outcome) shows ``·`` for its sequence number.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

import msgspec

from . import _format
from ._cli import UsageError
from ._cli_history import _details
from ._engine import Engine
from ._subscribe import RunEvent


def add_commands(add: Any, common: list[argparse.ArgumentParser]) -> None:
    """Register ``watch``."""
    p = add("watch", help="print runs' events as they happen: one run (until it ends), a workflow's, or all")
    p.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run to follow (default: every run from now on)")
    p.add_argument("--workflow", metavar="W", help="follow the runs of workflow W (from now on)")
    p.add_argument("--after", type=int, default=0, metavar="SEQ",
                   help="with RUN_ID: start after history event SEQ (default 0: from the start)")
    p.add_argument("--json", action="store_true", help="one JSON object per event and line (a RunEvent)")
    p.set_defaults(command=cmd_watch)


async def cmd_watch(args: argparse.Namespace) -> int:
    """Print events as they come; exit 0 when the followed run ends."""
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        try:
            subscription = engine.subscribe(args.run_id, workflow=args.workflow, after_seq=args.after)
        except (TypeError, ValueError) as exc:  # e.g. RUN_ID with --workflow: the user's to fix (exit 2)
            raise UsageError(f"durable watch: {exc}") from None
        printer = _Printer(_format.Style.for_stream(sys.stdout), one_run=args.run_id is not None, as_json=args.json)
        async with subscription as events:
            if args.run_id is not None and not args.json:
                print(f"Watching run {args.run_id} (Ctrl-C to stop)")
            elif not args.json:
                what = f"runs of {args.workflow}" if args.workflow else "every run"
                print(f"Watching {what} on {engine.url} (Ctrl-C to stop)")
            last: RunEvent | None = None
            async for event in events:
                printer.print(event)
                last = event
        if last is not None and args.run_id is not None and not args.json:
            print(f"run {last.run_id} ended: {printer.style.status(_STATUS.get(last.kind, last.kind))}")
    return 0


_STATUS = {"completed": "completed", "failed": "failed", "cancelled": "cancelled", "continued": "continued"}


class _Printer:
    """Rows in ``durable history``'s columns (with the run in front when following many runs), printed as
    they come with fixed widths so that they line up."""

    HEADERS = ("seq", "time", "type", "command", "attempt", "duration", "details")
    WIDTHS = (4, 12, 16, 22, 7, 9)

    def __init__(self, style: _format.Style, *, one_run: bool, as_json: bool) -> None:
        self.style = style
        self.one_run = one_run
        self.as_json = as_json
        self.start: datetime | None = None
        self.header_done = False

    def print(self, event: RunEvent) -> None:
        if self.as_json:
            sys.stdout.buffer.write(msgspec.json.encode(event) + b"\n")
            sys.stdout.flush()
            return
        if not self.header_done:
            headers = self.HEADERS if self.one_run else ("run", "workflow", *self.HEADERS)
            print(self._line([(h, "dim") for h in headers]))
            self.header_done = True
        print(self._line(self._cells(event)))
        sys.stdout.flush()

    def _line(self, cells: list[_format.Cell]) -> str:
        widths = self.WIDTHS if self.one_run else (26, 16, *self.WIDTHS)
        parts = []
        for index, cell in enumerate(cells):
            text, cell_style = (cell, None) if isinstance(cell, str) else cell
            width = widths[index] if index < len(widths) else 0
            text = text if width or len(text) <= 110 else text[:109] + "…"
            parts.append(self.style(text, cell_style) + " " * max(0, width - len(text)))
        return ("  " + "  ".join(parts)).rstrip()

    def _cells(self, event: RunEvent) -> list[_format.Cell]:
        if self.one_run:  # times since the first event shown, as in `durable history`
            self.start = self.start or event.at
            when = f"+{(event.at - self.start).total_seconds():.3f}s"
        else:
            when = event.at.strftime("%H:%M:%S.%f")[:-3]
        attempt = "" if event.attempt is None else str(event.attempt)
        if event.event is None:  # an attempt's start, known before (or without) its record: no seq
            cells: list[_format.Cell] = ["·", when, (event.kind, "cyan"), f"#{event.command_id} {event.step}",
                                         attempt, "", ""]  # fmt: skip
        else:
            recorded = event.event
            duration = getattr(recorded, "duration_ms", None)
            cells = [str(event.seq), when, (event.kind, _format.event_style(recorded)),
                     _format.event_subject(recorded), attempt, _format.millis(duration) if duration else "",
                     _details(recorded)]  # fmt: skip
        return cells if self.one_run else [event.run_id, event.workflow, *cells]
