"""A workflow instance: the user's workflow coroutine on a deterministic loop, fed recorded or live outcomes.

The instance does no I/O. A driver (the worker, or the pure replayer) feeds it events and reads back what the
code asked for:

* ``replay(history)`` re-executes the code against a recorded history, answering each command from it and
  checking that the code issues the same commands (kind, step name and a digest of the arguments, matched by
  command id). A mismatch makes the instance *diverged* and raises ``NonDeterminismError``; nothing is written.
* ``deliver(event, at)`` hands a freshly recorded outcome (step completed, final step failure, timer fired) to
  the code and runs it until it waits again.
* ``take_new_events()``, ``take_new_steps()``, ``take_new_timers()`` and ``take_cancelled_timers()`` return what
  the code issued since the last call; ``outcome`` is set once the workflow function returned or raised.

Outcomes are delivered one at a time, in history order, with the loop run to idle after each: exactly what a
replay does, so the code observes the same interleaving live and on every replay.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import hashlib
import logging
import os
import sys
import traceback
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec

from history import (
    CancelRequested,
    ChildFinished,
    ChildStarted,
    ErrorInfo,
    Event,
    EventWaitStarted,
    InputRequested,
    LogLine,
    MessageReceived,
    PatchMarked,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    StateUpdated,
    StepCompleted,
    StepFailed,
    StepScheduled,
    TimerFired,
    TimerStarted,
    ValueRecorded,
    decode_payload,
    encode_payload,
    line_from_record,
)

from ._commands import StepRequest, TimerRequest
from ._context import WorkflowContext
from ._errors import ContinueAsNew, NonDeterminismError
from ._guards import trusted
from ._logger import SINK, workflow_logger
from ._loop import DeterministicLoop
from ._report import _OWN_PACKAGES, describe_issued, describe_recorded, divergence_hint, user_code_location
from ._world import WorldMixin

_CURRENT: contextvars.ContextVar[WorkflowInstance | None] = contextvars.ContextVar(
    "durable_current_instance", default=None
)


MAX_WORKFLOW_LINES = 1000
"""Most ``ctx.logger`` lines an instance keeps between two appends (a workflow looping over a huge list)."""


def current_instance() -> WorkflowInstance | None:
    """The instance whose workflow code is running now, or ``None`` outside workflow code."""
    return _CURRENT.get()


class WorkflowCallable(Protocol):
    """What the instance runs: ``durable.workflow`` objects implement it (a plain function is wrapped)."""

    name: str

    def invoke(self, ctx: WorkflowContext, args: Any) -> Coroutine[Any, Any, Any]:
        """Call the workflow function with the context and the decoded input arguments."""


class _Diverged(BaseException):
    """Unwinds workflow code after a divergence; a BaseException so ``except Exception`` in user code can't
    swallow it."""


class Outcome(msgspec.Struct, frozen=True):
    """How the workflow function ended: ``result`` (raw JSON), ``error``, ``cancelled`` (the reason, after a
    cancellation reached it; ``timed_out`` when it was the run's timeout) or ``continued`` (the next input)."""

    result: msgspec.Raw | None = None
    error: ErrorInfo | None = None
    cancelled: str | None = None
    timed_out: bool = False
    continued: msgspec.Raw | None = None


_COMMAND_EVENTS = (StepScheduled, TimerStarted, ValueRecorded, EventWaitStarted, InputRequested, ChildStarted)
_OUTCOME_EVENTS = (StepCompleted, StepFailed, TimerFired, ChildFinished)
_SIGNAL_EVENTS = (MessageReceived, CancelRequested)
"""Delivered like outcomes, in history order, but belonging to no command."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


PUBLIC_ERROR_MODULES = frozenset({"history._errors", "replay._errors", "durable.errors"})
"""Where the exceptions that ``durable`` re-exports are defined. They are recorded as ``durable.<Name>``, the name
users import (``tests/test_architecture.py`` pins that each one is exported), never by their private module path:
a recorded name outlives the module layout. Histories written before this recorded the module path; both are only
shown, never matched, so old histories replay unchanged."""


def recorded_type_name(kind: type[BaseException]) -> str:
    """The name an exception type is recorded under: ``ValueError``, ``durable.StepFailed``, ``myapp.PaymentError``."""
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    if module in PUBLIC_ERROR_MODULES and not kind.__name__.startswith("_"):
        return f"durable.{kind.__qualname__}"
    return f"{module}.{kind.__qualname__}"


def canonical_error_type(name: str) -> str:
    """A recorded type name as ``recorded_type_name`` writes it today: ``durable.errors.StepFailed`` (recorded by
    earlier versions) is ``durable.StepFailed``; every other name is itself. Compare recorded types with this."""
    module, _, rest = name.rpartition(".")
    return f"durable.{rest}" if module in PUBLIC_ERROR_MODULES else name


def error_info(exc: BaseException) -> ErrorInfo:
    """Record an exception: its type's recorded name, message, formatted traceback."""
    return ErrorInfo(type=recorded_type_name(type(exc)), message=str(exc), traceback="".join(_user_traceback(exc)))


_MACHINERY = tuple(
    os.path.dirname(os.path.abspath(module.__file__ or "")) + os.sep for module in (asyncio, concurrent.futures)
) + _OWN_PACKAGES


def _user_traceback(exc: BaseException) -> list[str]:
    """The formatted exception without the leading frames of Durable, asyncio and anyio: a traceback that
    starts where the user's code does (or the full one, if it has no user frame at all)."""
    tb = exc.__traceback__
    while tb is not None and (
        os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_MACHINERY)
        or f"{os.sep}anyio{os.sep}" in tb.tb_frame.f_code.co_filename
    ):
        tb = tb.tb_next
    if tb is None:
        return traceback.format_exception(exc)
    return traceback.format_exception(type(exc), exc, tb)


