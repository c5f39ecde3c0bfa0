"""Live notices across processes on SQLite: while a process has subscribers, it tails the events table.

SQLite cannot tell another process that a history grew (no LISTEN/NOTIFY), so ``SqliteStore.subscribe_live``
also starts a *tail*: every ``TAIL_EVERY`` seconds one query reads the ``rowid``s of the events appended since the
last look, with their run and sequence number, and the hub is told which runs grew (``notify_appended``); the
subscription reads the events themselves, as with every other notice. That makes ``engine.subscribe(workflow=…)``,
``subscribe()`` and ``durable watch`` without a run id work beside workers in other processes, as on PostgreSQL.

Why ``rowid`` is a cursor: SQLite gives a new row the largest ``rowid`` plus one, and writers take turns (one write
transaction at a time), so rows commit in ``rowid`` order and a reader that has seen up to ``rowid`` N has seen every
committed row below it. Two things lower the largest ``rowid``: a retention job deleting the newest events of the
database (possible only when nothing was appended since its cut-off) and ``VACUUM`` (which renumbers rows). The
tail notices when the largest ``rowid`` falls below its cursor and goes on from there; events appended in the
same tick as such a deletion can be missed by workflow and all-runs subscriptions (a one-run subscription still
reads them by its own poll).

Costs: nothing while nobody subscribes. While some subscription is open in the process, one indexed range read
per tick (the ``rowid`` b-tree from the cursor: the events since the last tick, not the table), on the store's
thread between its writes. Other processes pay nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from ._errors import DurableError
from ._live import StepNotice
from ._notify import AppendedListener, InProcessLive, once

log = logging.getLogger("durable.store")

TAIL_EVERY = 0.25
"""Seconds between two looks at the events table while this process has subscribers."""

TAIL_BATCH = 10_000
"""Events read per look at most; more are read at the next look, at once."""

_TOP = "SELECT coalesce(max(rowid), 0) FROM durable_events"
_SINCE = "SELECT rowid, run_id, seq FROM durable_events WHERE rowid > ? ORDER BY rowid LIMIT ?"

Grown = dict[str, tuple[int, int]]
"""Run id -> (last seq, first seq) of the events a look found."""


def tail_events(db: sqlite3.Connection, cursor: int) -> tuple[int, Grown, bool]:
    """The runs whose histories grew after ``rowid`` ``cursor``: (new cursor, runs, more to read at once)."""
    top = db.execute(_TOP).fetchone()[0]
    if top < cursor:  # the newest events were deleted (retention) or renumbered (VACUUM): go on from the top
        return top, {}, False
    grown: Grown = {}
    count = 0
    for rowid, run_id, seq in db.execute(_SINCE, (cursor, TAIL_BATCH)):
        cursor = rowid
        count += 1
        seen = grown.get(run_id)
        grown[run_id] = (seq, seq if seen is None else seen[1])
    return cursor, grown, count == TAIL_BATCH


class SqliteLive(InProcessLive):
    """``subscribe_live`` of ``SqliteStore``: the hub's notices of this process, and a tail of the events table
    for the appends of other processes while anyone subscribes (a mixin: it uses the store's thread)."""

    _tail_task: asyncio.Task[None] | None = None
    _tail_users = 0

    _call: Callable[..., Any]
    _connection: Callable[[], sqlite3.Connection]

    async def subscribe_live(
        self, on_appended: AppendedListener, on_step_started: Callable[[StepNotice], None]
    ) -> Callable[[], None]:
        """Listen to this process's appends and step starts, and (by the tail) to other processes' appends."""
        if self._tail_task is None:
            # The cursor is read before this returns: every append committed afterwards is above it.
            cursor = await self._call(self._tail_top)
            self._tail_task = asyncio.get_running_loop().create_task(self._tail(cursor))
        self._tail_users += 1
        stop_hub = self.hub.subscribe_live(on_appended, on_step_started)

        def stop() -> None:
            stop_hub()
            self._tail_users = max(0, self._tail_users - 1)  # (0 already if the store was closed meanwhile)
            if self._tail_users == 0:
                self._stop_tail()

        return once(stop)

    def _stop_tail(self) -> None:
        task, self._tail_task = self._tail_task, None
        self._tail_users = 0
        if task is not None:
            task.cancel()

    def _tail_top(self) -> int:
        return int(self._connection().execute(_TOP).fetchone()[0])

    def _tail_look(self, cursor: int) -> tuple[int, Grown, bool]:
        return tail_events(self._connection(), cursor)

    async def _tail(self, cursor: int) -> None:
        more = False
        while True:
            if not more:
                await asyncio.sleep(TAIL_EVERY)
            try:
                cursor, grown, more = await self._call(self._tail_look, cursor)
            except (sqlite3.Error, DurableError):  # busy, or the store is closing: look again at the next tick
                log.debug("sqlite store: reading new events for subscribers failed; retrying", exc_info=True)
                more = False
                continue
            for run_id, (last_seq, first_seq) in grown.items():
                self.hub.notify_appended(run_id, last_seq, first_seq)
