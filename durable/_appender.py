"""Group commit: appends from every run a worker drives share one store call (one transaction on Postgres).

A flush starts as soon as the writer is idle, never on a timer: at low load each append goes out alone at once;
under load, everything that arrived during a flush goes out together in the next one (DESIGN.md, performance
principles). ``max_flushes`` flushes may be in flight at once, to overlap round trips on a pooled store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from history import Append, Store


class GroupAppender:
    """Batches ``Append``s across runs; ``await submit(item)`` returns once the item is committed."""

    def __init__(self, store: Store, *, max_batch: int = 500, max_flushes: int = 2) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: list[tuple[Append, asyncio.Future[None]]] = []
        self._flushing = 0
        self._max_flushes = max_flushes
        self.flushes = 0
        self.items = 0

    async def submit(self, item: Append) -> None:
        """Append ``item``; raises ``LeaseLost``/``HistoryConflict`` (or the store's error) if refused."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._flushing < self._max_flushes:
            self._flushing += 1
            asyncio.get_running_loop().create_task(self._flush_while_queued())
        await future

    async def _flush_while_queued(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                await self._flush(batch)
        finally:
            self._flushing -= 1

    async def _flush(self, batch: Sequence[tuple[Append, asyncio.Future[None]]]) -> None:
        self.flushes += 1
        self.items += len(batch)
        try:
            outcomes = await self._store.append([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)
