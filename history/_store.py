"""The storage interface every backend implements, and the URL parsing that picks a backend.

A ``Store`` keeps runs (one row each) and their append-only histories. Its guarantees, checked by the contract
suite in ``tests/test_store_contract.py`` against every backend:

* events are never updated or deleted (the database refuses it, not only this code);
* ``append`` succeeds only for the current lease holder (``worker_id`` and ``epoch``) and only at the run's next
  sequence number, so a stale worker's append fails with ``LeaseLost`` and never interleaves;
* ``create_run`` is idempotent on the run id: a second create returns the existing run (``create_runs`` is the
  same for a batch, in one transaction);
* ``claim`` hands each ready run to at most one worker at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from ._events import RecordedEvent
from ._live import StepNotice
from ._metrics import RunStats
from ._notify import AppendedListener, Hub
from ._records import (
    UNSET,
    Append,
    Claim,
    Heartbeat,
    LogLine,
    Message,
    NewRun,
    PendingInput,
    QueueConfig,
    QueueStats,
    RunPage,
    RunRecord,
    Unset,
)


@runtime_checkable
class Store(Protocol):
    """A backend for runs and histories. Obtain one with ``history.open_store(url)``."""

    url: str
    """The URL it was opened with, password removed (for messages)."""

    hub: Hub
    """In-process wake-ups; backends that can (Postgres) also feed it from other processes."""

    async def open(self) -> None:
        """Connect and create or upgrade the schema (guarded against two processes doing it at once)."""

    async def close(self) -> None:
        """Release connections. The store cannot be used afterwards."""

    async def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Create a run with ``RunStarted`` as event 1; return ``(run, True)``, or ``(existing, False)``
        when a run with that id exists already (the id is an idempotency key), or when ``new.dedup_key`` is
        set and an unfinished run has the same key (finished runs free their key)."""

    async def create_runs(self, news: Sequence[NewRun]) -> list[tuple[RunRecord, bool]]:
        """``create_run`` for each of ``news`` in order, atomically (one transaction; one round trip on
        PostgreSQL), with one wake-up of workers for the batch. Returns one ``(run, created)`` per item; an item
        whose id or dedup key an earlier item of the batch took gets ``(that run, False)`` (the first wins)."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's row, or ``None``."""

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
        """Runs matching every filter given, in ``order_by`` (then id), ``limit`` at a time; pass a page's
        ``next_cursor`` as ``cursor`` for the next. ``status``: one or several; ``current_step``: one of the
        names in the run's ``current_step``; ``started_after <= created_at < started_before``; ``search``: the
        run id or dedup key starts with it; ``order_by``: ``created_at``, ``started_at``, ``finished_at`` or
        ``updated_at``, ``-`` for newest first (runs without that time are not listed). Raises ``ValueError`` for
        bad arguments or a cursor of another order. See ``history._listing``."""

    async def read_history(self, run_id: str, after_seq: int = 0) -> list[RecordedEvent]:
        """The run's events with ``seq > after_seq`` in order, in one round trip."""

    async def claim(
        self,
        worker_id: str,
        workflows: Sequence[str],
        limit: int,
        lease_seconds: float,
        queue: str | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` ready runs of the given workflows (of ``queue`` only, when given) to
        ``worker_id`` and return them with their histories. Ready: not finished, ``wake_at`` null or past, no
        live lease, and its queue not paused. Highest priority first, then earliest ``wake_at``/creation (FIFO
        within a priority). Claiming bumps ``lease_epoch`` and sets status ``running``.

        A queue's ``global_concurrency`` bounds its leased runs across all workers, and its ``rate_limit`` the
        runs started for the first time per ``rate_period``: a claim takes no more than both allow, and two
        workers claiming at once never exceed them together."""

    async def append(self, batch: Sequence[Append]) -> list[Exception | None]:
        """Apply each append atomically (events and row update in one commit; a backend may share one commit
        between the items). Returns, per item, ``None`` or the ``LeaseLost``/``HistoryConflict`` that refused it.
        Notifies waiters of ``run finished`` and of newly ready work.

        A release of a run that still has unconsumed messages makes it ready at once (``wake_at`` NULL), so a
        message that arrived while the run was held is never left waiting behind a long sleep.

        In the same commit: marks ``consumed`` inbox messages consumed, replaces ``state``, opens and closes
        pending inputs (a finishing run closes all of its own), and when the run finishes and has a parent,
        puts a ``"child"`` message (``{"status", "result", "error"}``) in the parent's inbox and wakes it, and
        stores the item's ``logs`` (numbering them)."""

    async def write_logs(self, lines: Sequence[LogLine]) -> None:
        """Store captured log lines now, unfenced (the live tail of a long step: the rest of its lines go with
        its outcome, in ``Append.logs``). Their ``id`` fields are ignored: the store numbers lines in order."""

    async def read_logs(
        self,
        run_id: str,
        *,
        step: str | None = None,
        attempt: int | None = None,
        min_level: int | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[LogLine]:
        """The run's log lines with ``id > after_id``, by id, filtered by step name, attempt number and lowest
        level; at most ``limit``. Pass the last id seen as ``after_id`` to read on (or to tail a live run)."""

    async def note_current_step(self, run_id: str, worker_id: str, epoch: int, current_step: str | None) -> None:
        """Set the run's ``current_step`` between appends (a long step the run's last append did not know of yet,
        such as the first step of a fresh or just-woken run). Written only while ``worker_id`` holds the lease at
        ``epoch``; otherwise nothing happens (the worker learns of a lost lease from its heartbeat or append).
        Leaves ``updated_at`` alone: it is not a change of the run's state."""

    async def heartbeat(self, worker_id: str, leases: dict[str, int], lease_seconds: float) -> Heartbeat:
        """Extend the leases held (run id -> epoch); report lost ones and pending cancellations."""

    async def request_cancel(self, run_id: str, reason: str) -> RunRecord:
        """Ask for a run to be cancelled: records the reason, makes a sleeping run ready now, and notifies the
        run's message listeners (the worker driving it, in any process). Raises ``RunNotFound``; a finished run
        is returned unchanged."""

    async def mark_blocked(self, run_id: str, worker_id: str, epoch: int, report: str, retry_at: datetime) -> None:
        """Leave a run whose replay diverged untouched but flagged with ``report``; release its lease and
        retry it at ``retry_at`` (fixed code may have been deployed by then)."""

    async def next_wake_at(self, workflows: Sequence[str]) -> datetime | None:
        """The earliest time a run of these workflows may become claimable: the ``wake_at`` of unleased
        unfinished runs, or the expiry of a lease (a crashed worker's runs are taken over when it passes)."""

    async def register_workflows(self, worker_id: str, names: Sequence[str]) -> None:
        """Record that a worker serves these workflow names (so a client can tell unknown names)."""

    async def known_workflows(self) -> set[str]:
        """Every workflow name any worker has registered."""

    # -- waiting on the world (inbox, inputs, children) ---------------------------------------------------------

    async def send_message(self, run_id: str, kind: str, name: str, payload: bytes) -> Message:
        """Put a message in a run's inbox and wake the run (an unleased run becomes ready at once; the worker
        holding it is notified). Raises ``RunNotFound``, or ``RunAlreadyFinished`` for a finished run."""

    async def read_inbox(self, run_id: str) -> list[Message]:
        """The run's unconsumed messages, oldest first."""

    async def list_pending_inputs(
        self, *, run_id: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[PendingInput]:
        """Open inputs (asked, not yet provided, not closed) of unfinished runs, oldest first."""

    async def provide_input(self, run_id: str, key: str, payload: bytes) -> Message:
        """Answer an open input: atomically mark it provided and put the answer in the run's inbox. Raises
        ``RunNotFound``, ``RunAlreadyFinished``, ``InputAlreadyProvided`` (a second answer) or
        ``InputNotPending`` (no open input with that key)."""

    async def list_children(self, parent_id: str) -> list[RunRecord]:
        """Runs whose ``parent_id`` is ``parent_id``, oldest first."""

    # -- queues -------------------------------------------------------------------------------------------------

    async def configure_queue(
        self,
        name: str,
        *,
        paused: bool | None = None,
        global_concurrency: int | Unset | None = UNSET,
        rate_limit: int | Unset | None = UNSET,
        rate_period: float | Unset | None = UNSET,
    ) -> QueueConfig:
        """Change a queue's settings (``UNSET`` leaves one as it is, ``None`` removes a limit); returns them.
        Pausing wakes no one; resuming notifies workers."""

    async def list_queues(self) -> list[QueueConfig]:
        """Every queue that has runs or settings, by name (defaults for those never configured)."""

    async def queue_stats(self, name: str) -> QueueStats:
        """Counts of the queue's unfinished runs by state, its oldest pending age, and its settings."""

    # -- metrics and retention ----------------------------------------------------------------------------------

    async def run_metrics(self, workflow: str | None, since: datetime) -> list[RunStats]:
        """Counts and durations of the runs created at or after ``since`` (definitions: ``history._metrics``):
        with ``workflow``, one ``RunStats`` for it; without, the total first (``workflow`` None), then one per
        workflow with runs in the period, by name. Computed by the database where there is one."""

    async def count_finished(self, before: Mapping[str, datetime]) -> dict[str, int]:
        """How many runs ``delete_finished(before)`` would delete in all (every batch), by status."""

    async def delete_finished(self, before: Mapping[str, datetime], *, limit: int) -> dict[str, int]:
        """Delete up to ``limit`` runs whose status is a key of ``before`` (finished statuses only, else
        ``ValueError``) and that finished before its cut-off, with every row of theirs (history, inbox, inputs),
        in one short transaction; return how many of each status went. Unfinished runs are never touched.
        Runs another transaction holds locked are skipped, so concurrent jobs share the work."""

    # -- live events (engine.subscribe) -------------------------------------------------------------------------

    def notify_step_started(self, notices: Sequence[StepNotice]) -> None:
        """Tell subscribers that step attempts started: this process's at once (``hub``), other processes' where
        the backend reaches them (PostgreSQL, batched NOTIFYs, only while some process watches). Best effort and
        never blocks: a notice is not stored, and a lost one only delays a subscriber's ``step_started`` until
        the attempt's outcome is recorded. (Appended events are announced by ``hub.notify_appended``, after
        every commit that adds events, and relayed from other processes on PostgreSQL.)"""

    async def subscribe_live(
        self, on_appended: AppendedListener, on_step_started: Callable[[StepNotice], None]
    ) -> Callable[[], None]:
        """From now on, call ``on_appended(run_id, last_seq, first_seq)`` whenever a run's history grows and
        ``on_step_started(notice)`` whenever a step attempt starts, in this process and, where the backend reaches
        them, in others (PostgreSQL: both; SQLite: appends, by tailing the events table while subscribed);
        returns the function that stops it. Calls may be lost, repeated or coalesced: a subscriber reads the
        events themselves with ``read_history`` (after the last it saw).
        On PostgreSQL the first subscription of a store starts listening to the live channels, and workers in
        other processes send step-start notices once they hear of it (announced before this returns)."""
