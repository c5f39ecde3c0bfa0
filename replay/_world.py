"""The parts of a workflow instance that wait on the world: external events, human input, child runs,
published state, cancellation, compensation and continue-as-new.

A mixin of ``WorkflowInstance`` (it uses the instance's command allocation, matching and timers). Messages from
outside arrive as ``MessageReceived`` events in the history, in arrival order, whether or not the code waits for
them yet; a wait takes the first buffered message that matches, else waits for the next. Both live and on replay
the same messages meet the same waits in the same order, so the outcome is deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from history import (
    COMPLETED,
    CancelRequested,
    CarriedMessage,
    ChildFinished,
    ChildStarted,
    EventWaitStarted,
    InputRequested,
    MessageReceived,
    StateUpdated,
    decode_payload,
    encode_payload,
)

from ._errors import ChildWorkflowFailed, ContinueAsNew, WaitTimeout

if TYPE_CHECKING:
    from history import Event

    from ._loop import DeterministicLoop

MISSING: Any = object()
"""Marks an argument that was not given (``None`` is a valid default value)."""

_encode_spec = msgspec.json.Encoder()


@dataclass(eq=False)
class _Waiter:
    command_id: int
    kind: str  # "event" or "input"
    name: str
    future: asyncio.Future[Any]
    match: Callable[[Any], bool] | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class ChildRequest:
    """A child run the driver must create (before ``ChildStarted`` is appended)."""

    command_id: int
    child_id: str
    workflow: str
    input: msgspec.Raw
    wait: bool
    cancel_with_parent: bool = True


@dataclass(frozen=True)
class ChildHandle:
    """What ``ctx.start_workflow`` returns: the started child's id (follow it with ``engine.get_execution``)."""

    id: str
    workflow: str


