"""``durable cleanup``: delete old finished runs with their histories (``engine.cleanup``), and parsing
``durable worker --retention completed=30d,failed=90d``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from ._cli import UsageError
from ._cli_stats import period_option
from ._engine import Engine
from ._retention import Retention


def add_commands(add: Any, common: list[argparse.ArgumentParser]) -> None:
    """Register ``cleanup``."""
    p = add("cleanup", help="delete finished runs older than an age, with their histories (retention)")
    for kind in ("completed", "failed", "cancelled"):
        p.add_argument(f"--{kind}-older-than", type=period_option, metavar="D",
                       help=f"delete {kind} runs that finished more than D ago (30s, 15m, 24h, 7d, 2w)"
                       + (" (continued runs count as completed)" if kind == "completed" else ""))
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    p.add_argument("--batch-size", type=_batch_size, default=1000, metavar="N",
                   help="runs deleted per transaction (default 1000)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.set_defaults(command=cmd_cleanup)


def _batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def retention_option(text: str) -> Retention:
    """``durable worker --retention completed=30d,failed=90d[,cancelled=7d][,every=1h][,batch=1000]``."""
    try:
        return Retention.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def cmd_cleanup(args: argparse.Namespace) -> int:
    """Delete (or with ``--dry-run`` count) the runs older than the ages given; print what it did."""
    ages = {"completed_older_than": args.completed_older_than, "failed_older_than": args.failed_older_than,
            "cancelled_older_than": args.cancelled_older_than}
    if all(age is None for age in ages.values()):
        raise UsageError(
            "cleanup deletes nothing without an age: give --completed-older-than, --failed-older-than and/or "
            "--cancelled-older-than (e.g. --completed-older-than 30d --failed-older-than 90d)"
        )
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        report = await engine.cleanup(**ages, batch_size=args.batch_size, dry_run=args.dry_run)
    if args.json:
        print(msgspec.json.encode({**msgspec.to_builtins(report), "total": report.total}).decode())
        return 0
    given = ", ".join(f"{name.removesuffix('_older_than')} older than {age}" for name, age in ages.items() if age)
    print(f"{report.describe()} from {engine.url} ({given})", file=sys.stdout)
    if report.dry_run and report.total:
        print("nothing was deleted (--dry-run): run again without it to delete them")
    return 0