class WorkflowInstance(WorldMixin):
    """One run's workflow code on a deterministic loop. See the module docstring for the protocol."""

    def __init__(
        self,
        workflow: WorkflowCallable,
        started: RecordedEvent,
        *,
        clock: Callable[[], datetime] = _utcnow,
        step_failed: Callable[[str, int, ErrorInfo], BaseException] | None = None,
    ) -> None:
        event = started.event
        if not isinstance(event, RunStarted):
            raise ValueError(f"a history starts with run_started, not {type(event).__name__}")
        self.run_id = event.run_id
        self.workflow_name = workflow.name
        self.replaying = False
        self.outcome: Outcome | None = None
        self.divergence: NonDeterminismError | None = None
        self._clock = trusted(clock)  # the clock may be the user's (a test's): it runs with the guards off
        self._step_failed = step_failed or _default_step_failed
        self._next_cid = 1
        self._recorded: dict[int, RecordedEvent] = {}
        self._max_recorded = 0
        self._outcomes_ahead = 0
        self._marked_patches: set[str] = set()
        self._patches: dict[str, bool] = {}
        self._last_failure: dict[int, StepFailed] = {}
        self._steps: dict[int, StepRequest] = {}
        self._timers: dict[int, tuple[asyncio.TimerHandle, datetime]] = {}
        self._timer_ids: dict[int, int] = {}  # id(handle) -> command id
        self._new_events: list[Event] = []
        self._new_steps: list[StepRequest] = []
        self._new_timers: list[TimerRequest] = []
        self._cancelled_timers: list[int] = []
        self._logs: list[LogLine] = []  # ctx.logger lines since the last take
        self._logs_dropped = 0
        self._logger: logging.Logger | None = None
        self._init_world()
        for carried in event.carried:  # messages the previous run of a continue-as-new chain did not use
            self._buffered.append((carried.kind, carried.name, decode_payload(carried.payload)))
        self._loop = DeterministicLoop(  # type: ignore[abstract]  # I/O methods are deliberately absent
            self._on_timer, self._on_timer_cancelled, started.at.timestamp()
        )
        self._ctx = WorkflowContext(self, event.random_seed)
        context = contextvars.copy_context()
        context.run(_CURRENT.set, self)
        context.run(SINK.set, self)
        self._task = self._loop.create_task(self._main(workflow, event.input), context=context)
        self._task.add_done_callback(self._on_main_done)

    async def _main(self, workflow: WorkflowCallable, raw_input: msgspec.Raw) -> Any:
        return await workflow.invoke(self._ctx, decode_payload(raw_input))

    # -- driving ----------------------------------------------------------------------------------------------

    def replay(self, history: Sequence[RecordedEvent]) -> None:
        """Re-execute the code against ``history`` (event 1 included or not). Raises ``NonDeterminismError``."""
        events = [rec for rec in history if not isinstance(rec.event, RunStarted)]
        self._outcomes_ahead = sum(isinstance(rec.event, _OUTCOME_EVENTS + _SIGNAL_EVENTS) for rec in events)
        self._state_updates_recorded = sum(isinstance(rec.event, StateUpdated) for rec in events)
        for rec in events:
            if isinstance(rec.event, PatchMarked):
                self._marked_patches.add(rec.event.patch_id)
            elif isinstance(rec.event, _COMMAND_EVENTS):
                self._recorded[rec.event.command_id] = rec
            elif isinstance(rec.event, StepFailed) and rec.event.retry_at is not None:
                self._last_failure[rec.event.command_id] = rec.event
        self._max_recorded = max(self._recorded, default=0)
        self.replaying = True
        try:
            self._run()
            for rec in events:
                if isinstance(rec.event, StepFailed) and rec.event.retry_at is not None:
                    self._note_retry(rec.event)
                elif isinstance(rec.event, _OUTCOME_EVENTS + _SIGNAL_EVENTS):
                    self._outcomes_ahead -= 1
                    self._deliver(rec)
                elif isinstance(rec.event, (RunCompleted, RunFailed, RunCancelled)):
                    self._check_terminal(rec)
            self._check_all_recorded_issued(events)
        finally:
            self.replaying = False
        # Whatever the code issued while replaying that has no record yet is new work for the driver; timers
        # and values issued while replaying were answered from the history.
        self._new_steps = [s for s in self._steps.values() if s.future is not None and not s.future.done()]
        self._new_steps.sort(key=lambda s: s.command_id)
        # Timers armed during the replay that also fired (or were cancelled) during it are not pending.
        self._new_timers = [t for t in self._new_timers if t.command_id in self._timers]
        self._cancelled_timers = []

    def start(self) -> None:
        """Run a fresh instance (no history beyond ``RunStarted``) until it first waits."""
        self._run()

    def deliver(self, event: Event, at: datetime) -> None:
        """Hand one just-recorded outcome to the code and run it until it waits again."""
        self._deliver(RecordedEvent(seq=0, at=at, event=event))

    def take_new_events(self) -> list[Event]:
        """Events the code produced (timers started, values recorded) that must be appended next."""
        events, self._new_events = self._new_events, []
        return events

    def take_new_logs(self) -> Sequence[LogLine]:
        """Lines the code logged with ``ctx.logger`` since the last call (none while replaying), for the next
        append; past ``MAX_WORKFLOW_LINES`` between two appends, a marker says how many were dropped."""
        if not self._logs:  # the common case: a shared empty tuple, no allocation per append
            return () if not self._logs_dropped else self._take_logs()
        return self._take_logs()

    def _take_logs(self) -> list[LogLine]:
        lines, self._logs = self._logs, []
        if self._logs_dropped:
            lines.append(LogLine(
                run_id=self.run_id, at=self._clock(), level=logging.WARNING, level_name="WARNING", logger="durable",
                message=f"… truncated: {self._logs_dropped} more lines not captured (limit {MAX_WORKFLOW_LINES} "
                        f"lines of the workflow's own between two appends)",
            ))  # fmt: skip
            self._logs_dropped = 0
        return lines

    def capture_log(self, record: logging.LogRecord) -> None:
        """Keep a ``ctx.logger`` record for the next append (called by the logger's filter, never on replay)."""
        if len(self._logs) >= MAX_WORKFLOW_LINES:
            self._logs_dropped += 1
            return
        self._logs.append(line_from_record(record, self.run_id))

    @property
    def logger(self) -> logging.Logger:
        """``ctx.logger``: see ``replay._logger``."""
        if self._logger is None:
            self._logger = workflow_logger(self.workflow_name)
        return self._logger

    def take_new_steps(self) -> list[StepRequest]:
        """Steps issued since the last call, in command order: the driver runs them."""
        steps, self._new_steps = self._new_steps, []
        return steps

    def take_new_timers(self) -> list[TimerRequest]:
        """Timers armed since the last call (and, after a replay, every armed timer not yet fired)."""
        timers, self._new_timers = self._new_timers, []
        return timers

    def take_cancelled_timers(self) -> list[int]:
        """Command ids of timers the code cancelled since the last call (the driver disarms them)."""
        cancelled, self._cancelled_timers = self._cancelled_timers, []
        return cancelled

    @property
    def pending_steps(self) -> dict[int, StepRequest]:
        """Issued steps with no final outcome yet, by command id."""
        return self._steps

    @property
    def main_task(self) -> asyncio.Task[Any]:
        """The task running the workflow function (read-only): its suspended coroutine chain is what a replay
        tool inspects for the workflow's local variables."""
        return self._task

    @property
    def pending_timers(self) -> dict[int, datetime]:
        """Armed timers not yet fired, by command id, with their fire times."""
        return {cid: fire_at for cid, (_, fire_at) in self._timers.items()}

    def close(self) -> None:
        """Drop the coroutine without running it further (eviction). Safe to call twice."""
        self.replaying = True  # what the code does while being torn down (a `finally:` that logs) is not news
        if not self._task.done():
            self._task.cancel()
            try:
                self._loop.run_until_idle()
            except BaseException:
                pass
        self._loop.close()

    # -- internals: running and delivering -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop.run_until_idle()
        except _Diverged:
            pass
        if self.divergence is not None:
            raise self.divergence
        if self._loop.guard_violation is not None:
            # Fail the run with it even if the workflow code caught it (see replay/_guards.py).
            self.outcome = Outcome(error=error_info(self._loop.guard_violation))

    def _deliver(self, rec: RecordedEvent) -> None:
        event = rec.event
        self._loop.set_time(rec.at.timestamp())
        if isinstance(event, _SIGNAL_EVENTS):
            self._deliver_world(event)
            self._run()
            return
        assert isinstance(event, _OUTCOME_EVENTS)
        cid = event.command_id
        if isinstance(event, ChildFinished):
            if cid > self._next_cid - 1:
                self._diverge_unissued(rec)
            self._deliver_world(event)
        elif isinstance(event, TimerFired):
            timer = self._timers.pop(cid, None)
            if timer is None:
                self._diverge_unissued(rec)
            else:
                handle, _ = timer
                self._timer_ids.pop(id(handle), None)
                if not handle._cancelled:
                    self._loop._ready.append(handle)
        else:
            step = self._steps.pop(cid, None)
            if step is None:
                self._diverge_unissued(rec)
            else:
                self._resolve_step(step, event)
        self._run()

    def _resolve_step(self, step: StepRequest, event: StepCompleted | StepFailed) -> None:
        future = step.future
        if future.done():  # the code cancelled its wait (e.g. a timeout); the outcome is recorded, not used
            return
        if isinstance(event, StepCompleted):
            self.note_completed_step(step.definition, step.args, step.kwargs)
            try:
                future.set_result(step.definition.decode_result(event.result))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                future.set_exception(exc)
        else:
            future.set_exception(self._step_failed(step.name, event.attempt, event.error))

    def _note_retry(self, event: StepFailed) -> None:
        step = self._steps.get(event.command_id)
        if step is not None:
            step.attempt = event.attempt + 1
            step.not_before = event.retry_at
            step.scheduled_recorded = True

    def _on_main_done(self, task: asyncio.Task[Any]) -> None:
        if self.divergence is not None:
            return
        if self.cancel_reason is not None and (task.cancelled() or not isinstance(task.exception(), ContinueAsNew)):
            # Cancellation reached the code: the run ends cancelled, whether the code re-raised it, returned after
            # cleaning up, or failed while cleaning up.
            self.outcome = Outcome(cancelled=self.cancel_reason, timed_out=self.cancel_timed_out)
            return
        if task.cancelled():
            self.outcome = Outcome(error=ErrorInfo(type="asyncio.CancelledError", message="workflow task cancelled"))
            return
        failure = task.exception()
        if isinstance(failure, ContinueAsNew):
            self.outcome = Outcome(continued=failure.input)
            return
        if failure is not None:
            self.outcome = Outcome(error=error_info(failure))
            return
        try:
            raw = encode_payload(task.result(), what=f"the result of workflow {self.workflow_name!r}")
        except Exception as exc:
            self.outcome = Outcome(error=error_info(exc))
            return
        self.outcome = Outcome(result=raw)

    # -- commands issued by workflow code -------------------------------------------------------------------

    def _allocate(self) -> int:
        cid = self._next_cid
        self._next_cid += 1
        return cid

    def _match_command(self, cid: int, new: Event, same: Callable[[Event], bool]) -> Event | None:
        """Match command ``cid`` against the history: return the recorded event (diverging if it is not
        ``same``), or queue ``new`` for appending and return ``None``."""
        rec = self._recorded.get(cid)
        if rec is not None:
            if not same(rec.event):
                self._diverge(rec, describe_recorded(new))
            return rec.event
        self._check_no_later_record(cid, type(new).__name__)
        self._new_events.append(new)
        return None

    def call_step(self, definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        """Issue a step command (called by ``durable.step`` objects inside workflow code)."""
        cid = self._allocate()
        name = definition.name
        payload: Any = list(args) if not kwargs else {"args": list(args), "kwargs": kwargs}
        args_raw = encode_payload(payload, what=f"the arguments of step {name!r}")
        digest = hashlib.blake2b(args_raw, digest_size=8).hexdigest()
        rec = self._recorded.get(cid)
        if rec is not None:
            event = rec.event
            if not (isinstance(event, StepScheduled) and event.name == name and event.digest == digest):
                self._diverge(rec, describe_issued("step", name, args_raw))
        future = self._loop.create_future()
        self._steps[cid] = StepRequest(
            command_id=cid,
            name=name,
            definition=definition,
            args=args,
            kwargs=kwargs,
            args_raw=args_raw,
            digest=digest,
            scheduled_recorded=rec is not None,
            future=future,
        )
        if not self.replaying:
            self._new_steps.append(self._steps[cid])
        return future

    def start_timer(self, *, seconds: float | None = None, until: datetime | None = None) -> asyncio.Future[None]:
        """Issue a timer command for ``ctx.sleep``/``ctx.sleep_until``; the future resolves when it fires."""
        future: asyncio.Future[None] = self._loop.create_future()
        if until is not None:
            when = until.timestamp()
        else:
            assert seconds is not None
            when = self._loop.time() + seconds
        self._arm(future, when, seconds, until)
        return future

    def _arm(self, future: asyncio.Future[None], when: float, seconds: float | None, until: datetime | None) -> None:
        handle = asyncio.TimerHandle(when, _set_result_unless_done, (future,), self._loop, None)
        handle._scheduled = True  # type: ignore[attr-defined]  # so that handle.cancel() reports to the loop
        self._register_timer(handle, seconds, until)

    def _on_timer(self, handle: asyncio.TimerHandle) -> None:
        # asyncio.sleep / wait_for / timeout inside workflow code: a relative durable timer.
        handle._scheduled = True  # type: ignore[attr-defined]
        self._register_timer(handle, max(0.0, handle.when() - self._loop.time()), None)

    def _register_timer(self, handle: asyncio.TimerHandle, seconds: float | None, until: datetime | None) -> None:
        cid = self._allocate()
        rec = self._recorded.get(cid)
        if rec is not None:
            event = rec.event
            same = isinstance(event, TimerStarted) and (
                event.fire_at == until if until is not None else _same_seconds(event.seconds, seconds)
            )
            if not same:
                self._diverge(rec, describe_issued("timer", None, None, seconds=seconds, until=until))
            assert isinstance(event, TimerStarted)
            fire_at = event.fire_at
        else:
            self._check_no_later_record(cid, "timer")
            fire_at = until if until is not None else self._clock() + timedelta(seconds=seconds or 0.0)
            self._new_events.append(
                TimerStarted(command_id=cid, fire_at=fire_at, seconds=seconds if until is None else None)
            )
        self._timers[cid] = (handle, fire_at)
        self._timer_ids[id(handle)] = cid
        self._new_timers.append(TimerRequest(command_id=cid, fire_at=fire_at))

    def _on_timer_cancelled(self, handle: asyncio.TimerHandle) -> None:
        cid = self._timer_ids.pop(id(handle), None)
        if cid is not None and self._timers.pop(cid, None) is not None:
            self._cancelled_timers.append(cid)

    def record_now(self) -> datetime:
        """``ctx.now()``: the wall clock, recorded; on replay, the recorded value."""
        raw = self._record_value("now", lambda: self._clock().isoformat())
        return datetime.fromisoformat(decode_payload(raw))

    def record_uuid4(self) -> uuid.UUID:
        """``ctx.uuid4()``: a random UUID, recorded; on replay, the recorded value."""
        raw = self._record_value("uuid4", lambda: str(uuid.uuid4()))
        return uuid.UUID(decode_payload(raw))

    def _record_value(self, kind: str, produce: Callable[[], Any]) -> msgspec.Raw:
        cid = self._allocate()
        rec = self._recorded.get(cid)
        if rec is not None:
            event = rec.event
            if not (isinstance(event, ValueRecorded) and event.kind == kind):
                self._diverge(rec, describe_issued("value", kind, None))
            assert isinstance(event, ValueRecorded)
            return event.value
        self._check_no_later_record(cid, "value")
        raw = encode_payload(produce(), what=f"ctx.{kind}()")
        self._new_events.append(ValueRecorded(command_id=cid, kind=kind, value=raw))
        return raw

    def patched(self, patch_id: str) -> bool:
        """``ctx.patched``: True for runs that took (or now take) the new code path, False for runs whose
        recorded history predates the patch. The answer is fixed for the rest of the run."""
        if patch_id in self._patches:
            return self._patches[patch_id]
        if patch_id in self._marked_patches:
            decision = True
        elif self._history_ahead():
            decision = False  # the recorded history was made by code without this patch
        else:
            decision = True
            self._new_events.append(PatchMarked(patch_id=patch_id))
        self._patches[patch_id] = decision
        return decision

    def _history_ahead(self) -> bool:
        """Whether the recorded history holds anything the code has not reached yet."""
        return self.replaying and (self._outcomes_ahead > 0 or self._max_recorded >= self._next_cid)

    # -- divergence ---------------------------------------------------------------------------------------------

    def _check_no_later_record(self, cid: int, kind: str) -> None:
        """While replaying, a timer or value with no record although a later command is recorded means the code
        inserted a command here. (Steps are exempt: a step in flight at a crash is legitimately unrecorded.)"""
        if self.replaying and cid < self._max_recorded:
            later = min(c for c in self._recorded if c > cid)
            self._diverge(self._recorded[later], describe_issued(kind, None, None))

    def _diverge(self, rec: RecordedEvent, issued: str) -> None:
        recorded_steps = [
            r.event.name for r in self._recorded.values() if isinstance(r.event, StepScheduled)
        ]
        self.divergence = NonDeterminismError(
            self.run_id,
            rec.seq,
            describe_recorded(rec.event),
            issued,
            location=user_code_location(sys._getframe(1)),
            hint=divergence_hint(rec.event, issued, recorded_steps),
        )
        raise _Diverged()

    def _diverge_unissued(self, rec: RecordedEvent) -> None:
        event = rec.event
        cid = getattr(event, "command_id", None)
        intro = self._recorded.get(cid) if cid is not None else None
        self.divergence = NonDeterminismError(
            self.run_id,
            intro.seq if intro is not None else rec.seq,
            describe_recorded(intro.event if intro is not None else event),
            "nothing: the code no longer issues this command here"
            + (" (the workflow already returned)" if self._task.done() else ""),
            hint="the step or sleep was removed, or the code took another branch than when it ran "
            "(non-deterministic code: time, random, I/O or global state read in the workflow?)",
        )
        raise self.divergence

    def _check_terminal(self, rec: RecordedEvent) -> None:
        event = rec.event
        if isinstance(event, RunCancelled):
            return
        if self.outcome is None:
            self.divergence = NonDeterminismError(
                self.run_id,
                rec.seq,
                describe_recorded(event),
                "the workflow is still waiting (it issued more commands than the history has)",
                hint="a step, sleep or wait was added before the end of the workflow",
            )
            raise self.divergence

    def _check_all_recorded_issued(self, events: Sequence[RecordedEvent]) -> None:
        issued_up_to = self._next_cid - 1
        for rec in events:
            cid = getattr(rec.event, "command_id", None)
            if isinstance(rec.event, _COMMAND_EVENTS) and cid is not None and cid > issued_up_to:
                self._diverge_unissued(rec)


def _same_seconds(recorded: float | None, now: float | None) -> bool:
    if recorded is None or now is None:
        return recorded is None and now is None
    return abs(recorded - now) < 1e-6


def _set_result_unless_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _default_step_failed(name: str, attempt: int, error: ErrorInfo) -> BaseException:
    return RuntimeError(f"step {name!r} failed after {attempt} attempt(s): {error.type}: {error.message}")
