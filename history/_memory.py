"""The in-memory store: the reference implementation of ``Store``, for users' unit tests and ``durable.testing``.

Same semantics as the database stores (the contract suite runs against it too); nothing survives the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from ._errors import (
    HistoryConflict,
    InputAlreadyProvided,
    InputNotPending,
    LeaseLost,
    RunAlreadyFinished,
    RunNotFound,
)
from ._events import RecordedEvent
from ._listing import ListsRuns, RunQuery, page_of
from ._logs import LogQuery, ReadsLogs, select_lines
from ._memory_metrics import MemoryMetrics
from ._notify import Hub, InProcessLive
from ._records import (
    FINISHED_STATUSES,
    PENDING,
    RUNNING,
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
    child_outcome,
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MemoryStore(ListsRuns, ReadsLogs, InProcessLive, MemoryMetrics):
    """Runs and histories in dictionaries. ``clock`` can be replaced (``durable.testing`` uses a virtual one)."""

    def __init__(self, url: str = "memory://", clock: Callable[[], datetime] = _utcnow) -> None:
        self.url = url
        self.hub = Hub()
        self.clock = clock
        self._runs: dict[str, RunRecord] = {}
        self._events: dict[str, list[RecordedEvent]] = {}
        self._workflows: dict[str, set[str]] = {}
        self._inbox: dict[int, Message] = {}  # unconsumed messages by id
        self._inputs: dict[tuple[str, str], PendingInput] = {}  # open inputs by (run id, key)
        self._provided: set[tuple[str, str]] = set()
        self._next_message_id = 1
        self._queues: dict[str, QueueConfig] = {}
        self._logs: dict[str, list[LogLine]] = {}  # by run id, in id order
        self._next_log_id = 1
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Create the run and its ``RunStarted`` event, or return the existing run with that id."""
        async with self._lock:
            run, created = self._create_run(new)
        if created:
            self.hub.notify_work()
            self.hub.notify_appended(run.id, 1, 1)
        return run, created

    async def create_runs(self, news: Sequence[NewRun]) -> list[tuple[RunRecord, bool]]:
        """``create_run`` for each, in order, under one hold of the lock; one wake-up for the batch."""
        async with self._lock:
            results = [self._create_run(new) for new in news]
        if any(created for _, created in results):
            self.hub.notify_work()
            for run, created in results:
                if created:
                    self.hub.notify_appended(run.id, 1, 1)
        return results

    def _create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        existing = self._runs.get(new.id)
        if existing is None and new.dedup_key is not None:
            existing = next((r for r in self._runs.values() if r.dedup_key == new.dedup_key and not r.finished), None)
        if existing is not None:
            return existing, False
        now = self.clock()
        run = RunRecord(
            id=new.id,
            workflow=new.workflow,
            status=PENDING,
            input=bytes(new.input),
            created_at=now,
            updated_at=now,
            next_seq=2,
            queue=new.queue,
            priority=new.priority,
            parent_id=new.parent_id,
            wake_at=new.wake_at,
            continued_from=new.continued_from,
            dedup_key=new.dedup_key,
            trace_context=new.trace_context,
        )
        started = new.started_event()
        self._runs[new.id] = run
        self._events[new.id] = [RecordedEvent(seq=1, at=now, event=started)]
        return run, True

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's row, or ``None``."""
        return self._runs.get(run_id)

    async def _list_page(self, query: RunQuery) -> RunPage:
        """One page of runs, filtered and sorted here (the reference the SQL stores are tested against)."""
        page, cursor = page_of(query, list(self._runs.values()))
        return RunPage(runs=page, next_cursor=cursor)

    async def read_history(self, run_id: str, after_seq: int = 0) -> list[RecordedEvent]:
        """The run's events after ``after_seq``."""
        return self._events.get(run_id, [])[after_seq:]

    def _ready(self, run: RunRecord, now: datetime, workflows: Sequence[str]) -> bool:
        if run.status in FINISHED_STATUSES or run.workflow not in workflows:
            return False
        if self._queues.get(run.queue, QueueConfig(run.queue)).paused:
            return False
        if run.wake_at is not None and run.wake_at > now:
            return False
        return run.lease_owner is None or (run.lease_expires_at is not None and run.lease_expires_at <= now)

    async def claim(
        self,
        worker_id: str,
        workflows: Sequence[str],
        limit: int,
        lease_seconds: float,
        queue: str | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` ready runs, highest priority first, then oldest, within the queues' limits."""
        async with self._lock:
            now = self.clock()
            ready = [
                r
                for r in self._runs.values()
                if (queue is None or r.queue == queue) and self._ready(r, now, workflows)
            ]
            ready.sort(key=lambda r: (-r.priority, r.wake_at or r.created_at, r.created_at, r.id))
            allowance = {name: self._allowance(name, now) for name in {r.queue for r in ready}}
            chosen: list[RunRecord] = []
            for run in ready:
                if len(chosen) >= limit:
                    break
                room, starts = allowance[run.queue]
                first_start = run.started_at is None
                if room <= 0 or (first_start and starts <= 0):
                    continue
                allowance[run.queue] = (room - 1, starts - 1 if first_start else starts)
                chosen.append(run)
            claims = []
            for run in chosen:
                leased = msgspec.structs.replace(
                    run,
                    status=RUNNING,
                    lease_owner=worker_id,
                    lease_epoch=run.lease_epoch + 1,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    started_at=run.started_at or now,
                    updated_at=now,
                    wake_at=None,
                )
                self._runs[run.id] = leased
                due_at = run.wake_at or run.created_at
                claims.append(Claim(run=leased, history=list(self._events[run.id]), due_at=due_at))
            return claims

    def _allowance(self, queue: str, now: datetime) -> tuple[float, float]:
        """How many more runs of ``queue`` may be leased now, and how many more may start for the first time."""
        config = self._queues.get(queue, QueueConfig(queue))
        room: float = float("inf")
        starts: float = float("inf")
        if config.global_concurrency is not None:
            leased = sum(
                1
                for r in self._runs.values()
                if r.queue == queue
                and r.lease_owner is not None
                and r.lease_expires_at is not None
                and r.lease_expires_at > now
                and not r.finished
            )
            room = config.global_concurrency - leased
        if config.rate_limit is not None and config.rate_period is not None:
            since = now - timedelta(seconds=config.rate_period)
            started = sum(1 for r in self._runs.values() if r.queue == queue and r.started_at and r.started_at > since)
            starts = config.rate_limit - started
        return room, starts

    def _holds(self, run: RunRecord | None, worker_id: str, epoch: int, now: datetime) -> bool:
        return (
            run is not None
            and run.lease_owner == worker_id
            and run.lease_epoch == epoch
            and run.lease_expires_at is not None
            and run.lease_expires_at > now
        )

    async def append(self, batch: Sequence[Append]) -> list[Exception | None]:
        """Apply each append if its writer holds the lease and starts at the next sequence number."""
        outcomes: list[Exception | None] = []
        finished: list[str] = []
        messaged: list[str] = []
        grown: list[Append] = []
        wake = False
        async with self._lock:
            now = self.clock()
            for item in batch:
                run = self._runs.get(item.run_id)
                if run is None or not self._holds(run, item.worker_id, item.epoch, now):
                    outcomes.append(LeaseLost(f"run {item.run_id!r}: this worker no longer holds its lease"))
                    continue
                if run.next_seq != item.first_seq:
                    outcomes.append(
                        HistoryConflict(
                            f"run {item.run_id!r}: append at event {item.first_seq} but the history's next "
                            f"event is {run.next_seq}"
                        )
                    )
                    continue
                events = self._events[item.run_id]
                for offset, event in enumerate(item.events):
                    events.append(RecordedEvent(seq=item.first_seq + offset, at=item.at, event=event))
                if item.release and item.wake_at is not None and self._has_messages(run.id, item.consumed):
                    # A message came while the run was held: released, it must be ready at once, not asleep.
                    item = msgspec.structs.replace(item, wake_at=None)
                self._runs[item.run_id] = run = self._apply(run, item, now)
                self._apply_side_tables(run, item, now)
                if item.logs:
                    self._add_logs(item.logs)
                outcomes.append(None)
                if item.events:
                    grown.append(item)
                if item.status in FINISHED_STATUSES:
                    finished.append(item.run_id)
                    if run.parent_id is not None and self._child_message(run, now):
                        messaged.append(run.parent_id)
                elif item.release:
                    wake = True
        for item in grown:
            self.hub.notify_appended(item.run_id, item.first_seq + len(item.events) - 1, item.first_seq)
        for run_id in finished:
            self.hub.notify_finished(run_id)
        for run_id in messaged:
            self.hub.notify_message(run_id)
        if wake:
            self.hub.notify_work()
        return outcomes

    @staticmethod
    def _apply(run: RunRecord, item: Append, now: datetime) -> RunRecord:
        status = item.status or run.status
        changes: dict[str, object] = {
            "status": status,
            "next_seq": run.next_seq + len(item.events),
            "updated_at": now,
            "blocked": None,
            "wake_at": item.wake_at,
        }
        if item.result is not None:
            changes["result"] = item.result
        if item.error is not None:
            changes["error"] = item.error
        if status in FINISHED_STATUSES:
            changes["finished_at"] = now
            changes["wake_at"] = None
            changes["current_step"] = None
        elif not isinstance(item.current_step, Unset):
            changes["current_step"] = item.current_step
        if item.release or status in FINISHED_STATUSES:
            changes.update(lease_owner=None, lease_expires_at=None)
        if item.state is not None:
            changes["state"] = item.state
        return msgspec.structs.replace(run, **changes)

    def _has_messages(self, run_id: str, consumed: Sequence[int]) -> bool:
        return any(m.run_id == run_id and m.id not in consumed for m in self._inbox.values())

    def _apply_side_tables(self, run: RunRecord, item: Append, now: datetime) -> None:
        for message_id in item.consumed:
            message = self._inbox.get(message_id)
            if message is not None and message.run_id == run.id:
                del self._inbox[message_id]
        for pending in item.open_inputs:
            self._inputs[(run.id, pending.key)] = pending
            self._provided.discard((run.id, pending.key))  # asked again (a loop): open to a new answer
        for key in item.close_inputs:
            self._inputs.pop((run.id, key), None)
        if run.finished:
            for open_key in [k for k in self._inputs if k[0] == run.id]:
                del self._inputs[open_key]

    def _add_logs(self, lines: Sequence[LogLine]) -> None:
        for line in lines:
            numbered = msgspec.structs.replace(line, id=self._next_log_id)
            self._next_log_id += 1
            self._logs.setdefault(line.run_id, []).append(numbered)

    async def write_logs(self, lines: Sequence[LogLine]) -> None:
        """Store log lines now (unfenced), numbering them."""
        async with self._lock:
            self._add_logs(lines)

    async def _read_log_lines(self, query: LogQuery) -> list[LogLine]:
        """The run's log lines after ``after_id``, by id, filtered (``Store.read_logs``)."""
        return select_lines(self._logs.get(query.run_id, ()), query)

    def _child_message(self, child: RunRecord, now: datetime) -> bool:
        parent = self._runs.get(child.parent_id or "")
        if parent is None or parent.finished:
            return False
        self._put_message(parent, "child", child.id, child_outcome(child), now)
        return True

    def _put_message(self, run: RunRecord, kind: str, name: str, payload: bytes, now: datetime) -> Message:
        message = Message(id=self._next_message_id, run_id=run.id, kind=kind, name=name, payload=payload,
                          sent_at=now)
        self._next_message_id += 1
        self._inbox[message.id] = message
        if run.lease_owner is None:
            self._runs[run.id] = msgspec.structs.replace(run, wake_at=None, updated_at=now)
        return message

    async def heartbeat(self, worker_id: str, leases: dict[str, int], lease_seconds: float) -> Heartbeat:
        """Extend held leases; report lost ones and requested cancellations."""
        lost: set[str] = set()
        cancels: dict[str, str] = {}
        async with self._lock:
            now = self.clock()
            for run_id, epoch in leases.items():
                run = self._runs.get(run_id)
                if run is None or not self._holds(run, worker_id, epoch, now):
                    lost.add(run_id)
                    continue
                self._runs[run_id] = msgspec.structs.replace(
                    run, lease_expires_at=now + timedelta(seconds=lease_seconds)
                )
                if run.cancel_reason is not None:
                    cancels[run_id] = run.cancel_reason
            with_messages = {m.run_id for m in self._inbox.values() if m.run_id in leases and m.run_id not in lost}
        return Heartbeat(lost=frozenset(lost), cancels=cancels, messages=frozenset(with_messages))

    async def request_cancel(self, run_id: str, reason: str) -> RunRecord:
        """Record a cancellation request; a sleeping run becomes ready now."""
        async with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFound(f"no run with id {run_id!r}")
            if run.finished:
                return run
            run = msgspec.structs.replace(run, cancel_reason=reason, wake_at=None, updated_at=self.clock())
            self._runs[run_id] = run
        self.hub.notify_message(run_id)  # the driver of the run re-reads it; also wakes workers
        return run

    async def note_current_step(self, run_id: str, worker_id: str, epoch: int, current_step: str | None) -> None:
        """Set the held run's ``current_step`` (see ``Store.note_current_step``)."""
        async with self._lock:
            run = self._runs.get(run_id)
            if run is not None and not run.finished and self._holds(run, worker_id, epoch, self.clock()):
                self._runs[run_id] = msgspec.structs.replace(run, current_step=current_step)

    async def mark_blocked(self, run_id: str, worker_id: str, epoch: int, report: str, retry_at: datetime) -> None:
        """Flag a diverged run and release it until ``retry_at``."""
        async with self._lock:
            run = self._runs.get(run_id)
            if not self._holds(run, worker_id, epoch, self.clock()):
                raise LeaseLost(f"run {run_id!r}: this worker no longer holds its lease")
            assert run is not None
            self._runs[run_id] = msgspec.structs.replace(
                run, blocked=report, wake_at=retry_at, lease_owner=None, lease_expires_at=None, updated_at=self.clock()
            )

    async def next_wake_at(self, workflows: Sequence[str]) -> datetime | None:
        """Earliest future wake time among unleased, unfinished runs of these workflows."""
        times = [
            r.wake_at if r.lease_owner is None else r.lease_expires_at
            for r in self._runs.values()
            if r.workflow in workflows and r.status not in FINISHED_STATUSES
        ]
        # A lease that expires makes its run claimable: a crashed worker's runs are taken over then.
        return min((t for t in times if t is not None), default=None)

    async def register_workflows(self, worker_id: str, names: Sequence[str]) -> None:
        """Remember the names this worker serves."""
        self._workflows[worker_id] = set(names)

    async def known_workflows(self) -> set[str]:
        """Every name any worker registered."""
        return set().union(*self._workflows.values()) if self._workflows else set()

    # -- waiting on the world -----------------------------------------------------------------------------------

    def _open_run(self, run_id: str) -> RunRecord:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        if run.finished:
            raise RunAlreadyFinished(f"run {run_id!r} has {run.status}; it takes no more events or input")
        return run

    async def send_message(self, run_id: str, kind: str, name: str, payload: bytes) -> Message:
        """Queue a message for the run and wake it."""
        async with self._lock:
            message = self._put_message(self._open_run(run_id), kind, name, payload, self.clock())
        self.hub.notify_message(run_id)
        return message

    async def read_inbox(self, run_id: str) -> list[Message]:
        """Unconsumed messages of the run, oldest first."""
        return sorted((m for m in self._inbox.values() if m.run_id == run_id), key=lambda m: m.id)

    async def list_pending_inputs(
        self, *, run_id: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[PendingInput]:
        """Open inputs, oldest first."""
        found = [
            p
            for (rid, key), p in self._inputs.items()
            if (run_id is None or rid == run_id)
            and (workflow is None or p.workflow == workflow)
            and (rid, key) not in self._provided
        ]
        return sorted(found, key=lambda p: (p.created_at, p.run_id, p.key))[: max(limit, 0)]

    async def provide_input(self, run_id: str, key: str, payload: bytes) -> Message:
        """Answer an open input once."""
        async with self._lock:
            run = self._open_run(run_id)
            if (run_id, key) in self._provided:
                raise InputAlreadyProvided(f"input {key!r} of run {run_id!r} was provided already")
            if (run_id, key) not in self._inputs:
                raise InputNotPending(f"run {run_id!r} does not wait for an input named {key!r}")
            self._provided.add((run_id, key))
            message = self._put_message(run, "input", key, payload, self.clock())
        self.hub.notify_message(run_id)
        return message

    async def list_children(self, parent_id: str) -> list[RunRecord]:
        """Child runs, oldest first."""
        return sorted((r for r in self._runs.values() if r.parent_id == parent_id), key=lambda r: (r.created_at, r.id))

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
        """Change a queue's settings; resuming or loosening a limit wakes the workers."""
        async with self._lock:
            config = self._queues.get(name, QueueConfig(name))
            changes: dict[str, object] = {}
            if paused is not None:
                changes["paused"] = paused
            for field, value in (
                ("global_concurrency", global_concurrency),
                ("rate_limit", rate_limit),
                ("rate_period", rate_period),
            ):
                if not isinstance(value, Unset):
                    changes[field] = value
            config = msgspec.structs.replace(config, **changes)
            self._queues[name] = config
        if not config.paused:
            self.hub.notify_work()
        return config

    async def list_queues(self) -> list[QueueConfig]:
        """Configured queues and queues that have runs, by name."""
        names = set(self._queues) | {r.queue for r in self._runs.values()}
        return [self._queues.get(name, QueueConfig(name)) for name in sorted(names)]

    async def queue_stats(self, name: str) -> QueueStats:
        """Counts of the queue's unfinished runs by state."""
        now = self.clock()
        running = pending = scheduled = waiting = 0
        oldest: datetime | None = None
        for run in self._runs.values():
            if run.queue != name or run.finished:
                continue
            if run.lease_owner is not None and run.lease_expires_at is not None and run.lease_expires_at > now:
                running += 1
            elif run.wake_at is not None and run.wake_at > now:
                if run.started_at is None:
                    scheduled += 1
                else:
                    waiting += 1
            else:
                pending += 1
                due = run.wake_at or run.created_at
                oldest = due if oldest is None else min(oldest, due)
        age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
        config = self._queues.get(name, QueueConfig(name))
        return QueueStats(name, running, pending, scheduled, waiting, age, config)
