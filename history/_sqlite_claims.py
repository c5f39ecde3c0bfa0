"""How a SQLite claim chooses its runs when queues are paused or limited (the part of ``_sqlite.py`` that mirrors
``MemoryStore.claim``'s per-queue allowances)."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from . import _sqlite_queries as q

_json = msgspec.json.Encoder()


def by_queue(args: tuple[Any, ...], queue: str | None) -> tuple[Any, ...]:
    """``args`` with the queue appended, for the ``by_queue`` form of a statement."""
    return args if queue is None else (*args, queue)


def choose(db: sqlite3.Connection, now: int, names: bytes, limit: int, queue: str | None) -> dict[str, int]:
    """The ids of the runs to claim, in claim order, each with the due time it was ordered by (microseconds), chosen
    as ``MemoryStore.claim`` does: the ready runs of every queue by priority then due time, skipping those a limited
    queue cannot take now (no room left under its global concurrency; for a first start, no start left under its
    rate limit), up to ``limit``.

    Runs of queues neither paused nor limited come from one statement; each limited queue with ready runs adds
    its first ``limit`` of each kind (never started, started before, expired lease): enough, since no more than
    ``limit`` of a kind can be taken. Runs inside the write transaction (``BEGIN IMMEDIATE``), so the counts
    cannot go stale before the runs are leased.
    """
    held = [row for row in db.execute(q.HELD_QUEUES) if queue is None or row[0] == queue]
    args = by_queue((names, now, limit), queue)
    if held:
        args = (*args, _json.encode([row[0] for row in held]))
    candidates = db.execute(q.claim_candidates(queue is not None, exclude=bool(held)), args).fetchall()
    allowance: dict[str, tuple[float, float]] = {}
    for name, paused, concurrency, rate, period in held:
        if paused:
            continue
        found = db.execute(q.QUEUE_CANDIDATES, (names, now, limit, name)).fetchall()
        if not found:
            continue
        room: float = float("inf")
        starts: float = float("inf")
        if concurrency is not None:
            room = concurrency - db.execute(q.QUEUE_LEASES, (name, now)).fetchone()[0]
        if rate is not None and period is not None:
            since = now - round(period * 1e6)
            starts = rate - db.execute(q.QUEUE_STARTS, (name, since)).fetchone()[0]
        allowance[name] = (room, starts)
        candidates += found
    candidates.sort(key=lambda c: (-c[2], c[3], c[4], c[0]))  # priority, due time, creation, id
    chosen: dict[str, int] = {}
    for run_id, run_queue, _priority, due, _created, fresh in candidates:
        if len(chosen) >= limit:
            break
        if run_queue in allowance:
            room, starts = allowance[run_queue]
            if room <= 0 or (fresh and starts <= 0):
                continue
            allowance[run_queue] = (room - 1, starts - 1 if fresh else starts)
        chosen[run_id] = due
    return chosen
