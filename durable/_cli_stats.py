"""``durable stats [--workflow W] [--period 24h] [--json]``: runs of a period by workflow, with success rate and
durations (``engine.get_metrics``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from . import _format
from ._durations import FORMS, parse_duration
from ._engine import Engine
from ._metrics import RunMetrics


def add_commands(add: Any, common: list[argparse.ArgumentParser]) -> None:
    """Register ``stats``."""
    p = add("stats", help="runs of the last period by workflow: counts, success rate, durations")
    p.add_argument("--workflow", metavar="W", help="only this workflow")
    p.add_argument("--period", type=period_option, default="24h", metavar="D",
                   help="how far back, by creation time: 30s, 15m, 24h, 7d, 2w (default 24h)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON (durations in ms)")
    p.set_defaults(command=cmd_stats)


def period_option(text: str) -> str:
    """Check a duration option at parse time, so a bad one is a usage error naming the accepted forms."""
    try:
        parse_duration(text, forms=FORMS)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


async def cmd_stats(args: argparse.Namespace) -> int:
    """Print the metrics of the period as a table, one row per workflow and a total."""
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        metrics = await engine.get_metrics(args.workflow, period=args.period)
    if args.json:
        document = msgspec.json.encode(metrics)
        print(msgspec.json.format(document, indent=2).decode())
        return 0
    period = args.period.strip()
    if metrics.total == 0:
        which = f"of {args.workflow} " if args.workflow else ""
        print(f"no runs {which}created in the last {period} (since {_format.when(metrics.since)})")
        return 0
    style = _format.Style.for_stream(sys.stdout)
    print(style(f"Runs created in the last {period} (since {_format.when(metrics.since)})", "bold"))
    rows = [_row(name, m) for name, m in metrics.by_workflow.items()]
    if len(rows) != 1:
        rows.append(_row(metrics.workflow or "(all)", metrics))
    headers = ["workflow", "total", "completed", "failed", "cancelled", "running", "success", "avg", "p50", "p95",
               "p99"]
    print(_format.table(headers, rows, style))
    return 0


def _row(name: str, m: RunMetrics) -> list[_format.Cell]:
    rate = "-" if m.success_rate is None else f"{m.success_rate:.1%}"
    return [name, str(m.total), (str(m.completed), "green" if m.completed else None),
            (str(m.failed), "red" if m.failed else None), str(m.cancelled), str(m.running), rate,
            _format.millis(m.avg_ms), _format.millis(m.p50_ms), _format.millis(m.p95_ms), _format.millis(m.p99_ms)]
