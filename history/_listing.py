"""What ``Store.list_runs`` may be asked, checked once for every store, and the reference answer for the memory
store.

``run_query`` validates the arguments (clear ``ValueError``s naming the argument and what to pass instead) and
returns a ``RunQuery``; the SQL stores turn it into one statement (``_pg_listing``, ``_sqlite_listing``),
``MemoryStore`` filters and sorts with ``matches``/``sort_key`` below. Every store therefore means the same by each
filter:

* ``statuses``: the run's status is one of them;
* ``current_step``: the run is unfinished and ``name`` is its ``current_step`` or one of the comma-separated names
  in it (parallel steps);
* ``started_after``/``started_before`` (``RunQuery.created_after``/``created_before``): when the run was started
  with ``engine.start``, i.e. its ``created_at``, so a run no worker has picked up yet is found too;
  ``started_after <= created_at < started_before`` (half-open: consecutive windows neither overlap nor leave gaps);
* ``search``: the run's id or its dedup key starts with the text (case-sensitive, code point order);
* ``order_key``: ``created_at`` (every run), ``started_at`` (runs a worker has started), ``finished_at``
  (finished runs) or ``updated_at`` (every run); runs without the timestamp are left out, so the key is never
  NULL and keyset pagination stays exact. Ties are broken by id, in the same direction.

A cursor is opaque: base64 of ``<order>|<key as ISO 8601>|<run id>``; a cursor made for another order is refused.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from ._errors import DurableError
from ._records import COMPLETED, STATUSES, RunPage, RunRecord, Unset

ORDER_KEYS = ("created_at", "started_at", "finished_at", "updated_at")
"""The timestamps runs can be listed by (prefix ``-`` for newest first)."""

MAX_LIMIT = 10_000
"""The most runs one ``list_runs`` call returns (``Engine.list_executions`` allows 1000)."""

_MAX_SEARCH = 200


class InvalidCursor(DurableError, ValueError):
    """A cursor that is not the ``next_cursor`` of a page of the same order."""


class RunQuery(msgspec.Struct, frozen=True):
    """A validated ``list_runs`` request (see the module docstring for what each field means)."""

    workflow: str | None = None
    statuses: tuple[str, ...] = ()
    current_step: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    queue: str | None = None
    parent_id: str | None = None
    search: str | None = None
    order_key: str = "created_at"
    descending: bool = True
    limit: int = 50
    after: tuple[datetime, str] | None = None
    """The (order key, id) of the last run of the previous page."""

    @property
    def order(self) -> str:
        """The order as written by users: ``-created_at`` or ``created_at``."""
        return ("-" if self.descending else "") + self.order_key

    @property
    def search_range(self) -> tuple[str, str] | None:
        """``search`` as a half-open range ``[lo, hi)`` of strings (the ones that start with it), which an index
        in code point order (PostgreSQL ``COLLATE "C"``, SQLite's ``BINARY``) reads as one range."""
        if self.search is None:
            return None
        return self.search, _successor(self.search)


def run_query(
    *,
    workflow: str | None = None,
    status: str | Sequence[str] | None = None,
    current_step: str | None = None,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
    queue: str | None = None,
    parent_id: str | None = None,
    search: str | None = None,
    order_by: str = "-created_at",
    limit: int = 50,
    cursor: str | None = None,
) -> RunQuery:
    """Check ``list_runs`` arguments and return them as a ``RunQuery``. Raises ``ValueError`` naming the problem."""
    for name, value in (("workflow", workflow), ("current_step", current_step), ("queue", queue),
                        ("parent_id", parent_id)):  # fmt: skip
        _check_text(name, value)
    order_key, descending = _order(order_by)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer between 1 and {MAX_LIMIT}, got {limit!r}")
    for name, moment in (("started_after", started_after), ("started_before", started_before)):
        if moment is not None:
            if not isinstance(moment, datetime):
                raise ValueError(f"{name} must be a datetime, got {type(moment).__name__}")
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError(
                    f"{name}={moment.isoformat()} has no time zone: pass an aware datetime, e.g. "
                    f"datetime(..., tzinfo=timezone.utc) or datetime.now(timezone.utc)"
                )
    return RunQuery(
        workflow=workflow,
        statuses=_statuses(status),
        current_step=current_step,
        created_after=started_after,
        created_before=started_before,
        queue=queue,
        parent_id=parent_id,
        search=_search(search),
        order_key=order_key,
        descending=descending,
        limit=limit,
        after=None if cursor is None else decode_cursor(cursor, ("-" if descending else "") + order_key),
    )


def _check_text(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value or "\x00" in value):
        raise ValueError(f"{name} must be a non-empty string without NUL characters, got {value!r}")


def _order(order_by: Any) -> tuple[str, bool]:
    key = order_by[1:] if isinstance(order_by, str) and order_by.startswith("-") else order_by
    if key not in ORDER_KEYS:
        choices = ", ".join(f"{k!r}/'-{k}'" for k in ORDER_KEYS)
        raise ValueError(f"unknown order_by {order_by!r}: use one of {choices} ('-': newest first)")
    return key, order_by.startswith("-")


def _statuses(status: str | Sequence[str] | None) -> tuple[str, ...]:
    if status is None:
        return ()
    wanted = [status] if isinstance(status, str) else list(status)
    if not wanted:
        raise ValueError("status=[] matches no run: pass None for every status, or one or more statuses")
    for one in wanted:
        if one not in STATUSES:
            raise ValueError(f"unknown status {one!r}: use one of {', '.join(STATUSES)}")
    return tuple(dict.fromkeys(wanted))  # no duplicates, order kept (the SQL text depends on the count only)


def _search(search: str | None) -> str | None:
    _check_text("search", search)
    if search is not None and len(search) > _MAX_SEARCH:
        raise ValueError(f"search is {len(search)} characters long: pass a run id or dedup key prefix of at most "
                         f"{_MAX_SEARCH}")
    return search


def _successor(prefix: str) -> str:
    """The least string greater than every string that starts with ``prefix`` (in code point order)."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:  # only the largest code point: nothing is greater; a longer run of it bounds any real id
        return prefix + "\U0010ffff" * 8
    return stripped[:-1] + chr(ord(stripped[-1]) + 1 + (ord(stripped[-1]) + 1 == 0xD800) * 0x800)


# --- cursors --------------------------------------------------------------------------------------------------


def encode_cursor(order: str, key: datetime, run_id: str) -> str:
    """The cursor that resumes a listing in ``order`` after the run with this order key and id."""
    return base64.urlsafe_b64encode(f"{order}|{key.isoformat()}|{run_id}".encode()).decode()


def decode_cursor(cursor: Any, order: str) -> tuple[datetime, str]:
    """The (order key, id) a cursor of ``order`` resumes after. Raises ``InvalidCursor`` (a ``ValueError``) for
    anything that is not the ``next_cursor`` of a page listed in the same order."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        first, rest = text.split("|", 1)
        if first.lstrip("-") not in ORDER_KEYS:  # a cursor of the first releases: "<created_at>|<id>"
            first, rest = "-created_at", text
        stamp, run_id = rest.split("|", 1)
        moment = datetime.fromisoformat(stamp)
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise InvalidCursor(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page unchanged") from exc
    if moment.tzinfo is None:
        raise InvalidCursor(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page unchanged")
    if first != order:
        raise InvalidCursor(
            f"this cursor continues a listing ordered by {first!r}, not {order!r}: pass the same order_by as for "
            f"the first page, or start again without a cursor"
        )
    return moment, run_id


# --- the reference semantics (MemoryStore) ---------------------------------------------------------------------


def matches(query: RunQuery, run: RunRecord) -> bool:
    """Whether ``run`` passes every filter of ``query`` (the cursor and the order key aside)."""
    return (
        (query.workflow is None or run.workflow == query.workflow)
        and (not query.statuses or run.status in query.statuses)
        and (query.current_step is None or _at_step(run, query.current_step))
        and (query.created_after is None or run.created_at >= query.created_after)
        and (query.created_before is None or run.created_at < query.created_before)
        and (query.queue is None or run.queue == query.queue)
        and (query.parent_id is None or run.parent_id == query.parent_id)
        and (query.search is None or run.id.startswith(query.search)
             or (run.dedup_key is not None and run.dedup_key.startswith(query.search)))
    )  # fmt: skip


def _at_step(run: RunRecord, name: str) -> bool:
    return not run.finished and run.current_step is not None and f",{name}," in f",{run.current_step},"


def sort_key(query: RunQuery, run: RunRecord) -> tuple[datetime, str] | None:
    """The run's (order key, id), or ``None`` when it lacks the timestamp (it is then not listed)."""
    key: datetime | None = getattr(run, query.order_key)
    return None if key is None else (key, run.id)


def page_of(query: RunQuery, runs: Sequence[RunRecord]) -> tuple[list[RunRecord], str | None]:
    """The page ``query`` asks for out of ``runs`` (all of them, in any order), and the next cursor."""
    keyed = [(key, run) for run in runs if matches(query, run) and (key := sort_key(query, run)) is not None]
    keyed.sort(key=lambda pair: pair[0], reverse=query.descending)
    if query.after is not None:
        after = query.after
        keyed = [(k, r) for k, r in keyed if (k < after if query.descending else k > after)]
    page = [run for _, run in keyed[: query.limit]]
    return page, next_cursor(query, page, more=len(keyed) > query.limit)


def next_cursor(query: RunQuery, page: Sequence[RunRecord], *, more: bool) -> str | None:
    """The cursor after the last run of ``page`` when there are more runs, else ``None``."""
    if not more or not page:
        return None
    last = page[-1]
    key = getattr(last, query.order_key)
    assert key is not None, "runs without the order key are never listed"
    return encode_cursor(query.order, key, last.id)


def page_from(query: RunQuery, runs: list[RunRecord]) -> RunPage:
    """The page out of the rows a SQL store fetched (``limit + 1`` at most: one more tells there is a next page)."""
    page = runs[: query.limit]
    return RunPage(runs=page, next_cursor=next_cursor(query, page, more=len(runs) > query.limit))


def stored_step(value: str | Unset | None) -> str | None:
    """``Append.current_step`` as the SQL stores pass it: ``NULL`` leaves the column as it is, ``''`` clears it
    (a step name is never empty)."""
    if isinstance(value, Unset):
        return None
    return "" if value is None else value


# --- the shape of the SQL statement ---------------------------------------------------------------------------

_UNFINISHED = frozenset({"pending", "running", "waiting"})
DEFAULT_QUEUE = "default"
"""The queue of runs started without one (``NewRun.queue``)."""


def filters(query: RunQuery) -> list[tuple[str, tuple[Any, ...]]]:
    """The named filters of ``query`` in a fixed order, each with its parameter values: the SQL stores map each
    name to a fragment of their dialect (``_pg_listing``, ``_sqlite_listing``) and cache one statement per
    sequence of names, so that each gets a plan that uses the right index (no ``$n IS NULL OR …`` tests)."""
    wanted: list[tuple[str, tuple[Any, ...]]] = []
    if query.workflow is not None:
        wanted.append(("workflow", (query.workflow,)))
    # Some shapes depend on a value, to add a literal the partial indexes need: completed runs (most of them) are
    # not in durable_runs_status_created, default-queue runs not in durable_runs_queue_created (those filters
    # read durable_runs_created instead, where they are most rows), unfinished runs alone are durable_runs_active.
    if len(query.statuses) == 1:
        wanted.append(("status" if query.statuses[0] == COMPLETED else "status_not_completed", query.statuses))
    elif query.statuses:
        if _UNFINISHED.issuperset(query.statuses):
            kind = "statuses_active"
        else:
            kind = "statuses" if COMPLETED in query.statuses else "statuses_not_completed"
        wanted.append((kind, (list(query.statuses),)))
    if query.current_step is not None:
        wanted.append(("current_step", (query.current_step,)))
    if query.created_after is not None:
        wanted.append(("started_after", (query.created_after,)))
    if query.created_before is not None:
        wanted.append(("started_before", (query.created_before,)))
    if query.queue is not None:
        wanted.append(("queue" if query.queue == DEFAULT_QUEUE else "queue_not_default", (query.queue,)))
    if query.parent_id is not None:
        wanted.append(("parent_id", (query.parent_id,)))
    if query.search_range is not None:
        wanted.append(("search", query.search_range))
    return wanted


class ListsRuns:
    """``Store.list_runs`` for every store: the arguments are checked and turned into a ``RunQuery`` here, once;
    a store only says how to run one (``_list_page``)."""

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        current_step: str | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
        queue: str | None = None,
        parent_id: str | None = None,
        search: str | None = None,
        order_by: str = "-created_at",
    ) -> RunPage:
        """Runs filtered and ordered as this module says, keyset-paginated (see ``Store.list_runs``)."""
        query = run_query(workflow=workflow, status=status, limit=limit, cursor=cursor, current_step=current_step,
                          started_after=started_after, started_before=started_before, queue=queue,
                          parent_id=parent_id, search=search, order_by=order_by)
        return await self._list_page(query)

    async def _list_page(self, query: RunQuery) -> RunPage:
        """One page of the runs ``query`` selects."""
        raise NotImplementedError
