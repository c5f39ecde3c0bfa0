"""Retention: delete finished runs older than a chosen age, with their histories and every other row of theirs.

``engine.cleanup(...)`` does it once; ``Retention(...)`` given to a worker (``Engine(retention=...)``,
``Worker(retention=...)``, ``durable worker --retention completed=30d``) does it periodically, in the background.

The work goes in batches of ``batch_size`` runs, each one short transaction of its own (``Store.delete_finished``),
so no lock is held for long and workers keep appending meanwhile. Unfinished runs are never touched. Age is
measured on ``finished_at``; a run that continued as a new run (``ctx.continue_as_new``) counts as completed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from history import CANCELLED, COMPLETED, CONTINUED, FAILED

from ._durations import FORMS, format_duration, parse_duration

if TYPE_CHECKING:
    from history import Store

log = logging.getLogger("durable.retention")

_KINDS = ("completed", "failed", "cancelled")
_STATUSES = {"completed": (COMPLETED, CONTINUED), "failed": (FAILED,), "cancelled": (CANCELLED,)}
"""The run statuses each age applies to: "completed" covers runs that continued as a new run."""


class CleanupReport(msgspec.Struct, frozen=True):
    """What a cleanup deleted (or, with ``dry_run``, would delete): runs by status, and in how many batches.

    ``completed`` includes runs that continued as a new run. Each run went with its whole history and its other
    rows (inbox messages, inputs).
    """

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    dry_run: bool = False
    batches: int = 0
    """Transactions used (0 for a dry run, which only counts)."""

    @property
    def total(self) -> int:
        """Runs deleted (or that would be), of every status."""
        return self.completed + self.failed + self.cancelled

    def describe(self) -> str:
        """One line for people and logs: ``deleted 12 runs (10 completed, 2 failed, 0 cancelled) in 1 batch``."""
        verb = "would delete" if self.dry_run else "deleted"
        counts = f"{self.completed} completed, {self.failed} failed, {self.cancelled} cancelled"
        batches = "" if self.dry_run else f" in {self.batches} batch{'es' if self.batches != 1 else ''}"
        return f"{verb} {self.total} run{'s' if self.total != 1 else ''} ({counts}){batches}"


def _check_batch_size(batch_size: object) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return batch_size


@dataclass(frozen=True)
class Retention:
    """A worker's periodic cleanup: every ``every``, delete the runs that finished longer ago than their
    status' age (``None``: keep runs of that status forever).

    Ages and ``every`` are ``timedelta`` objects or text such as ``"30d"`` (see ``engine.cleanup``). Every worker
    given a ``Retention`` runs the job (the first pass at its start); several workers doing it at once share the
    work rather than repeat it (each batch skips the runs another job holds), so no election is needed.

    Example: ``Engine(retention=Retention(completed=timedelta(days=30), failed=timedelta(days=90)))``.
    """

    completed: timedelta | str | None = None
    failed: timedelta | str | None = None
    cancelled: timedelta | str | None = None
    every: timedelta | str = field(default=timedelta(hours=1))
    batch_size: int = 1000

    def __post_init__(self) -> None:
        for kind in _KINDS:
            value = getattr(self, kind)
            if value is not None:
                object.__setattr__(self, kind, parse_duration(value, what=f"Retention {kind}"))
        object.__setattr__(self, "every", parse_duration(self.every, what="Retention every"))
        _check_batch_size(self.batch_size)
        if all(getattr(self, kind) is None for kind in _KINDS):
            raise ValueError("Retention needs at least one of completed=, failed=, cancelled= (an age to keep runs)")

    @classmethod
    def parse(cls, text: str) -> Retention:
        """``completed=30d,failed=90d[,cancelled=7d][,every=1h][,batch=1000]``, as ``durable worker --retention``
        takes it.

        Raises:
            ValueError: an unknown key, a missing ``=``, or a bad duration; the message names the accepted keys.
        """
        keys = (*_KINDS, "every", "batch")
        options: dict[str, object] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in keys:
                raise ValueError(
                    f"invalid retention setting {part!r}: use KEY=VALUE with KEY one of {', '.join(keys)} "
                    f"(e.g. completed=30d,failed=90d,every=1h)"
                )
            if key == "batch":
                options["batch_size"] = int(value) if value.strip().isdigit() else value
            else:
                options[key] = parse_duration(value.strip(), what=f"retention {key}", forms=FORMS)
        return cls(**options)  # type: ignore[arg-type]  # each value is checked by __post_init__

    def ages(self) -> dict[str, timedelta]:
        """The ages given, by kind (``completed``, ``failed``, ``cancelled``)."""
        return {kind: age for kind in _KINDS if isinstance(age := getattr(self, kind), timedelta)}

    def describe(self) -> str:
        """``completed after 30d, failed after 90d, every 1h``."""
        ages = ", ".join(f"{kind} after {format_duration(age)}" for kind, age in self.ages().items())
        return f"{ages}, every {format_duration(self.interval)}"

    @property
    def interval(self) -> timedelta:
        """``every`` as a ``timedelta``."""
        return parse_duration(self.every, what="Retention every")


def cutoffs(now: datetime, ages: Mapping[str, timedelta]) -> dict[str, datetime]:
    """Store cut-offs (finished status -> time) for ages by kind, measured back from ``now``."""
    return {status: now - age for kind, age in ages.items() for status in _STATUSES[kind]}


def _add(report: CleanupReport, counts: Mapping[str, int], dry_run: bool, batches: int) -> CleanupReport:
    return CleanupReport(
        completed=report.completed + counts.get(COMPLETED, 0) + counts.get(CONTINUED, 0),
        failed=report.failed + counts.get(FAILED, 0),
        cancelled=report.cancelled + counts.get(CANCELLED, 0),
        dry_run=dry_run,
        batches=report.batches + batches,
    )


async def cleanup(
    store: Store, now: datetime, ages: Mapping[str, timedelta], batch_size: int, dry_run: bool
) -> CleanupReport:
    """Delete (or count) the runs older than ``ages`` at ``now``, ``batch_size`` per transaction, until a batch
    comes back short: the eligible runs are gone, or the rest are held by another job that is deleting them."""
    before = cutoffs(now, ages)
    if dry_run:
        return _add(CleanupReport(dry_run=True), await store.count_finished(before), True, 0)
    report = CleanupReport()
    while True:
        counts = await store.delete_finished(before, limit=batch_size)
        report = _add(report, counts, False, 1)
        if sum(counts.values()) < batch_size:
            return report


class RetentionClient:
    """Mixed into ``Engine``: ``cleanup``."""

    store: Store
    _clock: Callable[[], datetime]

    def _require_open(self) -> None:  # pragma: no cover - provided by Engine
        raise NotImplementedError

    async def cleanup(
        self,
        *,
        completed_older_than: str | timedelta | None = None,
        failed_older_than: str | timedelta | None = None,
        cancelled_older_than: str | timedelta | None = None,
        batch_size: int = 1000,
        dry_run: bool = False,
    ) -> CleanupReport:
        """Delete the runs that finished longer ago than the age given for their status, with their histories,
        inbox messages and inputs; runs of a status without an age, and unfinished runs, stay.

        Ages are measured on the runs' finish time: ``"30s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"2w"`` or a
        ``timedelta``. Runs that continued as a new run count as completed. The runs go ``batch_size`` per
        transaction (no long locks); with ``dry_run`` nothing is deleted and the report gives the same counts.
        A run whose parent is deleted keeps its ``parent_id`` (the parent is then not found).

        Raises:
            ValueError: no age given, a bad duration, or a bad ``batch_size``.
        """
        self._require_open()
        given = {"completed": completed_older_than, "failed": failed_older_than, "cancelled": cancelled_older_than}
        ages = {k: parse_duration(v, what=f"{k}_older_than") for k, v in given.items() if v is not None}
        if not ages:
            raise ValueError(
                "cleanup needs at least one of completed_older_than=, failed_older_than=, cancelled_older_than= "
                "(e.g. completed_older_than='30d')"
            )
        return await cleanup(self.store, self._clock(), ages, _check_batch_size(batch_size), dry_run)


class RetentionJob:
    """A worker's background task running ``cleanup`` every ``retention.every``; a failure is logged and the
    next pass tries again, so a database error never stops the worker.

    ``passes`` counts the passes done (failed ones too) and ``last`` is the last report; ``wait_pass`` waits
    for the next pass to end (for tests and tools).
    """

    def __init__(self, store: Store, retention: Retention, clock: Callable[[], datetime], worker_id: str) -> None:
        self.store = store
        self.retention = retention
        self.clock = clock
        self.worker_id = worker_id
        self.passes = 0
        self.failures = 0
        self.last: CleanupReport | None = None
        self._passed = asyncio.Condition()

    async def run(self) -> None:
        """Clean up now, then every ``every``, until cancelled."""
        log.info("worker %s: retention on (%s)", self.worker_id, self.retention.describe())
        while True:
            await self.run_once()
            await asyncio.sleep(self.retention.interval.total_seconds())

    async def run_once(self) -> CleanupReport | None:
        """One pass: the report, or None when it failed (logged)."""
        report = None
        try:
            report = await cleanup(
                self.store, self.clock(), self.retention.ages(), self.retention.batch_size, dry_run=False
            )
        except Exception:  # a database that is down or busy: say so, and try again at the next pass
            self.failures += 1
            log.warning("worker %s: retention pass failed; retrying in %s", self.worker_id,
                        format_duration(self.retention.interval), exc_info=True)
        else:
            self.last = report
            if report.total:
                log.info("worker %s: retention %s", self.worker_id, report.describe())
        async with self._passed:
            self.passes += 1
            self._passed.notify_all()
        return report

    async def wait_pass(self, after: int = 0) -> int:
        """Wait until more than ``after`` passes are done; return the count."""
        async with self._passed:
            await self._passed.wait_for(lambda: self.passes > after)
            return self.passes
