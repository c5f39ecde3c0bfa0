"""Moving histories between a database and files: select runs to export, import a history into a database.

Import goes through the ``Store`` protocol only, as a worker would write the run: ``create_run`` (event 1),
``claim``, ``append`` of the recorded events in their original commits (grouped by their recorded time, which
each append stamps on its events), and a final append that sets the run's status and result and releases it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from history import (
    CONTINUED,
    FINISHED_STATUSES,
    PENDING,
    WAITING,
    Append,
    Claim,
    Event,
    NewRun,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    RunNotFound,
    RunRecord,
    StateUpdated,
    Store,
)

from ._durations import parse_moment
from ._history_file import HistoryDocument, HistoryFileError

_IMPORT_LEASE_SECONDS = 60.0
_CLAIM_ATTEMPTS = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The ``wake_at`` an imported run is created with: due, and first in claim order, so the importer's own claim
takes it ahead of other ready runs of the same workflow."""


# -- export ---------------------------------------------------------------------------------------------------


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``30m``, ``12h``, ``1d``, ``2w``) or an ISO date/time."""
    return parse_moment(text, what="--since", now=now)


async def select_runs(
    store: Store,
    *,
    workflow: str | None,
    status: str | None,
    since: datetime | None,
    limit: int,
) -> list[RunRecord]:
    """Runs matching the filters, newest first, at most ``limit``."""
    runs: list[RunRecord] = []
    cursor: str | None = None
    while len(runs) < limit:
        page = await store.list_runs(workflow=workflow, status=status, limit=min(500, limit), cursor=cursor)
        for run in page.runs:
            if since is not None and run.created_at < since:
                return runs  # newest first: every later run is older still
            runs.append(run)
            if len(runs) == limit:
                return runs
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return runs


async def read_run(store: Store, run_id: str) -> tuple[RunRecord, list[RecordedEvent]]:
    """A run's row and its whole history; ``RunNotFound`` names the database and how to find ids."""
    run = await store.get_run(run_id)
    if run is None:
        raise RunNotFound(f"no run with id {run_id!r} in {store.url}: check the id with `durable list`")
    return run, await store.read_history(run_id)


# -- import ---------------------------------------------------------------------------------------------------


async def import_document(store: Store, document: HistoryDocument, where: str) -> bool:
    """Write ``document``'s run into ``store`` with the same id, events and event times (except event 1, which
    ``create_run`` stamps with the time of the import). Returns False when the run is there already with the
    same events; raises ``HistoryFileError`` when a run of that id has another history.

    An imported run that had not finished becomes ready (or waits for its recorded wake-up time): a worker of
    that database serving its workflow resumes it, which is how a problem is reproduced elsewhere.
    """
    run_info = document.run
    existing = await store.get_run(run_info.id)
    if existing is not None:
        return await _already_there(store, document, where)
    started = document.run_started
    new = NewRun(
        id=run_info.id,
        workflow=started.workflow,
        input=started.input,
        random_seed=started.random_seed,
        queue=run_info.queue,
        priority=run_info.priority,
        parent_id=started.parent_id,
        wake_at=_EPOCH,
        deadline=started.deadline,
        continued_from=started.continued_from,
    )
    _, created = await store.create_run(new)
    if not created:  # pragma: no cover - created by someone else between the two calls
        return await _already_there(store, document, where)
    worker_id = f"durable-import-{secrets.token_hex(4)}"
    claim = await _claim_own(store, worker_id, run_info.id, started.workflow, where)
    await _append_events(store, worker_id, claim, document)
    return True


async def _already_there(store: Store, document: HistoryDocument, where: str) -> bool:
    stored = await store.read_history(document.run.id)
    # Event 1's time is the import's own, so it is left out of the comparison.
    if [r.event for r in stored] == [r.event for r in document.events] and all(
        a.seq == b.seq and a.at == b.at for a, b in zip(stored[1:], document.events[1:], strict=True)
    ):
        return False
    raise HistoryFileError(
        f"{where}: run {document.run.id!r} exists already in {store.url} with another history ({len(stored)} "
        f"events, the file has {len(document.events)}); histories are never overwritten. Import it into "
        f"another database (--database-url)"
    )