class WorldMixin:
    """Waits on messages and children; see the module docstring."""

    if TYPE_CHECKING:  # provided by WorkflowInstance
        run_id: str
        workflow_name: str
        replaying: bool
        _loop: DeterministicLoop
        _task: asyncio.Task[Any]
        _new_events: list[Event]
        _clock: Callable[[], datetime]

        def _allocate(self) -> int: ...

        def _match_command(self, cid: int, new: Event, same: Callable[[Event], bool]) -> Event | None: ...

    def _init_world(self) -> None:
        self._buffered: list[tuple[str, str, Any]] = []  # received messages no wait took yet: (kind, name, value)
        self._waiters: list[_Waiter] = []
        self._children: dict[int, tuple[ChildRequest, asyncio.Future[Any], Any]] = {}
        self._new_children: list[ChildRequest] = []
        self._closed_inputs: list[tuple[str, int]] = []  # (key, command id of the question)
        self._compensations: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
        self._state_updates_recorded = 0
        self.state: dict[str, Any] = {}
        self.state_changed = False
        self.cancel_reason: str | None = None
        self.cancel_timed_out = False

    # -- commands ---------------------------------------------------------------------------------------------

    def wait_for_message(
        self,
        kind: str,
        name: str,
        *,
        timeout: float | None,
        default: Any,
        match: Callable[[Any], bool] | None = None,
        prompt: str = "",
        spec: dict[str, Any] | None = None,
    ) -> asyncio.Future[Any]:
        """Issue a wait for an external event (``kind="event"``) or a person's input (``kind="input"``)."""
        cid = self._allocate()
        timeout_at = None if timeout is None else self._clock() + timedelta(seconds=timeout)
        if kind == "event":
            new: Any = EventWaitStarted(command_id=cid, name=name, timeout_at=timeout_at)
        else:
            raw_spec = msgspec.Raw(_encode_spec.encode(spec or {}))
            new = InputRequested(command_id=cid, key=name, prompt=prompt, spec=raw_spec, timeout_at=timeout_at)
        self._match_command(cid, new, lambda e: type(e) is type(new) and _wait_name(e) == name)
        waiter = _Waiter(cid, kind, name, self._loop.create_future(), match)
        if not self._take_buffered(waiter):
            self._waiters.append(waiter)
            if timeout is not None:
                waiter.timer = self._loop.call_later(timeout, self._wait_timed_out, waiter, default)
        return waiter.future

    def call_child(
        self, workflow: Any, args: tuple[Any, ...], *, workflow_id: str | None, wait: bool,
        cancel_with_parent: bool = True,
    ) -> asyncio.Future[Any]:
        """Issue a child run: awaited (``call_workflow``) or fire-and-forget (``start_workflow``)."""
        cid = self._allocate()
        name = workflow if isinstance(workflow, str) else workflow.name
        raw = encode_payload(list(args), what=f"the input of child workflow {name!r}")
        child_id = workflow_id or f"{self.run_id}-{cid}"
        new = ChildStarted(command_id=cid, child_id=child_id, workflow=name, wait=wait)
        recorded = self._match_command(
            cid, new, lambda e: isinstance(e, ChildStarted) and e.workflow == name and e.child_id == child_id
        )
        request = ChildRequest(cid, child_id, name, raw, wait, cancel_with_parent)
        if recorded is None:
            self._new_children.append(request)
        future = self._loop.create_future()
        if wait:
            self._children[cid] = (request, future, None if isinstance(workflow, str) else workflow)
        else:
            future.set_result(ChildHandle(child_id, name))
        return future

    def set_state(self, key: str, value: Any) -> None:
        """``ctx.set_state``: publish ``value`` under ``key`` (recorded once, not again on replay)."""
        raw = encode_payload(value, what=f"ctx.set_state({key!r}, ...)")
        self.state[key] = decode_payload(raw)
        if self.replaying and self._state_updates_recorded > 0:
            self._state_updates_recorded -= 1
            return
        self._new_events.append(StateUpdated(key=key, value=raw))
        self.state_changed = True

    def continue_as_new(self, args: tuple[Any, ...]) -> ContinueAsNew:
        """The signal ``ctx.continue_as_new`` raises: ends the run, carrying ``args`` to the next one."""
        return ContinueAsNew(encode_payload(list(args), what=f"the input of workflow {self.workflow_name!r}"))

    def unused_messages(self) -> tuple[CarriedMessage, ...]:
        """Messages received that no wait took: a run that continues as new hands them to the next one."""
        return tuple(
            CarriedMessage(kind=kind, name=name, payload=encode_payload(value, what=f"event {name!r}"))
            for kind, name, value in self._buffered
        )

    def note_completed_step(self, definition: Any, args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> None:
        """Remember a completed step's compensation (``@durable.step(compensate=...)``), most recent last."""
        compensate = getattr(definition, "compensate", None)
        if compensate is not None:
            self._compensations.append((compensate, args, kwargs))

    def take_compensations(self) -> list[tuple[Any, tuple[Any, ...], dict[str, Any]]]:
        """The compensations to run now, most recent first (each is run once)."""
        pending, self._compensations = self._compensations[::-1], []
        return pending

    # -- what the driver reads --------------------------------------------------------------------------------

    def take_new_children(self) -> list[ChildRequest]:
        """Children issued since the last call: the driver creates them before appending ``ChildStarted``."""
        children, self._new_children = self._new_children, []
        return children

    def take_closed_inputs(self) -> list[tuple[str, int]]:
        """Inputs no longer awaited (answered or timed out), as (key, command id of the question): the driver
        closes them, unless the same key was asked again since."""
        closed, self._closed_inputs = self._closed_inputs, []
        return closed

    @property
    def awaits_world(self) -> bool:
        """Whether the code waits for a message or an awaited child (the driver then reads the run's inbox)."""
        return bool(self._waiters or self._children)

    @property
    def waits(self) -> list[str]:
        """What the code waits for from the world, oldest first: ``event:<name>``, ``input:<key>``,
        ``child:<run id>`` (``durable`` shows it as a run's ``current_step``)."""
        labels = [f"{waiter.kind}:{waiter.name}" for waiter in self._waiters]
        labels += [f"child:{request.child_id}" for request, _, _ in self._children.values()]
        return labels

    def child_command(self, child_id: str) -> int | None:
        """The command id of the awaited child ``child_id`` (or of a run it continued as), if still awaited."""
        root = child_id.split("~", 1)[0]
        for cid, (request, _, _) in self._children.items():
            if request.child_id == root:
                return cid
        return None

    def children_to_cancel(self) -> list[str]:
        """Awaited children that follow their parent's cancellation."""
        return [request.child_id for request, _, _ in self._children.values() if request.cancel_with_parent]

    # -- deliveries -------------------------------------------------------------------------------------------

    def _deliver_world(self, event: Any) -> None:
        if isinstance(event, MessageReceived):
            self._on_message(event.kind, event.name, decode_payload(event.payload))
        elif isinstance(event, ChildFinished):
            self._on_child_finished(event)
        elif isinstance(event, CancelRequested):
            self.cancel_reason = event.reason
            self.cancel_timed_out = event.timeout
            self._task.cancel(msg=event.reason)

    def _on_message(self, kind: str, name: str, value: Any) -> None:
        for waiter in self._waiters:
            if waiter.kind == kind and waiter.name == name and self._matches(waiter, value):
                self._waiters.remove(waiter)
                self._resolve_waiter(waiter, value)
                return
        self._buffered.append((kind, name, value))

    def _take_buffered(self, waiter: _Waiter) -> bool:
        for index, (kind, name, value) in enumerate(self._buffered):
            if kind == waiter.kind and name == waiter.name and self._matches(waiter, value):
                del self._buffered[index]
                self._resolve_waiter(waiter, value)
                return True
        return False

    @staticmethod
    def _matches(waiter: _Waiter, value: Any) -> bool:
        if waiter.match is None or waiter.future.done():
            return not waiter.future.done()
        try:
            return bool(waiter.match(value))
        except Exception as exc:
            waiter.future.set_exception(exc)
            return False

    def _resolve_waiter(self, waiter: _Waiter, value: Any) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        if waiter.kind == "input":
            self._closed_inputs.append((waiter.name, waiter.command_id))
        if not waiter.future.done():
            waiter.future.set_result(value)

    def _wait_timed_out(self, waiter: _Waiter, default: Any) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.kind == "input":
            self._closed_inputs.append((waiter.name, waiter.command_id))
        if waiter.future.done():
            return
        if default is MISSING:
            what = "event" if waiter.kind == "event" else "input"
            waiter.future.set_exception(WaitTimeout(f"no {what} {waiter.name!r} arrived in time"))
        else:
            waiter.future.set_result(default)

    def _on_child_finished(self, event: ChildFinished) -> None:
        entry = self._children.pop(event.command_id, None)
        if entry is None or entry[1].done():
            return
        _, future, definition = entry
        if event.status == COMPLETED:
            decode = getattr(definition, "decode_result", None)
            future.set_result(decode(event.result) if decode else decode_payload(event.result))
        else:
            future.set_exception(ChildWorkflowFailed(event.child_id, event.status, event.error))


def _wait_name(event: Any) -> str:
    return event.name if isinstance(event, EventWaitStarted) else event.key


