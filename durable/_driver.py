"""Drives one leased run: replays it, runs its steps and timers, appends outcomes, releases or finishes it.

The live instance stays in memory while the run has work due soon, so each step costs one append and no
replay. When everything left is far away (a long sleep, a slow retry), the run is released with ``wake_at``
and the instance dropped: a sleeping run holds no worker memory.

Each loop turn: start steps that are due, wait for something to happen (a step attempt ends, a timer is due,
a cancellation or lease loss), append all that happened in one append, then deliver each outcome to the
workflow code in that order. Outcomes are never delivered before their append commits (invariant 5).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import msgspec

from history import (
    CANCELLED,
    COMPLETED,
    CONTINUED,
    FAILED,
    PENDING,
    WAITING,
    Append,
    CancelRequested,
    Claim,
    ErrorInfo,
    Event,
    LeaseLost,
    LogLine,
    PayloadError,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    StepCompleted,
    StepNotice,
    StepScheduled,
    TimerFired,
    encode_payload,
)
from history import (
    StepFailed as StepFailedEvent,
)
from replay import NonDeterminismError, Outcome, StepRequest, WorkflowInstance, error_info

from ._driver_world import Arrival, WorldDriver
from ._step_context import _CURRENT_STEP, StepInfo
from ._telemetry import RunObserver
from .errors import NonRetryableError, StepFailed

if TYPE_CHECKING:
    from ._worker import Worker

log = logging.getLogger("durable.worker")

_NEVER = datetime(9999, 1, 1, tzinfo=UTC)
"""``wake_at`` of a run that waits for nothing the worker can schedule."""

_BLOCKED_RETRY = timedelta(seconds=60)
"""How long a run whose replay diverged waits before the next try (fixed code may be deployed by then)."""

class _Synced:
    """The type of ``_SYNCED``."""


_SYNCED = _Synced()
"""``RunDriver._recorded_step`` once an append has written current_step: appends keep it right from then on."""

_NOTE_STEP_AFTER = 1.0
"""How long steps run before the run's ``current_step`` is written on its own, when the last append did not
know them (the first step of a fresh run: nothing is appended before it ends). A quicker step's append writes
it anyway, at no cost; a run woken by a timer or a message appends that first, naming the steps that follow."""


@dataclass
class _Attempt:
    """A step attempt that ended: its outcome becomes events in the next append."""

    step: StepRequest
    attempt: int
    duration_ms: float
    result: Any = None
    error: BaseException | None = None
    retry_at: datetime | None = None


class RunDriver:
    """One leased run in one worker. Created by the worker per claim; ``drive()`` runs it until it finishes,
    sleeps long, loses its lease, or the worker stops."""

    def __init__(self, worker: Worker, claim: Claim) -> None:
        self.worker = worker
        self.run = claim.run
        self.run_id = claim.run.id
        self.epoch = claim.run.lease_epoch
        self._history = claim.history
        self._next_seq = claim.run.next_seq
        self._cancel_reason = claim.run.cancel_reason
        self._lost = False
        self._signal = asyncio.Event()
        # What happened since the last append: step attempts that ended, ids of timers that are due, arrivals.
        self._ended: list[_Attempt | int | Arrival] = []
        self._running: dict[int, asyncio.Task[None]] = {}
        self._waiting: dict[int, StepRequest] = {}  # steps waiting for their retry time
        self._timers: dict[int, datetime] = {}
        self._pending_events: list[Event] = []
        self._logs: list[LogLine] = []  # captured lines the next append writes
        self._consumed: list[int] = []  # inbox messages recorded by the next append
        self._cancel_children = False  # the run ends by a cancellation that its awaited children follow
        self._instance: WorkflowInstance | None = None
        self._world = WorldDriver(self)
        # The run's current_step as stored, until this activation's first append: from then on every append
        # writes it, so a note is never needed again (_SYNCED).
        self._recorded_step: str | _Synced | None = claim.run.current_step
        self._step_note: asyncio.TimerHandle | None = None  # writes current_step if steps run long
        self._noting: asyncio.Task[None] | None = None
        self._appending = False
        telemetry = worker.telemetry
        # None unless OpenTelemetry is configured: then each hook below costs one test.
        self._obs: RunObserver | None = (
            RunObserver(telemetry, claim.run, claim.due_at, worker.clock(), worker.clock) if telemetry.enabled else None
        )

    # -- signals from the worker ------------------------------------------------------------------------------

    def cancel(self, reason: str) -> None:
        """A cancellation was requested for this run."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        self._signal.set()

    def lease_lost(self) -> None:
        """Another worker owns the run now: stop without writing anything."""
        self._lost = True
        self._signal.set()

    def messages_arrived(self) -> None:
        """The run has news: new inbox messages (an event, an input, a child's outcome) or a cancellation."""
        self._world.inbox_due = True
        self._world.run_due = True
        self._signal.set()

    def wake(self) -> None:
        """Re-check state (the worker is stopping)."""
        self._signal.set()

    # -- the run --------------------------------------------------------------------------------------------

    async def drive(self) -> None:
        """Run until the run finishes, is released, is blocked, or the lease is lost."""
        workflow = self.worker.workflows[self.run.workflow]
        instance = WorkflowInstance(
            workflow, self._history[0], clock=self.worker.clock, step_failed=StepFailed
        )
        obs = self._obs
        try:
            try:
                if len(self._history) > 1:
                    began = time.perf_counter()
                    instance.replay(self._history)
                    if obs is not None:
                        obs.replayed((time.perf_counter() - began) * 1000.0)
                else:
                    instance.start()
            except NonDeterminismError as exc:
                await self._block(exc)
                return
            self._instance = instance
            self._absorb(instance)
            await self._loop(instance)
        except LeaseLost:
            log.warning("run %s: lease lost to another worker; leaving it to that worker", self.run_id)
            if obs is not None:
                obs.lease_lost()
        finally:
            for task in self._running.values():
                task.cancel()
            if self._step_note is not None:
                self._step_note.cancel()
            if self._noting is not None:
                self._noting.cancel()
            instance.close()
            if obs is not None:
                obs.close()

    def trace_context(self) -> str | None:
        """The trace context of a run this run creates (a child; the run that continues it), when tracing."""
        return None if self._obs is None else self._obs.child_context()

    def run_created(self, workflow: str) -> None:
        """Count a run this run created (``durable.runs.started``), when measuring."""
        if self._obs is not None:
            self._obs.run_created(workflow)

    async def _loop(self, instance: WorkflowInstance) -> None:
        while True:
            if self._lost:
                return
            if instance.outcome is not None:
                await self._finish_outcome(instance.outcome)
                return
            now = self.worker.clock()
            self._world.queue_cancellation(instance, self._cancel_reason, now)
            await self._world.before_wait(instance)
            if not self.worker.stopping:
                self._start_due_steps(now)
            elif not self._running:
                await self._release(wake_at=None, status=PENDING)  # handed back: ready for any worker
                return
            next_due = self._world.earliest(self._next_due(), instance)
            if not self._running and not self._ended and not self.worker.stopping and (
                next_due is None or (next_due - now).total_seconds() > self.worker.horizon
            ):
                # Nothing due at all (the code awaits something no command will resolve): park the run until a
                # cancellation (which makes it ready) rather than let workers claim and replay it in a loop.
                await self._release(wake_at=next_due or _NEVER, status=WAITING)
                return
            if self._pending_events and not self._running:
                # Only timers are left to wait for: record them (and values drawn before) now, so a sleep is
                # visible while it lasts and a crash during it does not restart it.
                await self._append(self._take_pending())
            await self._wait(next_due, now)
            self._collect_due_timers()
            if self._ended and not self._lost:
                await self._commit_and_deliver(instance)

    async def _wait(self, next_due: datetime | None, now: datetime) -> None:
        if not self._ended and not self._lost:
            try:
                if next_due is None:
                    await self._signal.wait()
                else:
                    async with asyncio.timeout(max(0.0, (next_due - now).total_seconds())):
                        await self._signal.wait()
            except TimeoutError:
                pass
        self._signal.clear()

    # -- steps and timers ----------------------------------------------------------------------------------

    def _absorb(self, instance: WorkflowInstance) -> None:
        self._pending_events.extend(instance.take_new_events())
        for step in instance.take_new_steps():
            self._waiting[step.command_id] = step
        for timer in instance.take_new_timers():
            self._timers[timer.command_id] = timer.fire_at
        for cid in instance.take_cancelled_timers():
            self._timers.pop(cid, None)

    def _next_due(self) -> datetime | None:
        times = list(self._timers.values())
        if not self.worker.stopping:  # a stopping worker starts no step: their times do not matter
            times.extend(s.not_before for s in self._waiting.values() if s.not_before is not None)
            if any(s.not_before is None for s in self._waiting.values()):
                return self.worker.clock()
        return min(times, default=None)

    def _start_due_steps(self, now: datetime) -> None:
        started: list[StepNotice] = []
        for cid, step in list(self._waiting.items()):
            if step.not_before is None or step.not_before <= now:
                del self._waiting[cid]
                task = asyncio.get_running_loop().create_task(self._attempt(step))
                self._running[cid] = task
                started.append(StepNotice(self.run_id, self.run.workflow, cid, step.name, step.attempt, now))
        if started:  # live-only: StepScheduled is recorded with the outcome (engine.subscribe shows it running)
            self.worker.store.notify_step_started(started)
            self._plan_step_note()

    def _plan_step_note(self) -> None:
        """Write ``current_step`` in ``_NOTE_STEP_AFTER`` if the steps running now are not what the run's row
        says (list_executions(current_step=...) and the "doing" column would miss a long first step)."""
        if self._recorded_step is _SYNCED or self._step_note is not None or self._instance is None:
            return  # an append carries the value from now on, or a note is planned already
        if current_step(self._instance) != self._recorded_step:
            self._step_note = asyncio.get_running_loop().call_later(_NOTE_STEP_AFTER, self._note_step)

    def _note_step(self) -> None:
        self._step_note = None
        if self._instance is None or self._lost or self._appending or self._noting is not None:
            return  # an append in flight writes the current value itself
        if self._recorded_step is _SYNCED:
            return
        value = current_step(self._instance)
        if value != self._recorded_step:
            self._noting = asyncio.get_running_loop().create_task(self._write_step_note(value))

    async def _write_step_note(self, value: str | None) -> None:
        try:
            await self.worker.store.note_current_step(self.run_id, self.worker.worker_id, self.epoch, value)
            if self._recorded_step is not _SYNCED:
                self._recorded_step = value
        except Exception:  # only a hint for readers; the next append writes the truth
            log.debug("run %s: writing current_step failed", self.run_id, exc_info=True)
        finally:
            self._noting = None

    def _collect_due_timers(self) -> None:
        now = self.worker.clock()
        for cid, fire_at in list(self._timers.items()):
            if fire_at <= now:
                del self._timers[cid]
                self._ended.append(cid)

    async def _attempt(self, step: StepRequest) -> None:
        definition = step.definition
        attempt = step.attempt
        info = StepInfo(self.run_id, self.run.workflow, step.name, step.command_id, attempt)
        token = _CURRENT_STEP.set(info)
        obs = self._obs
        span = None if obs is None else obs.step_started(step)  # the current span of the body, when tracing
        capturing = self.worker.logs.begin(info)
        started = time.perf_counter()
        ended = _Attempt(step=step, attempt=attempt, duration_ms=0.0)
        try:
            async with asyncio.timeout(definition.timeout):
                if self.worker.step_interceptor is not None:
                    proceed = functools.partial(_call_body, step)
                    ended.result = await self.worker.step_interceptor(info, step.args, step.kwargs, proceed)
                elif definition.is_async:
                    ended.result = await definition.fn(*step.args, **step.kwargs)
                else:
                    call = functools.partial(definition.fn, *step.args, **step.kwargs)
                    ended.result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except TimeoutError:
            ended.error = TimeoutError(f"step {step.name!r} timed out after {definition.timeout}s")
        except Exception as exc:
            ended.error = exc
        except BaseException:
            if capturing:  # cancelled: the run is being torn down, and its lines with it
                self.worker.logs.abandon(info)
            raise
        finally:
            _CURRENT_STEP.reset(token)
            if span is not None and obs is not None:
                obs.step_body_ended(span)
        ended.duration_ms = (time.perf_counter() - started) * 1000.0
        if capturing and (capture := self.worker.logs.end(info)) is not None:
            if capture.inflight is not None:  # the live tail is writing earlier lines of it: they go first
                await asyncio.shield(capture.inflight)
            self._logs += capture.finish()
        if ended.error is not None and self._retryable(ended.error, definition, attempt):
            delay = definition.retry.delay(attempt)
            ended.retry_at = self.worker.clock() + timedelta(seconds=delay)
        self._ended.append(ended)
        self._signal.set()

    @staticmethod
    def _retryable(error: BaseException, definition: Any, attempt: int) -> bool:
        if isinstance(error, (NonRetryableError, PayloadError)):
            return False
        return bool(definition.retry.allows(attempt))

    # -- appending -------------------------------------------------------------------------------------------

    def _events_for(self, ended: _Attempt) -> tuple[list[Event], Event | None]:
        step = ended.step
        events: list[Event] = []
        if not step.scheduled_recorded:
            events.append(StepScheduled(command_id=step.command_id, name=step.name, args=step.args_raw,
                                        digest=step.digest))
        if ended.error is None:
            try:
                raw = encode_payload(ended.result, what=f"the result of step {step.name!r} in run {self.run_id!r}")
            except PayloadError as exc:
                ended.error = exc
                ended.retry_at = None
            else:
                outcome: Event = StepCompleted(command_id=step.command_id, name=step.name, attempt=ended.attempt,
                                               result=raw, duration_ms=round(ended.duration_ms, 3))
                events.append(outcome)
                return events, outcome
        assert ended.error is not None
        failed = StepFailedEvent(command_id=step.command_id, name=step.name, attempt=ended.attempt,
                                 error=error_info(ended.error), duration_ms=round(ended.duration_ms, 3),
                                 retry_at=ended.retry_at)
        events.append(failed)
        return events, (failed if ended.retry_at is None else None)

    async def _commit_and_deliver(self, instance: WorkflowInstance) -> None:
        """Record what happened and let the workflow code react, in one append.

        Each outcome is delivered to the instance *before* the append, in order, and what the code does in
        reaction (timers, recorded values, its own end) joins the same append. That is safe: the code only
        runs in memory, and nothing it asks for that touches the world (a step, a child) starts before the
        append has committed. If the append fails, the instance is dropped with everything it did. So a step
        costs one commit, and so does a step that ends the workflow (invariant 5 holds: no effect of the
        workflow going past a step is visible before the step's result is durable).
        """
        ended, self._ended = self._ended, []
        events = self._take_pending()
        at = self.worker.clock()
        retries: list[_Attempt] = []
        cancelled = False
        for item in ended:
            delivery: Event | None = None
            if isinstance(item, int):
                delivery = TimerFired(command_id=item)
                events.append(delivery)
            elif isinstance(item, Arrival):
                delivery = item.event
                if delivery is not None:
                    events.append(delivery)
                    cancelled = cancelled or isinstance(delivery, CancelRequested)
                if item.message_id is not None:
                    self._consumed.append(item.message_id)
            else:
                self._running.pop(item.step.command_id, None)
                step_events, delivery = self._events_for(item)
                events.extend(step_events)
                if self._obs is not None:
                    self._obs.step_ended(item.step, item.attempt, item.duration_ms, item.error, item.retry_at)
                if delivery is None:
                    retries.append(item)
            if delivery is not None:
                instance.deliver(delivery, at)
                events.extend(instance.take_new_events())  # the code's reaction, recorded right after
        if instance.outcome is not None:
            self._pending_events = events  # the loop ends the run with these, in the same append
            self._cancel_children = cancelled
            return
        await self._append(events, at=at)
        for item in ended:
            if isinstance(item, _Attempt):
                item.step.scheduled_recorded = True
        for item in retries:
            item.step.attempt = item.attempt + 1
            item.step.not_before = item.retry_at
            self._waiting[item.step.command_id] = item.step
        if cancelled:
            await self._world.cancelled(instance)
        self._absorb(instance)

    async def _append(self, events: list[Event], *, at: datetime | None = None, **update: Any) -> None:
        await self._world.create_children()  # a child exists before its ChildStarted is recorded
        if self._instance is not None:
            update.update(self._world.side_effects(self._instance, events))
            update["current_step"] = current_step(self._instance)  # rides on this append: no round trip of its own
        if self._consumed:
            update["consumed"], self._consumed = self._consumed, []
        if self._instance is not None and (workflow_lines := self._instance.take_new_logs()):
            if self._obs is not None and self._obs.log_ids is not None:
                workflow_lines = _in_span(workflow_lines, self._obs.log_ids)
            self._logs = sorted([*self._logs, *workflow_lines], key=_logged_at)  # steps' and workflow's, in order
        if self._logs:
            update["logs"], self._logs = self._logs, []
        item = Append(run_id=self.run_id, worker_id=self.worker.worker_id, epoch=self.epoch,
                      first_seq=self._next_seq, events=events, at=at or self.worker.clock(), **update)
        if self._noting is not None:  # let a note commit first: it must not land after (and undo) this append
            await asyncio.shield(self._noting)
        self._appending = True
        try:
            await self.worker.append(item, lease_deadline=self.worker.lease_seconds)
        finally:
            self._appending = False
        if "current_step" in update:
            self._recorded_step = _SYNCED
        self._next_seq += len(events)
        if self._obs is not None:
            self._obs.appended(events)

    async def _finish_outcome(self, outcome: Outcome) -> None:
        if outcome.cancelled is not None and outcome.timed_out:
            error = ErrorInfo(type="durable.WorkflowTimeout", message=outcome.cancelled)
            await self._finish(RunFailed(error=error), FAILED, None, error)
        elif outcome.cancelled is not None:
            await self._finish(RunCancelled(reason=outcome.cancelled), CANCELLED, None, None)
        elif outcome.continued is not None:
            assert self._instance is not None
            new_id = await self._world.continue_as_new(outcome.continued, self._instance)
            result = msgspec.json.encode({"continued_as": new_id})
            await self._finish(RunContinued(new_run_id=new_id, input=outcome.continued), CONTINUED, result, None)
        elif outcome.error is not None:
            await self._finish(RunFailed(error=outcome.error), FAILED, None, outcome.error)
        else:
            assert outcome.result is not None
            await self._finish(RunCompleted(result=outcome.result), COMPLETED, bytes(outcome.result), None)

    async def _finish(self, event: Event, status: str, result: bytes | None, error: Any) -> None:
        for task in self._running.values():
            task.cancel()
        events = [*self._pending_events, event]
        self._pending_events = []
        await self._append(events, status=status, result=result, error=error, release=True)
        self.worker.count(status)
        if self._obs is not None:
            self._obs.finished(status, error)
        if self._cancel_children and self._instance is not None:
            await self._world.cancelled(self._instance)

    async def _release(self, *, wake_at: datetime | None, status: str | None) -> None:
        await self._append(self._take_pending(), status=status, wake_at=wake_at, release=True)
        if self._obs is not None:
            self._obs.released(status or PENDING)

    def _take_pending(self) -> list[Event]:
        events, self._pending_events = self._pending_events, []
        return events

    async def _block(self, exc: NonDeterminismError) -> None:
        log.error("%s", exc)
        if self._obs is not None:
            self._obs.blocked(exc)
        retry_at = self.worker.clock() + _BLOCKED_RETRY
        await self.worker.store.mark_blocked(self.run_id, self.worker.worker_id, self.epoch, str(exc), retry_at)


