"""``SqliteStore``'s run metrics and retention (mixed into it), with their SQL, each statement named and commented
as in ``_sqlite_queries``. Definitions: ``history._metrics``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

from ._metrics import PERCENTILES, RunStats, check_cutoffs
from ._records import FINISHED_STATUSES
from ._sqlite_queries import FINISHED

_T = TypeVar("_T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_json = msgspec.json.Encoder()

PER_RUN_TABLES = ("durable_events", "durable_inbox", "durable_inputs")
"""Every table with rows of a run (by a ``run_id`` column) that retention deletes with the run: a new per-run
table gets its name added here, and nothing else changes."""


def _percentile(parameter: int) -> str:
    """PostgreSQL's ``percentile_cont(fraction)`` over the ranked durations of one group (``i`` 0-based in
    ascending order, ``n`` of them), with its float arithmetic step for step: position ``p * (n - 1)``, its
    floor (a cast truncates, and the position is never negative) and ceiling, then ``low + (position - floor) *
    (high - low)``. NULL when the group has no finished run. The fraction is bound (parameter ``?parameter``),
    not written as a literal: a bound float is the exact double Python has."""
    position = f"(?{parameter} * (n - 1))"
    first = f"CAST({position} AS INTEGER)"
    second = f"({first} + ({position} > {first}))"
    low = f"max(CASE WHEN i = {first} THEN us END)"
    high = f"max(CASE WHEN i = {second} THEN us END)"
    offset = f"max({position} - {first})"
    return f"CASE WHEN {high} = {low} THEN CAST({low} AS REAL) ELSE {low} + {offset} * ({high} - {low}) END"


def _run_metrics(by_workflow: bool) -> str:
    """Counts and durations of the runs created since ``?1`` (of workflow ``?2`` when ``by_workflow``), with the
    percentiles' fractions ``?3``, ``?4``, ``?5`` (``PERCENTILES``): the total
    first (``g`` NULL), then one row per workflow by name (BINARY: code point order, as Python sorts). Every run
    of the period appears twice without the filter (in the total and in its workflow's group), which costs a
    second sort and nothing more."""
    where = "created_at >= ?1" + (" AND workflow = ?2" if by_workflow else "")
    groups = (
        "SELECT ?2 AS g, * FROM runs"
        if by_workflow
        else "SELECT NULL AS g, * FROM runs UNION ALL SELECT workflow AS g, * FROM runs"
    )
    duration = (
        f"CASE WHEN finished_at IS NOT NULL AND status IN {FINISHED} "
        f"THEN finished_at - coalesce(started_at, created_at) END"
    )
    percentiles = ",\n       ".join(_percentile(3 + index) for index in range(len(PERCENTILES)))
    return f"""
WITH runs AS (
    SELECT workflow, status, {duration} AS us FROM durable_runs WHERE {where}
), grouped AS ({groups}
), ranked AS (
    SELECT g, status, us,
           CASE WHEN us IS NOT NULL THEN row_number() OVER (PARTITION BY g, us IS NULL ORDER BY us) - 1 END AS i,
           count(us) OVER (PARTITION BY g) AS n
    FROM grouped
)
SELECT g, count(*),
       coalesce(sum(status IN ('completed', 'continued')), 0),
       coalesce(sum(status = 'failed'), 0),
       coalesce(sum(status = 'cancelled'), 0),
       coalesce(sum(status NOT IN {FINISHED}), 0),
       coalesce(sum(us), 0),
       {percentiles}
FROM ranked
GROUP BY g
ORDER BY g IS NOT NULL, g"""


# Counts and durations of every workflow's runs created since ?1: the total, then one row per workflow.
RUN_METRICS = _run_metrics(by_workflow=False)

# Counts and durations of workflow ?2's runs created since ?1: one row (none when it has no run: zeros then).
RUN_METRICS_OF = _run_metrics(by_workflow=True)

# The cut-offs of a retention job: a JSON object {status: time in microseconds}. A run is eligible when it has a
# finish time and a finished status, and finished before its status' cut-off (read from durable_runs_finished).
_ELIGIBLE = """
FROM json_each(?1) AS c JOIN durable_runs r ON r.status = c.key
WHERE r.finished_at IS NOT NULL AND r.finished_at < c.value"""

# How many runs a retention job with cut-offs ?1 would delete, by status.
COUNT_FINISHED = f"SELECT r.status, count(*) {_ELIGIBLE} GROUP BY r.status"


def _pick_finished() -> str:
    """Up to ``?2`` runs eligible under cut-offs ``?1``: (id, status), oldest first within a status. One branch
    per finished status, each a range of durable_runs_finished that stops at ``?2`` rows (a status without a
    cut-off compares with NULL and reads nothing): a join would walk the index past the runs it cannot take."""
    branches = "\n    UNION ALL\n    ".join(
        f"SELECT * FROM (SELECT id, status FROM durable_runs WHERE status = '{status}' AND finished_at IS NOT NULL "
        f"AND finished_at < json_extract(?1, '$.{status}') ORDER BY finished_at LIMIT ?2)"
        for status in sorted(FINISHED_STATUSES)
    )
    return f"SELECT * FROM (\n    {branches}\n) LIMIT ?2"


# Up to ?2 runs eligible under cut-offs ?1: (id, status).
PICK_FINISHED = _pick_finished()

# Turn the events' guard off and on again inside the retention transaction (0001_init.sql: durable_settings);
# no other connection ever sees it on, since the transaction commits it off.
ALLOW_RETENTION = "UPDATE durable_settings SET allow_retention = 1 WHERE id = 1"
FORBID_RETENTION = "UPDATE durable_settings SET allow_retention = 0 WHERE id = 1"

# Delete the rows of the runs in JSON array ?1 from each per-run table, then the runs.
DELETE_PER_RUN = tuple(
    f"DELETE FROM {table} WHERE run_id IN (SELECT value FROM json_each(?1))" for table in PER_RUN_TABLES
)
DELETE_RUNS = "DELETE FROM durable_runs WHERE id IN (SELECT value FROM json_each(?1))"


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _cutoffs(before: Mapping[str, datetime]) -> bytes:
    check_cutoffs(before)
    return _json.encode({status: _us(moment) for status, moment in before.items()})


def _stats(row: Sequence[Any]) -> RunStats:
    workflow, total, completed, failed, cancelled, running, duration_sum, p50, p95, p99 = row
    return RunStats(workflow, total, completed, failed, cancelled, running, duration_sum, p50, p95, p99)


class SqliteMetrics:
    """``run_metrics``, ``count_finished`` and ``delete_finished`` on the store's thread."""

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:  # pragma: no cover - provided by SqliteStore
        raise NotImplementedError

    async def _write(self, fn: Callable[..., _T], *args: Any) -> _T:  # pragma: no cover - provided by SqliteStore
        raise NotImplementedError

    def _connection(self) -> sqlite3.Connection:  # pragma: no cover - provided by SqliteStore
        raise NotImplementedError

    async def run_metrics(self, workflow: str | None, since: datetime) -> list[RunStats]:
        """Counts and durations of the runs created at or after ``since`` (see ``history._metrics``), computed in
        one SQL statement (window functions for the percentiles)."""
        return await self._call(self._run_metrics, workflow, _us(since))

    def _run_metrics(self, workflow: str | None, since: int) -> list[RunStats]:
        sql = RUN_METRICS if workflow is None else RUN_METRICS_OF
        rows = [_stats(row) for row in self._connection().execute(sql, (since, workflow, *PERCENTILES))]
        if not rows or rows[0].workflow != workflow:
            rows.insert(0, RunStats(workflow))  # no run in the period: no group at all, so zeros
        return rows

    async def count_finished(self, before: Mapping[str, datetime]) -> dict[str, int]:
        """How many runs ``delete_finished`` would delete, in all, by status."""
        cutoffs = _cutoffs(before)
        return await self._call(self._count_finished, cutoffs)

    def _count_finished(self, cutoffs: bytes) -> dict[str, int]:
        return {status: count for status, count in self._connection().execute(COUNT_FINISHED, (cutoffs,))}

    async def delete_finished(self, before: Mapping[str, datetime], *, limit: int) -> dict[str, int]:
        """Delete up to ``limit`` finished runs that finished before their status' cut-off, with their rows in
        every per-run table, in one write transaction; return how many of each status went."""
        cutoffs = _cutoffs(before)
        if limit <= 0 or not before:
            return {}
        return await self._write(self._delete_finished, cutoffs, limit)

    @staticmethod
    def _delete_finished(db: sqlite3.Connection, _now: int, cutoffs: bytes, limit: int) -> dict[str, int]:
        picked = db.execute(PICK_FINISHED, (cutoffs, limit)).fetchall()
        counts: dict[str, int] = {}
        if not picked:
            return counts
        ids = _json.encode([run_id for run_id, _ in picked])
        db.execute(ALLOW_RETENTION)
        for statement in DELETE_PER_RUN:
            db.execute(statement, (ids,))
        db.execute(DELETE_RUNS, (ids,))
        db.execute(FORBID_RETENTION)
        for _, status in picked:
            counts[status] = counts.get(status, 0) + 1
        return counts
