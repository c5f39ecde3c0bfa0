"""``PostgresStore``'s run metrics and retention (mixed into it), with their SQL, each statement named and
commented as in ``_pg_queries``. Definitions: ``history._metrics``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ._metrics import PERCENTILES, RunStats, check_cutoffs
from ._pg_queries import FINISHED

PER_RUN_TABLES = ("durable_events", "durable_inbox", "durable_inputs")
"""Every table with rows of a run (by a ``run_id`` column) that retention deletes with the run: a new per-run
table gets its name added here, and nothing else changes."""

_DURATION_US = (
    f"CASE WHEN finished_at IS NOT NULL AND status IN {FINISHED} "
    "THEN round(extract(epoch FROM finished_at - coalesce(started_at, created_at)) * 1000000)::bigint END"
)
"""A finished run's duration in whole microseconds (NULL for an unfinished run: aggregates skip it)."""


def _run_metrics(by_workflow: bool) -> str:
    """Counts and durations of the runs created since ``$1`` (of workflow ``$2`` when ``by_workflow``), in one
    statement: the total first (``GROUPING(workflow) = 1``), then one row per workflow by name (code point
    order, as Python sorts). ``created_at`` is read by the range of ``durable_runs_created``, or with
    ``by_workflow`` of ``durable_runs_workflow_created`` (0004)."""
    where = "created_at >= $1" + (" AND workflow = $2" if by_workflow else "")
    grouping = "()" if by_workflow else "GROUPING SETS ((), (workflow))"
    workflow = "$2::text" if by_workflow else "workflow"
    order = "1" if by_workflow else 'GROUPING(workflow) DESC, workflow COLLATE "C"'
    return f"""
SELECT {workflow}, count(*),
       count(*) FILTER (WHERE status IN ('completed', 'continued')),
       count(*) FILTER (WHERE status = 'failed'),
       count(*) FILTER (WHERE status = 'cancelled'),
       count(*) FILTER (WHERE status NOT IN {FINISHED}),
       coalesce(sum(us), 0)::bigint,
       percentile_cont(ARRAY{list(PERCENTILES)}::float8[]) WITHIN GROUP (ORDER BY us)
FROM (SELECT workflow, status, {_DURATION_US} AS us FROM durable_runs WHERE {where}) AS runs
GROUP BY {grouping}
ORDER BY {order}"""


# Counts and durations of every workflow's runs created since $1: the total, then one row per workflow.
RUN_METRICS = _run_metrics(by_workflow=False)

# Counts and durations of workflow $2's runs created since $1: one row.
RUN_METRICS_OF = _run_metrics(by_workflow=True)

# The cut-offs of a retention job: finished status $1[i] before time $2[i]. A run is eligible when it has a finish
# time and a finished status, and finished before its status' cut-off. Each status is read as one range of
# durable_runs_finished (0004), oldest first: never a scan of the table (whose dead rows, just deleted by the
# previous batch, a sequential scan would read again at every batch).
_CUTOFFS = "unnest($1::text[], $2::timestamptz[]) AS c(status, before)"
_ELIGIBLE = "status = c.status AND finished_at IS NOT NULL AND finished_at < c.before"

# How many runs a retention job with cut-offs $1, $2 would delete: one row per status (0 included).
COUNT_FINISHED = f"SELECT c.status, (SELECT count(*) FROM durable_runs WHERE {_ELIGIBLE}) FROM {_CUTOFFS}"


def _delete_finished(tables: Sequence[str]) -> str:
    """Delete up to ``$3`` eligible runs (cut-offs ``$1``, ``$2``) with their rows in ``tables``, in one statement;
    return the status of each run deleted. Rows other transactions lock (a concurrent retention job, a finishing
    child's append locking its parent) are skipped, never waited for: two jobs share the work. Run in a
    transaction that has set ``durable.allow_retention`` (the events' guard, 0001_init.sql, lets it delete the
    events of finished runs only)."""
    per_run = "".join(
        f",\n{table.removeprefix('durable_')} AS (DELETE FROM {table} WHERE run_id IN (SELECT id FROM picked))"
        for table in tables
    )
    return f"""
WITH picked AS (
    SELECT r.id FROM {_CUTOFFS} CROSS JOIN LATERAL (
        SELECT id FROM durable_runs WHERE {_ELIGIBLE}
        ORDER BY finished_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) AS r
    LIMIT $3
){per_run}
DELETE FROM durable_runs WHERE id IN (SELECT id FROM picked)
RETURNING status"""


# Delete up to $3 runs eligible under cut-offs $1, $2 with all their rows; returns each deleted run's status.
DELETE_FINISHED = _delete_finished(PER_RUN_TABLES)

# Lets this transaction delete the events of finished runs (the guard of durable_events, 0001_init.sql).
ALLOW_RETENTION = "SET LOCAL durable.allow_retention = on"


def _stats(row: Sequence[Any]) -> RunStats:
    workflow, total, completed, failed, cancelled, running, duration_sum, percentiles = row
    p50, p95, p99 = percentiles if percentiles is not None else (None, None, None)
    return RunStats(workflow, total, completed, failed, cancelled, running, int(duration_sum), p50, p95, p99)


def _cutoff_args(before: Mapping[str, datetime]) -> tuple[list[str], list[datetime]]:
    check_cutoffs(before)
    return list(before), list(before.values())


class PostgresMetrics:
    """``run_metrics``, ``count_finished`` and ``delete_finished`` (one round trip, one, and four per batch)."""

    @property
    def _db(self) -> Any:  # pragma: no cover - provided by PostgresStore
        raise NotImplementedError

    async def run_metrics(self, workflow: str | None, since: datetime) -> list[RunStats]:
        """Counts and durations of the runs created at or after ``since`` (see ``history._metrics``), computed by
        PostgreSQL in one statement (``count(*) FILTER``, ``percentile_cont``)."""
        if workflow is None:
            rows = await self._db.fetch(RUN_METRICS, since)
        else:
            rows = await self._db.fetch(RUN_METRICS_OF, since, workflow)
        return [_stats(row) for row in rows]

    async def count_finished(self, before: Mapping[str, datetime]) -> dict[str, int]:
        """How many runs ``delete_finished`` would delete, in all, by status."""
        statuses, cutoffs = _cutoff_args(before)
        rows = await self._db.fetch(COUNT_FINISHED, statuses, cutoffs)
        return {status: count for status, count in rows if count}

    async def delete_finished(self, before: Mapping[str, datetime], *, limit: int) -> dict[str, int]:
        """Delete up to ``limit`` finished runs that finished before their status' cut-off, with their rows in
        every per-run table, in one short transaction (BEGIN, SET LOCAL, the delete, COMMIT); return how many of
        each status went. Runs locked by another transaction are skipped (left for the next batch)."""
        statuses, cutoffs = _cutoff_args(before)
        counts: dict[str, int] = {}
        if limit <= 0 or not statuses:
            return counts
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute(ALLOW_RETENTION)
            for (status,) in await conn.fetch(DELETE_FINISHED, statuses, cutoffs, limit):
                counts[status] = counts.get(status, 0) + 1
        return counts
