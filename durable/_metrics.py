"""``engine.get_metrics``: how many runs of a period completed, failed, were cancelled or are still going, the
success rate, and the average and percentile durations, all computed by the database (``Store.run_metrics``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from history import RunStats

from ._durations import parse_duration

if TYPE_CHECKING:
    from history import Store


class RunMetrics(msgspec.Struct, frozen=True):
    """The runs of one workflow (or of all, ``workflow`` None) created within a period ending now.

    Which runs: those **created** in the period (``since`` to now), finished or not. ``completed`` includes runs
    that continued as a new run (``ctx.continue_as_new``); ``running`` counts the unfinished ones (pending,
    running or waiting). ``success_rate`` is ``completed / (completed + failed + cancelled)``, None when none of
    them finished. Durations, in milliseconds, are those of the finished runs: from their first start to their
    finish (from their creation for a run cancelled before it started); the percentiles interpolate linearly
    between the two nearest durations (PostgreSQL's ``percentile_cont``), and every store gives the same numbers.
    ``by_workflow`` (only when no workflow was asked for) holds the same figures for each workflow with runs in
    the period.
    """

    workflow: str | None
    period: float
    """The period's length in seconds."""
    since: datetime
    total: int
    completed: int
    failed: int
    cancelled: int
    running: int
    success_rate: float | None
    avg_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    by_workflow: dict[str, RunMetrics] = msgspec.field(default_factory=dict)

    @property
    def finished(self) -> int:
        """Runs of the period that finished (completed, failed or cancelled)."""
        return self.completed + self.failed + self.cancelled


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def metrics_from(stats: RunStats, period: timedelta, since: datetime) -> RunMetrics:
    """The user-facing figures of one ``RunStats`` (no breakdown)."""
    finished = stats.finished
    return RunMetrics(
        workflow=stats.workflow,
        period=period.total_seconds(),
        since=since,
        total=stats.total,
        completed=stats.completed,
        failed=stats.failed,
        cancelled=stats.cancelled,
        running=stats.running,
        success_rate=stats.completed / finished if finished else None,
        avg_ms=stats.duration_sum_us / finished / 1000.0 if finished else None,
        p50_ms=_ms(stats.p50_us),
        p95_ms=_ms(stats.p95_us),
        p99_ms=_ms(stats.p99_us),
    )


class MetricsClient:
    """Mixed into ``Engine``: ``get_metrics``."""

    store: Store
    _clock: Callable[[], datetime]

    def _require_open(self) -> None:  # pragma: no cover - provided by Engine
        raise NotImplementedError

    async def get_metrics(self, workflow: str | None = None, period: str | timedelta = "24h") -> RunMetrics:
        """Counts, success rate and durations of the runs created in the last ``period``, by the database.

        Args:
            workflow: one workflow's runs (default: all, with a ``by_workflow`` breakdown).
            period: how far back: ``"30s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"2w"`` or a ``timedelta``.

        Raises:
            ValueError: ``period`` is not a positive duration of an accepted form, or ``workflow`` is not a
                non-empty string.
        """
        self._require_open()
        length = parse_duration(period, what="period")
        if workflow is not None and (not isinstance(workflow, str) or not workflow):
            raise ValueError(f"workflow must be a non-empty string (or None for all), got {workflow!r}")
        since = self._clock() - length
        total, *per_workflow = await self.store.run_metrics(workflow, since)
        metrics = metrics_from(total, length, since)
        if per_workflow:
            breakdown = {s.workflow: metrics_from(s, length, since) for s in per_workflow if s.workflow is not None}
            metrics = msgspec.structs.replace(metrics, by_workflow=breakdown)
        return metrics
