"""Live event streams: ``engine.subscribe(run_id)`` (or ``workflow=``, or every run) yields ``RunEvent``s as they
happen, from any process.

How it stays exact: the store tells a subscription only *that* a run's history grew (``hub.notify_appended``,
fed after every commit in this process and, on PostgreSQL, by the ``durable_events`` NOTIFY of other
processes); the subscription then reads the new events itself with ``read_history(run_id, after_seq=last seen)``.
So notices that are lost, repeated or coalesced never lose or repeat an event: for one run, the stream is its
history in order, read from ``after_seq`` first and then followed. A poll every ``_POLL`` seconds covers what no
notice reaches (another process on SQLite, a LISTEN connection being re-established).

Step starts are not in the history until the attempt ends (``StepScheduled`` is written with the outcome), so
workers also send live-only ``StepNotice``s. A subscription yields exactly one ``step_started`` per (command id,
attempt): from the notice when it comes first, else from the history (``StepScheduled`` for attempt 1; for a
later attempt, just before its outcome).
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import AsyncGenerator, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from history import (
    TERMINAL_EVENTS,
    CancelRequested,
    ChildFinished,
    ChildStarted,
    Event,
    EventWaitStarted,
    InputRequested,
    MessageReceived,
    PatchMarked,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    RunNotFound,
    RunStarted,
    StateUpdated,
    StepCompleted,
    StepFailed,
    StepNotice,
    StepScheduled,
    TimerFired,
    TimerStarted,
    ValueRecorded,
)

if TYPE_CHECKING:
    from history import Store

_POLL = 1.0
"""Seconds a run subscription waits for a notice before reading the history anyway (the fallback)."""

_REMEMBERED = 10_000
"""Runs an all-runs subscription remembers as "not of this workflow" or "finished" (least recently seen go)."""

_KINDS: dict[type[Any], str] = {
    RunStarted: "run_started",
    StepScheduled: "step_started",
    StepCompleted: "step_completed",
    StepFailed: "step_failed",
    TimerStarted: "timer_started",
    TimerFired: "timer_fired",
    ValueRecorded: "value_recorded",
    PatchMarked: "patch_marked",
    EventWaitStarted: "waiting",
    InputRequested: "waiting",
    MessageReceived: "message_received",
    ChildStarted: "child_started",
    ChildFinished: "child_finished",
    CancelRequested: "cancel_requested",
    StateUpdated: "state_updated",
    RunContinued: "continued",
    RunCompleted: "completed",
    RunFailed: "failed",
    RunCancelled: "cancelled",
}

RUN_EVENT_KINDS = tuple(dict.fromkeys(_KINDS.values()))
"""Every ``RunEvent.kind``, in the order of a run's life."""

TERMINAL_KINDS = frozenset({"completed", "failed", "cancelled", "continued"})
"""The kinds that end a run (and a subscription to it)."""


class RunEvent(msgspec.Struct, frozen=True):
    """Something that happened to a run, as ``engine.subscribe`` yields it.

    Attributes:
        kind: what happened: ``run_started``, ``step_started``, ``step_completed``, ``step_failed``,
            ``timer_started``, ``timer_fired``, ``value_recorded``, ``patch_marked``, ``waiting`` (for an event
            or a person's input), ``message_received``, ``child_started``, ``child_finished``,
            ``cancel_requested``, ``state_updated``, and the terminal ``completed``, ``failed``, ``cancelled``,
            ``continued``.
        run_id: the run.
        workflow: the run's workflow name.
        seq: the event's position in the run's history; ``None`` for a live-only notice (a ``step_started``
            sent by the worker when the attempt began, before anything is recorded).
        at: when it happened (for a recorded event, when it was appended).
        step: the step's name (``step_*`` kinds).
        command_id: the command the event belongs to (steps, timers, waits, children).
        attempt: the step attempt (``step_*`` kinds; ``step_started`` from ``StepScheduled`` is attempt 1).
        retry_at: for ``step_failed``, when the next attempt is due (``None``: the failure is final).
        event: the recorded history event (``history.StepCompleted`` …); ``None`` for a live-only notice.
    """

    kind: str
    run_id: str
    workflow: str
    seq: int | None
    at: datetime
    step: str | None = None
    command_id: int | None = None
    attempt: int | None = None
    retry_at: datetime | None = None
    event: Event | None = None

    @property
    def terminal(self) -> bool:
        """True for the run's last event (``completed``, ``failed``, ``cancelled``, ``continued``)."""
        return self.kind in TERMINAL_KINDS


