"""``durable queues list|stats|pause|resume|set``, and parsing ``durable worker --queue NAME=N``."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

import msgspec

from history import UNSET, QueueConfig, QueueStats

from . import _format
from ._engine import Engine


def add_commands(add: Any, common: list[argparse.ArgumentParser]) -> None:
    """Register ``queues`` with its actions."""
    queues = add("queues", help="named queues: list, stats, pause, resume, set limits")
    actions = queues.add_subparsers(metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=common, help="every queue with its settings and counts")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(command=cmd_queues_list)
    stats = actions.add_parser("stats", parents=common, help="one queue's runs by state and its settings")
    stats.add_argument("name", metavar="QUEUE")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(command=cmd_queues_stats)
    for action, helptext in (("pause", "stop claiming the queue's runs (on every worker)"),
                             ("resume", "claim the queue's runs again")):
        p = actions.add_parser(action, parents=common, help=helptext)
        p.add_argument("name", metavar="QUEUE")
        p.set_defaults(command=cmd_queues_pause if action == "pause" else cmd_queues_resume)
    limits = actions.add_parser("set", parents=common, help="limits shared by all workers")
    limits.add_argument("name", metavar="QUEUE")
    limits.add_argument("--global-concurrency", metavar="N|none", type=_optional_int, default=UNSET,
                        help="most runs of the queue executing at once, across workers ('none': no limit)")
    limits.add_argument("--rate", metavar="N/SECONDS|none", type=_rate, default=UNSET,
                        help="most runs started per period, e.g. 100/60 ('none': no limit)")
    limits.set_defaults(command=cmd_queues_set)


def parse_queue_option(text: str) -> tuple[str, int]:
    """``NAME=N`` of ``durable worker --queue``: a queue this worker serves, and its concurrency there."""
    name, sep, count = text.partition("=")
    if not sep:
        return text, 10
    try:
        value = int(count)
    except ValueError:
        value = 0
    if not name or value < 1:
        raise argparse.ArgumentTypeError(f"--queue takes NAME=N with N >= 1 (e.g. ai=5), got {text!r}")
    return name, value


def _optional_int(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'none', got {text!r}")
    return value


def _rate(text: str) -> tuple[int, float] | None:
    if text.lower() == "none":
        return None
    count, _, seconds = text.partition("/")
    try:
        limit, period = int(count), float(seconds or "1")
    except ValueError:
        limit, period = 0, 0.0
    if limit < 1 or period <= 0:
        raise argparse.ArgumentTypeError(f"--rate takes N/SECONDS (e.g. 100/60 for 100 a minute), got {text!r}")
    return limit, period


def _config_cells(config: QueueConfig) -> list[str]:
    rate = f"{config.rate_limit}/{config.rate_period:g}s" if config.rate_limit and config.rate_period else "-"
    return ["paused" if config.paused else "active", str(config.global_concurrency or "-"), rate]


async def cmd_queues_list(args: argparse.Namespace) -> int:
    """Print every queue with its settings and counts."""
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        configs = await engine.queues.list()
        stats = [await engine.queues.stats(config.name) for config in configs]
    if args.json:
        print(msgspec.json.encode([msgspec.to_builtins(s) for s in stats]).decode())
        return 0
    if not stats:
        print("no queues yet: runs go to queue 'default' unless started with queue=...")
        return 0
    rows = [[s.name, *_config_cells(s.config), str(s.running), str(s.pending), str(s.scheduled), str(s.waiting)]
            for s in stats]
    headers = ["queue", "state", "global", "rate", "running", "pending", "scheduled", "waiting"]
    print(_format.table(headers, rows, _format.Style.for_stream(sys.stdout)))
    return 0


async def cmd_queues_stats(args: argparse.Namespace) -> int:
    """Print one queue's counts and settings."""
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        stats = await engine.queues.stats(args.name)
    if args.json:
        print(msgspec.json.encode(msgspec.to_builtins(stats)).decode())
        return 0
    print(_stats_text(stats))
    return 0


def _stats_text(stats: QueueStats) -> str:
    state, global_limit, rate = _config_cells(stats.config)
    age = "-" if stats.oldest_pending_age is None else f"{stats.oldest_pending_age:.1f} s"
    lines = [
        f"Queue {stats.name} ({state})",
        f"  running    {stats.running}",
        f"  pending    {stats.pending}   (ready now; oldest waited {age})",
        f"  scheduled  {stats.scheduled}   (delayed starts)",
        f"  waiting    {stats.waiting}   (sleeping or waiting for events, input or children)",
        f"  limits     global concurrency {global_limit}, rate {rate}",
    ]
    return "\n".join(lines)


async def cmd_queues_pause(args: argparse.Namespace) -> int:
    """Pause a queue."""
    async with Engine(args.database_url, worker=False) as engine:
        await engine.queues.pause(args.name)
    print(f"queue {args.name} paused: workers claim none of its runs until `durable queues resume {args.name}`")
    return 0


async def cmd_queues_resume(args: argparse.Namespace) -> int:
    """Resume a queue."""
    async with Engine(args.database_url, worker=False) as engine:
        await engine.queues.resume(args.name)
    print(f"queue {args.name} resumed")
    return 0


async def cmd_queues_set(args: argparse.Namespace) -> int:
    """Set a queue's shared limits."""
    options: dict[str, Any] = {}
    if args.global_concurrency is not UNSET:  # a number, or None for 'none'
        options["global_concurrency"] = args.global_concurrency
    if args.rate is None:
        options.update(rate_limit=None, per=None)
    elif args.rate is not UNSET:
        options["rate_limit"], seconds = args.rate
        options["per"] = timedelta(seconds=seconds)
    async with Engine(args.database_url, worker=False) as engine:
        config = await engine.queues.configure(args.name, **options)
    state, global_limit, rate = _config_cells(config)
    print(f"queue {config.name}: {state}, global concurrency {global_limit}, rate {rate}")
    return 0
