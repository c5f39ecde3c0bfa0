"""``durable list``: runs filtered by workflow, status, current step, queue, parent, time window or id/key prefix,
in the order asked, a page at a time."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from history import STATUSES

from . import _format
from ._cli import UsageError, _limit
from ._durations import parse_moment
from ._engine import Engine

_ORDERS = ("created_at", "started_at", "finished_at", "updated_at")


def add_commands(add: Any) -> None:
    """Register ``list``."""
    p = add("list", help="runs, newest first, filtered")
    p.add_argument("--workflow", metavar="W")
    p.add_argument("--status", action="append", choices=STATUSES, metavar="STATUS",
                   help=f"one of {', '.join(STATUSES)}; repeat for several")
    p.add_argument("--step", metavar="NAME",
                   help="runs doing this now: a step name, or sleep, event:<name>, input:<key>, child:<id>")
    p.add_argument("--queue", metavar="Q")
    p.add_argument("--parent", metavar="RUN_ID", help="children of this run")
    p.add_argument("--since", type=moment, metavar="WHEN",
                   help="started at or after WHEN: a duration ago (30m, 2h, 7d) or an ISO time (UTC if no zone)")
    p.add_argument("--until", type=moment, metavar="WHEN", help="started before WHEN (same forms as --since)")
    p.add_argument("--search", metavar="TEXT", help="run id or dedup key starting with TEXT")
    p.add_argument("--order", default="-created_at", type=_order, metavar="KEY",
                   help=f"one of {', '.join(_ORDERS)}; '-' first for newest first (default -created_at)")
    p.add_argument("--limit", type=_limit, default=20, metavar="N", help="at most N runs (1-1000, default 20)")
    p.add_argument("--cursor", metavar="CURSOR", help="the next page: the cursor the previous page printed")
    p.set_defaults(command=cmd_list)


def moment(text: str) -> datetime:
    """``--since``/``--until``: ``<number><s|m|h|d|w>`` ago, or an ISO 8601 time (UTC when it names no zone)."""
    try:
        return parse_moment(text, what="time")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _order(text: str) -> str:
    if text.lstrip("-") not in _ORDERS:
        raise argparse.ArgumentTypeError(f"{text!r}: use one of {', '.join(_ORDERS)}, with '-' for newest first")
    return text


async def cmd_list(args: argparse.Namespace) -> int:
    """Print runs as a table, then how to get the next page."""
    filtered = any((args.workflow, args.status, args.step, args.queue, args.parent, args.since, args.until,
                    args.search, args.cursor))  # fmt: skip
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        try:
            page = await engine.list_executions(
                workflow=args.workflow, status=args.status, current_step=args.step, queue=args.queue,
                parent_id=args.parent, started_after=args.since, started_before=args.until, search=args.search,
                order_by=args.order, limit=args.limit, cursor=args.cursor,
            )  # fmt: skip
        except ValueError as exc:  # a bad cursor, a step name with a NUL, …: the message says what to pass
            raise UsageError(str(exc)) from None
    if not page.items:
        print("no runs" + (" match" if filtered else f" in {engine.url} yet: try `durable demo`"))
        return 0
    print(_format.execution_table(page.items, _format.Style.for_stream(sys.stdout)))
    if page.next_cursor:
        print(f"  … more: add --cursor {page.next_cursor} (same filters and --order), or raise --limit")
    return 0