def run_event(run_id: str, workflow: str, rec: RecordedEvent) -> RunEvent:
    """The ``RunEvent`` of a recorded event."""
    event = rec.event
    kind = _KINDS[type(event)]
    if isinstance(event, StepScheduled):
        return RunEvent(kind, run_id, workflow, rec.seq, rec.at, event.name, event.command_id, 1, event=event)
    if isinstance(event, StepFailed):
        return RunEvent(kind, run_id, workflow, rec.seq, rec.at, event.name, event.command_id, event.attempt,
                        event.retry_at, event=event)  # fmt: skip
    if isinstance(event, StepCompleted):
        return RunEvent(kind, run_id, workflow, rec.seq, rec.at, event.name, event.command_id, event.attempt,
                        event=event)  # fmt: skip
    return RunEvent(kind, run_id, workflow, rec.seq, rec.at, command_id=getattr(event, "command_id", None),
                    event=event)  # fmt: skip


class _RunState:
    """What a subscription knows of one run: the last event it yielded and the step attempts it announced."""

    __slots__ = ("last_seq", "started", "workflow")

    def __init__(self, workflow: str, last_seq: int | None) -> None:
        self.workflow = workflow
        self.last_seq = last_seq  # None: not known yet (the run was first heard of by a step notice)
        self.started: set[tuple[int, int]] = set()

    def live(self, notice: StepNotice) -> RunEvent | None:
        """The ``step_started`` of a notice, unless that attempt was announced already."""
        key = (notice.command_id, notice.attempt)
        if key in self.started:
            return None
        self.started.add(key)
        return RunEvent("step_started", notice.run_id, self.workflow, None, notice.at, notice.name,
                        notice.command_id, notice.attempt)  # fmt: skip

    def recorded(self, run_id: str, rec: RecordedEvent) -> list[RunEvent]:
        """The events a recorded event stands for: none for a ``StepScheduled`` whose start was announced live;
        for the outcome of an attempt whose start nobody announced, its ``step_started`` first."""
        self.last_seq = rec.seq
        event = rec.event
        if isinstance(event, StepScheduled):
            if (event.command_id, 1) in self.started:
                return []
            self.started.add((event.command_id, 1))
        elif isinstance(event, (StepCompleted, StepFailed)) and (event.command_id, event.attempt) not in self.started:
            self.started.add((event.command_id, event.attempt))
            began = rec.at - timedelta(milliseconds=event.duration_ms)
            start = RunEvent("step_started", run_id, self.workflow, None, began, event.name, event.command_id,
                             event.attempt)  # fmt: skip
            return [start, run_event(run_id, self.workflow, rec)]
        return [run_event(run_id, self.workflow, rec)]


