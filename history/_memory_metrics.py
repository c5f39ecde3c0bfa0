"""``MemoryStore``'s run metrics and retention (mixed into it): the reference the SQL stores are tested against."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime

from ._events import RecordedEvent
from ._metrics import RunStats, check_cutoffs, compute_run_stats, eligible
from ._records import Message, PendingInput, RunRecord


class MemoryMetrics:
    """``run_metrics``, ``count_finished`` and ``delete_finished`` over ``MemoryStore``'s dictionaries."""

    clock: Callable[[], datetime]
    _runs: dict[str, RunRecord]
    _events: dict[str, list[RecordedEvent]]
    _inbox: dict[int, Message]
    _inputs: dict[tuple[str, str], PendingInput]
    _provided: set[tuple[str, str]]
    _lock: asyncio.Lock

    async def run_metrics(self, workflow: str | None, since: datetime) -> list[RunStats]:
        """Counts and durations of the runs created at or after ``since`` (see ``history._metrics``)."""
        return compute_run_stats(self._runs.values(), workflow, since)

    async def count_finished(self, before: Mapping[str, datetime]) -> dict[str, int]:
        """How many runs ``delete_finished`` would delete, in all, by status."""
        check_cutoffs(before)
        counts: dict[str, int] = {}
        for run in self._runs.values():
            if eligible(run, before):
                counts[run.status] = counts.get(run.status, 0) + 1
        return counts

    async def delete_finished(self, before: Mapping[str, datetime], *, limit: int) -> dict[str, int]:
        """Delete up to ``limit`` finished runs that finished before their status' cut-off, with every row of
        theirs; return how many of each status went."""
        check_cutoffs(before)
        counts: dict[str, int] = {}
        async with self._lock:
            chosen = [run for run in self._runs.values() if eligible(run, before)][: max(limit, 0)]
            for run in chosen:
                self._forget_run(run.id)
                counts[run.status] = counts.get(run.status, 0) + 1
        return counts

    def _forget_run(self, run_id: str) -> None:
        """Every per-run structure, in one place: a new one gets its line here (and in the SQL stores' list)."""
        del self._runs[run_id]
        self._events.pop(run_id, None)
        for message_id in [m.id for m in self._inbox.values() if m.run_id == run_id]:
            del self._inbox[message_id]
        for key in [k for k in self._inputs if k[0] == run_id]:
            del self._inputs[key]
        self._provided = {k for k in self._provided if k[0] != run_id}
