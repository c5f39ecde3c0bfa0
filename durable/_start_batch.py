"""Group commit for ``Engine.start``: concurrent starts of one engine share a database transaction.

A web server calling ``engine.start`` from many requests at once used to pay one commit per run; ``start_many``
paid one per thousand. Now the first start that finds nobody creating goes straight to ``Store.create_run``,
alone, exactly as before (no timer, no added latency). Starts that arrive while a create is in flight queue up,
and as soon as it returns, one task creates everything queued with one ``Store.create_runs`` (one round trip on
PostgreSQL, one transaction on SQLite), then whatever queued meanwhile, and so on. Under load the batches grow
by themselves to what arrives during one commit; with one caller at a time nothing changes.

``create_runs`` gives each run what ``create_run`` called in order would (an existing id returns that run, a
dedup key held by an unfinished run returns it, both also within one batch), so a start cannot tell that it
shared a commit, except by its speed. If a batch fails for a reason other than the database being unreachable,
its runs are created one by one, so that a run the database refuses fails its own start and no other; two in a
row failing the same way mean the cause is shared, and the rest fail with it at once.
"""

from __future__ import annotations

import asyncio
import logging

from history import DatabaseUnavailable, NewRun, RunRecord, Store

log = logging.getLogger("durable.engine")

MAX_BATCH = 1000
"""Runs per shared transaction at most (as ``start_many``'s batches)."""

_Waiter = tuple[NewRun, "asyncio.Future[tuple[RunRecord, bool]]"]


class StartBatcher:
    """Creates the runs of one engine's ``start`` calls, sharing commits among those that overlap."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: list[_Waiter] = []
        self._busy = False  # a create (a caller's own, or the drain task's) is in flight
        self._drain: asyncio.Task[None] | None = None

    async def create(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Create ``new`` as ``Store.create_run`` does: alone when nothing else is being created, else in the next
        shared transaction."""
        if self._busy:
            future: asyncio.Future[tuple[RunRecord, bool]] = asyncio.get_running_loop().create_future()
            self._queue.append((new, future))
            return await future
        self._busy = True
        try:
            return await self._store.create_run(new)
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """The create in flight is done: start a task for the starts that queued meanwhile, or be idle."""
        if self._queue:
            self._drain = asyncio.get_running_loop().create_task(self._create_queued())
        else:
            self._busy = False

    async def _create_queued(self) -> None:
        batch: list[_Waiter] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                waiting = [(new, future) for new, future in batch if not future.done()]  # done: the caller left
                if waiting:
                    await self._create_batch(waiting)
        except BaseException:  # this task was cancelled (the loop is closing): nobody may wait for ever
            for _, future in [*batch, *self._queue]:
                future.cancel()
            self._queue = []
            raise
        finally:
            self._busy = False
            self._drain = None

    async def _create_batch(self, batch: list[_Waiter]) -> None:
        try:
            results = await self._store.create_runs([new for new, _ in batch])
        except DatabaseUnavailable as exc:
            for _, future in batch:
                _settle(future, error=exc)
            return
        except Exception as exc:
            log.info("a shared create of %d runs failed; creating them one by one", len(batch), exc_info=True)
            await self._create_one_by_one(batch, type(exc))
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)

    async def _create_one_by_one(self, batch: list[_Waiter], failure: type[Exception]) -> None:
        """After a failed shared create: each run alone, so that a run the database refuses fails only its own
        start. Two runs in a row failing as the batch did mean a shared cause (the database went away): the rest
        get that error at once rather than a wait each."""
        failed_in_a_row = 0
        for index, (new, future) in enumerate(batch):
            try:
                _settle(future, await self._store.create_run(new))
                failed_in_a_row = 0
            except Exception as exc:
                _settle(future, error=exc)
                failed_in_a_row = failed_in_a_row + 1 if isinstance(exc, failure) else 0
                if failed_in_a_row == 2:
                    for _, rest in batch[index + 1 :]:
                        _settle(rest, error=exc)
                    return

    async def close(self) -> None:
        """Wait for the starts queued so far to be created (the engine is closing)."""
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)


def _settle(
    future: asyncio.Future[tuple[RunRecord, bool]],
    result: tuple[RunRecord, bool] | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():  # its caller was cancelled: the run may exist, as after a cancelled create_run
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
