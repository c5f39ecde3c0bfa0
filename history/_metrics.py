"""Run metrics and retention, the parts every store shares: the ``RunStats`` record, the reference computation
(``MemoryStore`` uses it; the SQL stores compute the same numbers in SQL and a contract test compares them), and
the check of a retention job's cut-offs.

Definitions, the same in every store:

* the runs counted are those **created** at or after ``since`` (a run's creation time never changes, so a
  period's counts only grow while it lasts; counting by finish time would hide runs still going);
* ``completed`` counts runs that completed or continued as a new run (``ctx.continue_as_new``: that run ended
  well, and its successor is counted on its own); ``running`` counts every unfinished run (pending, running,
  waiting);
* a finished run's duration is ``finished_at - started_at`` in whole microseconds, or ``finished_at -
  created_at`` for a run that never started (cancelled while pending);
* percentiles are PostgreSQL's ``percentile_cont``: over the ``n`` durations in ascending order, the fraction
  ``p`` falls at position ``p * (n - 1)`` (0-based) and is interpolated linearly between its two neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import msgspec

from ._records import CANCELLED, COMPLETED, CONTINUED, FAILED, FINISHED_STATUSES, RunRecord

PERCENTILES = (0.5, 0.95, 0.99)
"""The fractions ``RunStats`` reports, in the order of its ``p50_us``, ``p95_us``, ``p99_us``."""


class RunStats(msgspec.Struct, frozen=True):
    """Counts and durations of the runs created since a time, for one workflow or (``workflow`` None) all.

    Durations are in microseconds: ``duration_sum_us`` is exact (an integer), the percentiles are floats
    (interpolated). They are None when no run finished.
    """

    workflow: str | None
    total: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    duration_sum_us: int = 0
    p50_us: float | None = None
    p95_us: float | None = None
    p99_us: float | None = None

    @property
    def finished(self) -> int:
        """Runs that finished (completed, continued, failed or cancelled): those with a duration."""
        return self.completed + self.failed + self.cancelled


def percentile_cont(ordered: Sequence[int], fraction: float) -> float | None:
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY x)`` over ``ordered`` (ascending), with
    its float arithmetic step for step, so that the result is the same to the last bit."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    first = math.floor(position)
    second = math.ceil(position)
    low, high = float(ordered[first]), float(ordered[second])
    if second == first:
        return low
    return low + (position - first) * (high - low)


def duration_us(run: RunRecord) -> int | None:
    """A finished run's duration in whole microseconds (from its start, or its creation if it never started)."""
    if run.finished_at is None or run.status not in FINISHED_STATUSES:
        return None
    delta = run.finished_at - (run.started_at or run.created_at)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _stats(workflow: str | None, runs: list[RunRecord]) -> RunStats:
    durations = sorted(d for d in map(duration_us, runs) if d is not None)
    p50, p95, p99 = (percentile_cont(durations, fraction) for fraction in PERCENTILES)
    return RunStats(
        workflow=workflow,
        total=len(runs),
        completed=sum(1 for r in runs if r.status in (COMPLETED, CONTINUED)),
        failed=sum(1 for r in runs if r.status == FAILED),
        cancelled=sum(1 for r in runs if r.status == CANCELLED),
        running=sum(1 for r in runs if r.status not in FINISHED_STATUSES),
        duration_sum_us=sum(durations),
        p50_us=p50,
        p95_us=p95,
        p99_us=p99,
    )


def compute_run_stats(runs: Iterable[RunRecord], workflow: str | None, since: datetime) -> list[RunStats]:
    """What ``Store.run_metrics(workflow, since)`` returns, computed in Python: the reference implementation.

    With ``workflow``: one ``RunStats`` for it. Without: the total over every workflow first (``workflow`` None),
    then one per workflow that has runs in the period, by name.
    """
    chosen = [r for r in runs if r.created_at >= since and (workflow is None or r.workflow == workflow)]
    if workflow is not None:
        return [_stats(workflow, chosen)]
    by_name: dict[str, list[RunRecord]] = {}
    for run in chosen:
        by_name.setdefault(run.workflow, []).append(run)
    return [_stats(None, chosen), *(_stats(name, by_name[name]) for name in sorted(by_name))]


def check_cutoffs(before: Mapping[str, datetime]) -> None:
    """Refuse a retention job's cut-offs that name a status other than a finished one, or a naive time."""
    for status, moment in before.items():
        if status not in FINISHED_STATUSES:
            raise ValueError(
                f"retention deletes finished runs only: {status!r} is not one of {', '.join(sorted(FINISHED_STATUSES))}"
            )
        if not isinstance(moment, datetime) or moment.tzinfo is None:
            raise ValueError(f"the cut-off of {status!r} runs must be a timezone-aware datetime, got {moment!r}")


def eligible(run: RunRecord, before: Mapping[str, datetime]) -> bool:
    """Whether a retention job with cut-offs ``before`` deletes ``run``: it finished before its status' cut-off.
    Both the status and ``finished_at`` are checked: a run without a finish time is never deleted."""
    cutoff = before.get(run.status)
    return cutoff is not None and run.finished_at is not None and run.finished_at < cutoff