def current_step(instance: WorkflowInstance) -> str | None:
    """What the run does once this append is in: its unfinished steps (running, about to start or waiting for a
    retry) by name, comma-separated in call order; else what it waits for from the world; else ``sleep`` when a
    timer is armed. Cheap: the steps and waits in flight, usually one."""
    names = list(dict.fromkeys(step.name for step in instance.pending_steps.values()))
    if names:
        return ",".join(names)
    waits = instance.waits
    if waits:
        return ",".join(waits)
    return "sleep" if instance.pending_timers else None


def _logged_at(line: LogLine) -> datetime:
    return line.at


def _in_span(lines: Sequence[LogLine], ids: tuple[str, str]) -> list[LogLine]:
    """``ctx.logger``'s lines with the activation span's ids. Not the span current in the workflow code: that
    runs in a context copied from the worker's when the instance was made (no Durable span; at most a span of the
    application's around the worker), and ``replay/`` knows nothing of OpenTelemetry."""
    trace_id, span_id = ids
    return [msgspec.structs.replace(line, trace_id=trace_id, span_id=span_id) for line in lines]


async def _call_body(step: StepRequest) -> Any:
    """A step attempt's body, for a step interceptor's ``proceed`` (the hot path above inlines the same)."""
    definition = step.definition
    if definition.is_async:
        return await definition.fn(*step.args, **step.kwargs)
    call = functools.partial(definition.fn, *step.args, **step.kwargs)
    return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
