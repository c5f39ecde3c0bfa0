"""``list_runs`` for PostgreSQL: one statement per shape of request, built from the named fragments below.

Each fragment is a condition on ``durable_runs`` whose parameters are numbered when the statement is built; values
are always passed as parameters, never written into the text. The indexes each shape reads are in
the listing migration (``migrations/postgres/*_listing.sql``) (and ``bench_list.py`` checks them at a million runs).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from . import _pg_queries as q
from ._listing import RunQuery, filters

# name -> the condition, with {0}, {1} for its parameters.
_FRAGMENTS = {
    # one workflow: durable_runs_workflow_created (with a status: durable_runs_workflow_status)
    "workflow": "workflow = {0}",
    # status completed: most runs, read from the order index (durable_runs_status_created leaves them out)
    "status": "status = {0}",
    # one other status: durable_runs_status_created (the literal implies its predicate)
    "status_not_completed": "status = {0} AND status <> 'completed'",
    # several statuses, completed among them
    "statuses": "status = ANY({0}::text[])",
    # several statuses, some finished, not completed
    "statuses_not_completed": "status = ANY({0}::text[]) AND status <> 'completed'",
    # several unfinished statuses: the literal list implies the predicate of durable_runs_active
    "statuses_active": "status = ANY({0}::text[]) AND status NOT IN " + q.FINISHED,
    # one of the names in current_step (comma-separated for parallel steps); only unfinished runs have one, which
    # the literal says, so that durable_runs_active is read (current_step itself is not indexed: HOT appends)
    "current_step": "status NOT IN " + q.FINISHED + " AND strpos(',' || current_step || ',', ',' || {0} || ',') > 0",
    # started (engine.start) at or after / before: created_at
    "started_after": "created_at >= {0}",
    "started_before": "created_at < {0}",
    # the default queue: most runs, read from the order index (durable_runs_queue_created leaves them out)
    "queue": "queue = {0}",
    # another queue: durable_runs_queue_created (the literal implies its predicate)
    "queue_not_default": "queue = {0} AND queue <> 'default'",
    # children of one run: durable_runs_parent
    "parent_id": "parent_id = {0}",
    # run id or dedup key starts with the text: the range [{0}, {1}) of durable_runs_id_prefix and
    # durable_runs_dedup_prefix (a bitmap OR of the two)
    "search": '(((id COLLATE "C") >= {0} AND (id COLLATE "C") < {1}) '
              'OR ((dedup_key COLLATE "C") >= {0} AND (dedup_key COLLATE "C") < {1}))',
}


@cache
def list_runs_sql(names: tuple[str, ...], order_key: str, descending: bool, after: bool) -> str:
    """The statement for filters ``names`` (in ``filters`` order), listed by ``order_key`` then id, after a keyset
    cursor when ``after``. ``$1`` is the row limit; then each filter's parameters, then the cursor's two."""
    where: list[str] = []
    number = 1
    for name in names:
        fragment = _FRAGMENTS[name]
        count = 2 if "{1}" in fragment else 1
        where.append(fragment.format(*(f"${number + i + 1}" for i in range(count))))
        number += count
    cursor = f"(${number + 1}, ${number + 2})" if after else ""
    if order_key in ("started_at", "finished_at"):
        where.append(f"{order_key} IS NOT NULL")  # such runs are not listed; implies the partial indexes' predicate
    if "search" in names:
        return _searched(where, order_key, descending, cursor)
    if order_key == "updated_at":
        return _by_updated_at(where, descending, cursor)
    return _ordered(where, order_key, descending, cursor)


def _searched(where: list[str], key: str, descending: bool, cursor: str) -> str:
    """A search: the matching runs are read from the two prefix indexes, then sorted. Without the fence, the
    planner may walk an order index instead, expecting matches spread evenly; but a prefix picks runs of one
    period (ids begin with their time; keys such as "order-1…" were made together), and the walk then crosses
    most of the table before it finds them (150 ms at a million runs for "order-1"). Fenced, a search costs what
    it matches: nothing to speak of for an id or key, more for a prefix shared by many runs."""
    direction = "DESC" if descending else "ASC"
    if cursor:
        where = [*where, f"({key}, id) {'<' if descending else '>'} {cursor}"]
    return (
        f"WITH matching AS MATERIALIZED (SELECT {q.RUN_COLUMNS} FROM durable_runs WHERE {' AND '.join(where)})\n"
        f"SELECT * FROM matching ORDER BY {key} {direction}, id {direction} LIMIT $1"
    )


def _ordered(where: list[str], key: str, descending: bool, cursor: str) -> str:
    """``SELECT`` the runs matching ``where`` by ``key`` then id, after ``cursor`` (SQL of a row, or "")."""
    direction = "DESC" if descending else "ASC"
    if cursor:
        where = [*where, f"({key}, id) {'<' if descending else '>'} {cursor}"]
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    order = f"ORDER BY {key} {direction}, id {direction}"
    return f"SELECT {q.RUN_COLUMNS} FROM durable_runs {clause}{order} LIMIT $1"


def _by_updated_at(where: list[str], descending: bool, cursor: str) -> str:
    """Runs by ``updated_at``, which no index holds (a step append changes it: an index would make every step
    append a non-HOT update). A finished run's ``updated_at`` is its ``finished_at`` (the finishing append sets
    both; nothing updates a finished run's row), so: the unfinished runs, few, read from ``durable_runs_active``
    and sorted, merged with the finished runs read in order from ``durable_runs_finished_at``. Each branch stops
    after ``$1`` rows."""
    direction = "DESC" if descending else "ASC"
    unfinished = _ordered([*where, "status NOT IN " + q.FINISHED], "updated_at", descending, cursor)
    finished = _ordered([*where, "finished_at IS NOT NULL"], "finished_at", descending, cursor)
    return f"({unfinished})\nUNION ALL\n({finished})\nORDER BY updated_at {direction}, id {direction} LIMIT $1"


def list_runs_args(query: RunQuery) -> tuple[str, list[Any]]:
    """The statement for ``query`` and its parameters (one row more than the limit: is there a next page?)."""
    wanted = filters(query)
    args: list[Any] = [query.limit + 1]
    for _, values in wanted:
        args.extend(values)
    if query.after is not None:
        args.extend(query.after)
    sql = list_runs_sql(tuple(name for name, _ in wanted), query.order_key, query.descending, query.after is not None)
    return sql, args

