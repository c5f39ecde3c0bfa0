"""``list_runs`` for SQLite: one statement per shape of request, built from the named fragments below.

As in ``_pg_listing``: values are always parameters (``?n``), lists are one JSON array read with ``json_each``,
times are integer microseconds. The indexes each shape reads are in the listing migration
(``migrations/sqlite/*_listing.sql``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from . import _sqlite_queries as q
from ._listing import RunQuery, filters

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# name -> the condition, with {0}, {1} for its parameters.
_FRAGMENTS = {
    "workflow": "workflow = {0}",  # durable_runs_workflow_created (with a status: durable_runs_workflow_status)
    "status": "status = {0}",  # completed: most runs, read from the order index
    "status_not_completed": "status = {0} AND status <> 'completed'",  # durable_runs_status_created (partial)
    "statuses": "status IN (SELECT value FROM json_each({0}))",
    "statuses_not_completed": "status IN (SELECT value FROM json_each({0})) AND status <> 'completed'",
    # the literal list implies the predicate of durable_runs_active
    "statuses_active": "status IN (SELECT value FROM json_each({0})) AND status NOT IN " + q.FINISHED,
    # one of the names in current_step (comma-separated for parallel steps), of an unfinished run (the literal
    # lets SQLite read durable_runs_active; current_step is not indexed)
    "current_step": "status NOT IN " + q.FINISHED + " AND instr(',' || current_step || ',', ',' || {0} || ',') > 0",
    "started_after": "created_at >= {0}",  # started with engine.start: created_at
    "started_before": "created_at < {0}",
    "queue": "queue = {0}",  # the default queue: most runs, read from the order index
    "queue_not_default": "queue = {0} AND queue <> 'default'",  # durable_runs_queue_created (partial)
    "parent_id": "parent_id = {0}",  # durable_runs_parent
    # run id or dedup key starts with the text: ranges of the primary key and durable_runs_dedup_prefix (BINARY)
    "search": "((id >= {0} AND id < {1}) OR (dedup_key >= {0} AND dedup_key < {1}))",
}


@cache
def list_runs_sql(names: tuple[str, ...], order_key: str, descending: bool, after: bool) -> str:
    """The statement for filters ``names`` (in ``filters`` order), listed by ``order_key`` then id, after a keyset
    cursor when ``after``. ``?1`` is the row limit; then each filter's parameters, then the cursor's two."""
    where: list[str] = []
    number = 1
    for name in names:
        fragment = _FRAGMENTS[name]
        count = 2 if "{1}" in fragment else 1
        where.append(fragment.format(*(f"?{number + i + 1}" for i in range(count))))
        number += count
    if order_key in ("started_at", "finished_at"):
        where.append(f"{order_key} IS NOT NULL")  # such runs are not listed; implies the partial indexes' predicate
    direction = "DESC" if descending else "ASC"
    if after:
        where.append(f"({order_key}, id) {'<' if descending else '>'} (?{number + 1}, ?{number + 2})")
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return (
        f"SELECT {q.RUN_COLUMNS} FROM durable_runs {clause}"
        f"ORDER BY {order_key} {direction}, id {direction} LIMIT ?1"
    )


def _param(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(microseconds=1)
    if isinstance(value, list):
        return json.dumps(value)
    return value


def list_runs_args(query: RunQuery) -> tuple[str, list[Any]]:
    """The statement for ``query`` and its parameters (one row more than the limit: is there a next page?)."""
    wanted = filters(query)
    args: list[Any] = [query.limit + 1]
    for _, values in wanted:
        args.extend(_param(value) for value in values)
    if query.after is not None:
        args.extend(_param(value) for value in query.after)
    sql = list_runs_sql(tuple(name for name, _ in wanted), query.order_key, query.descending, query.after is not None)
    return sql, args
