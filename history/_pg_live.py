"""Live events on PostgreSQL: relaying appends and step starts between processes (a mixin of ``PostgresStore``).

Three NOTIFY channels, heard on the store's LISTEN connection (``_postgres.PostgresStore._listen``); the first
two only once the store has had a subscriber, so that a plain worker is not woken by every other append:

* ``durable_events`` (payload: lines ``"run_id first_seq last_seq"``, one per run): sent by the trigger
  ``durable_events_appended`` (``migrations/postgres/0008_live.sql``) in every transaction that appends events
  while some process watches, the lines of a statement packed into as few NOTIFYs as fit. Relayed to
  ``hub.notify_appended``; subscribers then read the new events themselves. A process watches by holding the
  advisory lock ``WATCH_LOCK_KEY`` (exclusive, on a connection of its own) while it has subscribers; appends try
  it shared and notify when that fails.
* ``durable_live`` (payload: lines, each a ``StepNotice`` as JSON): step attempts that started, sent by the
  worker's process in batches packed into as few NOTIFYs as fit, fire and forget: the next batch leaves as soon
  as the previous one is sent (group commit's rule, never a timer), committed without waiting for the WAL flush
  (a notice is not data).
* ``durable_watch`` (empty payload): a process has subscribers to step starts. Workers send ``durable_live``
  notices only while some process announced a watch within ``WATCH_TTL`` seconds; a watching process announces
  when its first subscriber starts and every ``WATCH_INTERVAL`` seconds after. So the step path pays nothing for
  live notices (not even a round trip) while nobody watches.

As with the other channels, a process ignores the echo of its own NOTIFYs (its hub heard them first).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import _pg_queries as q
from ._live import MAX_NOTICE_BYTES, StepNotice, decode_notice, encode_notice
from ._notify import AppendedListener, Hub, once
from ._records import RunRecord

log = logging.getLogger("durable.history")

WATCH_INTERVAL = 10.0
"""Seconds between two announcements of a process that watches step starts."""

WATCH_TTL = 3 * WATCH_INTERVAL
"""Seconds a worker keeps sending step-start notices after the last announcement it heard."""

LIVE_CHANNELS = (q.EVENTS_CHANNEL, q.LIVE_CHANNEL, q.WATCH_CHANNEL)
"""The channels this mixin listens on."""


class PostgresLive:
    """The live-event half of ``PostgresStore``: hub relays, batched step-start NOTIFYs, watch announcements."""

    hub: Hub
    _listener: Any  # the LISTEN connection (None while reconnecting)

    @property
    def _db(self) -> Any:
        """The store's connection pool (``PostgresStore._db``)."""
        raise NotImplementedError

    def _on_notify(self, _conn: Any, pid: int, channel: str, payload: str) -> None:
        """The LISTEN callback (``PostgresStore._on_notify``)."""
        raise NotImplementedError

    async def _open_connection(self, name: str) -> Any:
        """A connection outside the pool (``PostgresStore._open_connection``)."""
        raise NotImplementedError

    def _live_init(self) -> None:
        self._live_queue: list[str] = []
        self._live_task: asyncio.Task[None] | None = None
        self._watched_until = 0.0  # time.monotonic() until which another process watches step starts
        self._watchers = 0
        self._announce_task: asyncio.Task[None] | None = None
        self._live_listening = False  # LISTENing to the events and step-start channels
        self._live_lock = asyncio.Lock()
        self._watch_conn: Any = None  # holds (or waits for) the watch lock while this store has subscribers
        self._watch_task: asyncio.Task[Any] | None = None
        self._rewatch_task: asyncio.Task[None] | None = None

    async def _live_close(self) -> None:
        self._watchers = 0
        self._release_watch_lock()
        tasks = [t for t in (self._announce_task, self._live_task, self._rewatch_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._announce_task = self._live_task = self._rewatch_task = None
        self._live_queue = []

    def _created(self, results: Sequence[tuple[RunRecord, bool]]) -> None:
        """Announce the ``RunStarted`` event (seq 1) of each run just created, in this process."""
        for run, created in results:
            if created:
                self.hub.notify_appended(run.id, 1, 1)

    async def _learn_watch(self) -> None:
        """At open: whether some process watches already (its next announcement may be seconds away), so that
        the step starts of a worker started during a watch are sent at once."""
        if await self._db.fetchval(q.WATCH_LOCK_HELD, q.WATCH_LOCK_KEY):
            self._watched_until = time.monotonic() + WATCH_TTL

    # -- from other processes ----------------------------------------------------------------------------------

    def _on_live_notify(self, channel: str, payload: str) -> None:
        """Relay a NOTIFY of one of ``LIVE_CHANNELS`` (from another process) to this process's hub."""
        if channel == q.EVENTS_CHANNEL:
            for line in payload.split("\n"):  # one line per run (the trigger skips run ids with a line break)
                parts = line.rsplit(" ", 2)  # run ids may hold spaces; the numbers cannot
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    self.hub.notify_appended(parts[0], int(parts[2]), int(parts[1]))
        elif channel == q.LIVE_CHANNEL:
            notices = [notice for line in payload.split("\n") if (notice := decode_notice(line)) is not None]
            self.hub.notify_step_started(notices)
        else:
            self._watched_until = time.monotonic() + WATCH_TTL

    # -- step starts ---------------------------------------------------------------------------------------------

    def notify_step_started(self, notices: Sequence[StepNotice]) -> None:
        """Hand the notices to this process's subscribers and, while another process watches, NOTIFY them."""
        self.hub.notify_step_started(notices)
        if time.monotonic() >= self._watched_until:
            return
        for notice in notices:
            payload = encode_notice(notice)
            if payload is not None:
                self._live_queue.append(payload)
        if self._live_queue and self._live_task is None:
            self._live_task = asyncio.get_running_loop().create_task(self._flush_live())

    async def _flush_live(self) -> None:
        """Send what is queued, then what queued meanwhile, until nothing is left (no timer)."""
        try:
            while self._live_queue:
                batch, self._live_queue = self._live_queue, []
                try:
                    await self._db.execute(q.NOTIFY_LIVE, _pack(batch))
                except Exception as exc:  # best effort: a lost notice only delays a subscriber's step_started
                    log.debug("could not send %d step-start notice(s): %s", len(batch), exc)
        finally:
            self._live_task = None

    async def subscribe_live(
        self, on_appended: AppendedListener, on_step_started: Callable[[StepNotice], None]
    ) -> Callable[[], None]:
        """Listen to appends and step starts here and in other processes. The first subscription LISTENs to the
        live channels (from then on, for the life of the store: a process that never subscribes, such as a plain
        worker, is never woken by other processes' appends); while there are subscriptions the store holds the
        watch lock (so appends notify; held before this returns), and every watch is announced (committed before
        this returns, so the workers of a run started afterwards send its step starts) and again every
        ``WATCH_INTERVAL`` seconds while it lasts."""
        async with self._live_lock:  # a second subscriber waits until the first one's LISTEN is in place
            if not self._live_listening:
                self._live_listening = True
                if self._listener is not None:  # else _relisten will listen to every channel
                    for channel in (q.EVENTS_CHANNEL, q.LIVE_CHANNEL):
                        await self._listener.add_listener(channel, self._on_notify)
            stop_hub = self.hub.subscribe_live(on_appended, on_step_started)
            self._watchers += 1
            try:
                await self._hold_watch_lock()
                await self._db.execute(q.ANNOUNCE_WATCH)
            except BaseException:
                stop_hub()
                self._watchers -= 1
                if self._watchers == 0:
                    self._release_watch_lock()
                raise
        if self._announce_task is None:
            self._announce_task = asyncio.get_running_loop().create_task(self._announce_while_watched())

        def stop() -> None:
            stop_hub()
            self._watchers = max(0, self._watchers - 1)  # (0 already if the store was closed meanwhile)
            if self._watchers == 0:
                self._release_watch_lock()
                if self._announce_task is not None:
                    self._announce_task.cancel()
                    self._announce_task = None

        return once(stop)

    async def _hold_watch_lock(self) -> None:
        """Ask for the watch lock on a connection of its own (it waits while appends hold it shared), then wait
        until some subscriber holds it: from then on every append notifies (0008_live.sql)."""
        if self._watch_conn is None:
            conn = self._watch_conn = await self._open_connection("durable-watch")
            task = asyncio.get_running_loop().create_task(conn.execute(q.TAKE_WATCH_LOCK, q.WATCH_LOCK_KEY))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: released by closing
            self._watch_task = task
            conn.add_termination_listener(self._on_watch_lost)
        while not await self._db.fetchval(q.WATCH_LOCK_HELD, q.WATCH_LOCK_KEY):
            if self._watch_task is not None and self._watch_task.done():
                self._watch_task.result()  # the request failed: say why
            # Appends hold the lock shared for a commit's time (the request waits for them, and they notify
            # meanwhile), or another process's subscriber holds it: a few milliseconds at subscription time.
            await asyncio.sleep(0.005)

    def _on_watch_lost(self, conn: Any) -> None:
        """The watch connection closed without ``_release_watch_lock`` (the server went away): take the lock again
        in the background (one-run subscriptions poll meanwhile), with backoff, while there are subscribers."""
        if conn is not self._watch_conn:
            return
        self._watch_conn = self._watch_task = None
        log.warning("lost the watch connection to the database; appends do not notify until it is back")
        self._rewatch_task = asyncio.get_running_loop().create_task(self._rewatch())

    async def _rewatch(self) -> None:
        delay = 0.1
        while self._watchers > 0 and self._watch_conn is None:
            try:
                async with self._live_lock:
                    await self._hold_watch_lock()
                return
            except Exception as exc:  # still down: try again later
                log.debug("cannot take the watch lock yet, retrying in %.1f s: %s", delay, exc)
                self._release_watch_lock()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _release_watch_lock(self) -> None:
        """Let the watch lock go (closing its connection ends the request or the hold): appends stop notifying."""
        self._watch_task = None  # it ends with the connection (its error is retrieved by its callback)
        conn, self._watch_conn = self._watch_conn, None
        if conn is not None:
            conn.terminate()

    def _live_channels(self) -> tuple[str, ...]:
        """The live channels the LISTEN connection hears: the watch announcements always, the events and step
        starts once this store has had a subscriber."""
        if self._live_listening:
            return LIVE_CHANNELS
        return (q.WATCH_CHANNEL,)

    async def _announce_while_watched(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                await self._db.execute(q.ANNOUNCE_WATCH)
            except Exception as exc:  # the next one may pass; workers keep sending for WATCH_TTL meanwhile
                log.debug("could not announce the watch of step starts: %s", exc)


def _pack(payloads: list[str]) -> list[str]:
    """Notice payloads (JSON, so without line breaks) joined by line breaks into as few NOTIFY payloads as fit."""
    packed: list[str] = []
    size = MAX_NOTICE_BYTES  # forces a new payload for the first line
    for payload in payloads:
        length = len(payload.encode())
        if size + 1 + length >= MAX_NOTICE_BYTES:
            packed.append(payload)
            size = length
        else:
            packed[-1] += "\n" + payload
            size += 1 + length
    return packed