async def _claim_own(store: Store, worker_id: str, run_id: str, workflow: str, where: str) -> Claim:
    """Lease the run just created. It is first in claim order (``_EPOCH``) unless a ready run of a higher
    priority exists; such runs are handed back at once, unchanged but for their status word."""
    foreign: list[Claim] = []
    try:
        for _ in range(_CLAIM_ATTEMPTS):
            claims = await store.claim(worker_id, [workflow], 1, _IMPORT_LEASE_SECONDS)
            if not claims:
                break
            if claims[0].run.id == run_id:
                return claims[0]
            foreign.append(claims[0])
    finally:
        for other in foreign:
            await _hand_back(store, worker_id, other)
    raise HistoryFileError(
        f"{where}: a worker on {store.url} took run {run_id!r} before its history was imported (it serves "
        f"workflow {workflow!r}). Stop the workers of that database while importing, and import into another "
        f"database: this one now holds the run with only part of its history"
    )


async def _hand_back(store: Store, worker_id: str, claim: Claim) -> None:
    run = claim.run
    status = PENDING if run.next_seq <= 2 else WAITING
    item = Append(run_id=run.id, worker_id=worker_id, epoch=run.lease_epoch, first_seq=run.next_seq, events=[],
                  at=datetime.now(UTC), status=status, wake_at=None, release=True)
    await store.append([item])


async def _append_events(store: Store, worker_id: str, claim: Claim, document: HistoryDocument) -> None:
    """Append events 2… in groups of equal recorded time (one group per original commit), then the final state."""
    groups = _groups(document.events[1:])
    final = _final_update(document)
    next_seq = claim.run.next_seq
    if not groups:
        groups = [(datetime.now(UTC), [])]
    for index, (at, events) in enumerate(groups):
        update = final if index == len(groups) - 1 else {}
        item = Append(run_id=claim.run.id, worker_id=worker_id, epoch=claim.run.lease_epoch, first_seq=next_seq,
                      events=events, at=at, **update)
        (problem,) = await store.append([item])
        if problem is not None:
            raise problem
        next_seq += len(events)


def _groups(events: Sequence[RecordedEvent]) -> list[tuple[datetime, list[Event]]]:
    groups: list[tuple[datetime, list[Event]]] = []
    for rec in events:
        if groups and groups[-1][0] == rec.at:
            groups[-1][1].append(rec.event)
        else:
            groups.append((rec.at, [rec.event]))
    return groups


def _final_update(document: HistoryDocument) -> dict[str, Any]:
    """The row update of the last append: the run's end, or (unfinished) its status and wake-up time; and the
    state the workflow published (``ctx.set_state``), rebuilt from its ``state_updated`` events."""
    update: dict[str, Any] = {"release": True}
    state = {r.event.key: r.event.value for r in document.events if isinstance(r.event, StateUpdated)}
    if state:
        update["state"] = msgspec.json.encode(state)  # values are raw JSON: written as recorded
    end = document.events[-1].event
    if isinstance(end, RunCompleted):
        return {**update, "status": "completed", "result": bytes(end.result)}
    if isinstance(end, RunFailed):
        return {**update, "status": "failed", "error": end.error}
    if isinstance(end, RunCancelled):
        return {**update, "status": "cancelled"}
    if isinstance(end, RunContinued):  # the row's result names the run that carries on
        return {**update, "status": CONTINUED, "result": msgspec.json.encode(end.new_run_id)}
    status = document.run.status if document.run.status in (PENDING, WAITING) else PENDING
    assert status not in FINISHED_STATUSES
    return {**update, "status": status, "wake_at": document.run.wake_at}