class _Inbox:
    """Notices from the store's hub, queued for the subscription's reader. Appends to one run are coalesced
    (one read covers them all); only the run being followed is queued when there is one."""

    def __init__(self, run_id: str | None) -> None:
        self._run_id = run_id
        self._queue: collections.deque[str | StepNotice] = collections.deque()
        self._appended: dict[str, tuple[int, int | None]] = {}  # run id -> (last seq, first seq), queued
        self._ready = asyncio.Event()

    def appended(self, run_id: str, last_seq: int, first_seq: int | None) -> None:
        if self._run_id is not None and run_id != self._run_id:
            return
        queued = self._appended.get(run_id)
        if queued is None:
            self._queue.append(run_id)
            self._appended[run_id] = (last_seq, first_seq)
        else:
            self._appended[run_id] = (max(last_seq, queued[0]), queued[1])
        self._ready.set()

    def step_started(self, notice: StepNotice) -> None:
        if self._run_id is not None and notice.run_id != self._run_id:
            return
        self._queue.append(notice)
        self._ready.set()

    def take(self) -> tuple[str, int, int | None] | StepNotice | None:
        """The next notice, or ``None``."""
        if not self._queue:
            self._ready.clear()
            return None
        item = self._queue.popleft()
        if isinstance(item, StepNotice):
            return item
        last_seq, first_seq = self._appended.pop(item)
        return item, last_seq, first_seq

    def wake(self) -> None:
        """Wake the reader (the subscription was closed)."""
        self._ready.set()

    async def wait(self, timeout: float | None) -> bool:
        """Until a notice is queued (True), or ``timeout`` seconds pass (False)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Subscription:
    """The events of one run, of a workflow's runs, or of every run, as they happen (``engine.subscribe``).

    An async iterator of ``RunEvent``s and an async context manager (which stops listening on exit)::

        async with engine.subscribe(run_id) as events:
            async for event in events:
                print(event.kind, event.step)

    Following one run, it ends after the run's terminal event (``completed``, ``failed``, ``cancelled`` or
    ``continued``: a run that continues as new ends its stream; subscribe to the new run, whose id is in the
    ``continued`` event's ``event.new_run_id``). Following a workflow or every run, it never ends by itself.
    """

    def __init__(self, store: Store, run_id: str | None, workflow: str | None, after_seq: int) -> None:
        self._store = store
        self._run_id = run_id
        self._workflow = workflow
        self._after_seq = after_seq
        self._inbox = _Inbox(run_id)
        self._runs: dict[str, _RunState] = {}
        self._skipped: collections.OrderedDict[str, None] = collections.OrderedDict()  # other workflows, finished
        self._stop: Callable[[], None] | None = None
        self._done = False
        self._events: weakref.ref[AsyncGenerator[RunEvent, None]] | None = None
        self._held: AsyncGenerator[RunEvent, None] | None = None  # the generator `anext(subscription)` uses

    async def open(self) -> Subscription:
        """Start listening (``async with`` and the first ``async for`` step do it).

        Raises:
            RunNotFound: following a run id that no run has.
        """
        if self._stop is not None:
            return self
        if self._run_id is not None:
            run = await self._store.get_run(self._run_id)
            if run is None:
                raise RunNotFound(
                    f"no run with id {self._run_id!r} in {self._store.url}: check the id with `durable list`"
                )
            self._runs[run.id] = _RunState(run.workflow, self._after_seq)
        # Listen before the first read: an append between the two is then read twice at worst, never missed.
        self._stop = await self._store.subscribe_live(self._inbox.appended, self._inbox.step_started)
        return self

    def close(self) -> None:
        """Stop listening; iteration ends (an ``async for`` waiting in another task wakes up and ends)."""
        self._done = True
        if self._stop is not None:
            self._stop()
        self._inbox.wake()

    async def __aenter__(self) -> Subscription:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        events = self._events() if self._events is not None else None
        if events is not None and not getattr(events, "ag_running", False):  # another task iterating: woken above
            await events.aclose()

    def __aiter__(self) -> AsyncGenerator[RunEvent, None]:
        # The subscription keeps only a weak reference to its generator: when an `async for` without `async with`
        # is left by `break`, the generator is freed at once and its `finally` stops the listening (no
        # reference cycle to wait for). Iterating again (or after `anext`) continues the same stream.
        events = self._events() if self._events is not None else None
        if events is None:
            events = self._iterate()
            self._events = weakref.ref(events)
        return events

    async def __anext__(self) -> RunEvent:
        """The next event (``await anext(subscription)``); ``StopAsyncIteration`` once the stream ended."""
        if self._held is None:
            self._held = self.__aiter__()
        return await self._held.__anext__()

    async def _iterate(self) -> AsyncGenerator[RunEvent, None]:
        owned = self._stop is None  # opened by iterating (no `async with`): closed when iteration ends
        await self.open()
        try:
            if self._run_id is not None:
                for event in await self._read(self._run_id):
                    yield event
            while not self._done:
                item = self._inbox.take()
                if item is None:
                    if await self._inbox.wait(_POLL if self._run_id is not None else None):
                        continue
                    item = (self._run_id or "", 0, None)  # nothing heard for a while: read anyway
                for event in await self._handle(item):
                    yield event
        finally:
            if owned:
                self.close()

    async def _handle(self, item: tuple[str, int, int | None] | StepNotice) -> list[RunEvent]:
        if isinstance(item, StepNotice):
            state = self._runs.get(item.run_id)
            if state is None:
                if self._run_id is not None or item.run_id in self._skipped:
                    return []
                if self._workflow is not None and item.workflow != self._workflow:
                    self._skip(item.run_id)
                    return []
                state = self._runs[item.run_id] = _RunState(item.workflow, None)
            event = state.live(item)
            return [] if event is None else [event]
        run_id, last_seq, first_seq = item
        if run_id not in self._runs and not await self._track(run_id, last_seq, first_seq):
            return []
        state = self._runs[run_id]
        if state.last_seq is not None and 0 < last_seq <= state.last_seq:
            return []  # read already
        if state.last_seq is None:  # heard of by a step notice only: its events start with this append
            state.last_seq = (first_seq or last_seq) - 1
        return await self._read(run_id)

    async def _track(self, run_id: str, last_seq: int, first_seq: int | None) -> bool:
        """Start following a run first heard of now (all-runs and workflow subscriptions): from the events of
        this append on, if it is of the workflow followed."""
        if self._run_id is not None or run_id in self._skipped:
            return False
        after = (first_seq or last_seq) - 1
        workflow = await self._workflow_of(run_id, after)
        if workflow is None or (self._workflow is not None and workflow != self._workflow):
            self._skip(run_id)
            return False
        self._runs[run_id] = _RunState(workflow, after)
        return True

    async def _workflow_of(self, run_id: str, after: int) -> str | None:
        if after == 0:  # a new run: its first event names the workflow (and is read next anyway)
            first = await self._store.read_history(run_id, 0)
            if first and isinstance(first[0].event, RunStarted):
                return first[0].event.workflow
        run = await self._store.get_run(run_id)
        return None if run is None else run.workflow

    def _skip(self, run_id: str) -> None:
        self._skipped[run_id] = None
        self._skipped.move_to_end(run_id)
        if len(self._skipped) > _REMEMBERED:
            self._skipped.popitem(last=False)

    async def _read(self, run_id: str) -> list[RunEvent]:
        """The run's events after the last one yielded; a terminal one ends the run's stream."""
        state = self._runs.get(run_id)
        if state is None:  # ended already
            return []
        out: list[RunEvent] = []
        for rec in await self._store.read_history(run_id, state.last_seq or 0):
            out += state.recorded(run_id, rec)
            if isinstance(rec.event, TERMINAL_EVENTS):
                del self._runs[run_id]
                if self._run_id is not None:
                    self._done = True
                else:
                    self._skip(run_id)
                break
        return out


class SubscribeClient:
    """Mixed into ``Engine``: live event streams."""

    store: Store

    def _require_open(self) -> None:  # pragma: no cover - provided by Engine
        raise NotImplementedError

    def subscribe(self, run_id: str | None = None, *, workflow: str | None = None, after_seq: int = 0) -> Subscription:
        """Follow runs as they happen, from any process: ``async for event in engine.subscribe(run_id)``.

        With ``run_id``: every event of that run in order, none missing or repeated, starting after history
        event ``after_seq`` (0: from its start, even if it started long ago) and ending after its terminal
        event (``completed``, ``failed``, ``cancelled``, or ``continued`` for a run that continued as new).
        Without: the events of every run (of ``workflow`` only, when given) from now on, each run's in order;
        such a stream never ends by itself (leave the ``async for``, or use ``async with``).

        ``step_started`` comes once per step attempt, as the attempt starts when a worker tells (live, with
        ``seq=None``), else from the history. See ``RunEvent`` and docs/observability-live.md.

        Raises:
            RunNotFound: (when iteration starts) no run has id ``run_id``.
            ValueError: both ``run_id`` and ``workflow``, an empty name, or a negative ``after_seq``.
            TypeError: arguments of the wrong type.
        """
        self._require_open()
        for name, value in (("run_id", run_id), ("workflow", workflow)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string, got {type(value).__name__} {value!r}")
            if value == "":
                raise ValueError(f"{name} must not be empty: give a {name} or leave it out")
        if run_id is not None and workflow is not None:
            raise ValueError("give run_id (one run) or workflow= (its runs), not both")
        if not isinstance(after_seq, int) or isinstance(after_seq, bool):
            raise TypeError(f"after_seq must be an int (a history sequence number), got {after_seq!r}")
        if after_seq < 0:
            raise ValueError(f"after_seq must be >= 0 (0: from the run's first event), got {after_seq}")
        if after_seq and run_id is None:
            raise ValueError("after_seq applies to one run: give run_id too")
        return Subscription(self.store, run_id, workflow, after_seq)
