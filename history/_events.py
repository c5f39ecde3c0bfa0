"""The events of a run's history: a msgspec tagged union, one frozen Struct per kind.

Every event is small and stable: the tag (``type``) and field names are persisted and must never change once
released. Payloads chosen by the user (workflow input, step arguments and results, recorded values) are kept as
``msgspec.Raw`` JSON so that they are stored, read and exported without ever being re-encoded.

Events that belong to a command carry its ``command_id``: the per-run sequence number the workflow code allocated
when it issued the command (at call time, so ``asyncio.gather`` numbers commands in argument order).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import msgspec

FORMAT_VERSION = 1
"""Version of the event format; bumped (never reused) when an event changes incompatibly."""


class ErrorInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """An exception as recorded in the history: its type, message and formatted traceback."""

    type: str
    message: str
    traceback: str = ""


class _Event(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=False):
    """Base of every event. ``forbid_unknown_fields=False`` lets an older reader skip fields added later."""


class CarriedMessage(msgspec.Struct, frozen=True):
    """A message a run had received but not used when it continued as new: handed to the next run."""

    kind: str
    name: str
    payload: msgspec.Raw


class RunStarted(_Event, tag="run_started", frozen=True):
    """The first event of every run: which workflow, with which input, and the seed for ``ctx.random()``."""

    workflow: str
    input: msgspec.Raw
    run_id: str
    random_seed: int
    parent_id: str | None = None
    deadline: datetime | None = None
    """When the whole run times out (``@durable.workflow(timeout=...)``), fixed when it started."""
    continued_from: str | None = None
    carried: tuple[CarriedMessage, ...] = ()
    """Messages the previous run of a continue-as-new chain received but no wait took: buffered again here."""


class StepScheduled(_Event, tag="step_scheduled", frozen=True):
    """The workflow called a step. Written in the same commit as the step's first outcome."""

    command_id: int
    name: str
    args: msgspec.Raw
    digest: str


class StepCompleted(_Event, tag="step_completed", frozen=True):
    """A step attempt returned; ``result`` is what the workflow receives, now and on every replay."""

    command_id: int
    name: str
    attempt: int
    result: msgspec.Raw
    duration_ms: float


class StepFailed(_Event, tag="step_failed", frozen=True):
    """A step attempt raised. ``retry_at`` is set when another attempt follows, ``None`` when the failure is final
    and is raised into the workflow as ``StepFailed``."""

    command_id: int
    name: str
    attempt: int
    error: ErrorInfo
    duration_ms: float
    retry_at: datetime | None = None


class TimerStarted(_Event, tag="timer_started", frozen=True):
    """A durable timer (``ctx.sleep``, ``asyncio.sleep``, a timeout) that fires at ``fire_at``."""

    command_id: int
    fire_at: datetime
    seconds: float | None
    """The requested duration; ``None`` for ``ctx.sleep_until`` (an absolute time, compared by ``fire_at``)."""


class TimerFired(_Event, tag="timer_fired", frozen=True):
    """The timer's time came; the workflow is resumed past its sleep."""

    command_id: int


class ValueRecorded(_Event, tag="value_recorded", frozen=True):
    """A value the workflow drew from the world (``ctx.now()``, ``ctx.uuid4()``), replayed as recorded."""

    command_id: int
    kind: str
    value: msgspec.Raw


class PatchMarked(_Event, tag="patch_marked", frozen=True):
    """The run took the new code path guarded by ``ctx.patched(patch_id)``. Takes no command id, so histories
    recorded before the patch existed replay unchanged (without the marker, replay takes the old path)."""

    patch_id: str


class EventWaitStarted(_Event, tag="event_wait_started", frozen=True):
    """The workflow waits for an external event ``name`` (``ctx.wait_for_event``)."""

    command_id: int
    name: str
    timeout_at: datetime | None = None


class InputRequested(_Event, tag="input_requested", frozen=True):
    """The workflow waits for a person's input ``key`` (``ctx.wait_for_input``) described by ``spec``."""

    command_id: int
    key: str
    prompt: str
    spec: msgspec.Raw
    timeout_at: datetime | None = None


class MessageReceived(_Event, tag="message_received", frozen=True):
    """A message from outside reached the run: an external event (``kind="event"``) or a person's input
    (``kind="input"``). Recorded when it arrives, whether or not the workflow waits for it yet."""

    message_id: int
    kind: str
    name: str
    payload: msgspec.Raw


class ChildStarted(_Event, tag="child_started", frozen=True):
    """The workflow started a child run (``ctx.call_workflow``/``ctx.start_workflow``)."""

    command_id: int
    child_id: str
    workflow: str
    wait: bool


class ChildFinished(_Event, tag="child_finished", frozen=True):
    """A child run the workflow started finished with ``status`` (and its result or error)."""

    command_id: int
    child_id: str
    status: str
    result: msgspec.Raw = msgspec.Raw(b"null")  # JSON null unless the child completed
    error: ErrorInfo | None = None


class CancelRequested(_Event, tag="cancel_requested", frozen=True):
    """Cancellation reached the run: ``durable.Cancelled`` is raised at the workflow's current await.
    ``timeout`` marks a run that outlived its ``@durable.workflow(timeout=...)``."""

    reason: str
    timeout: bool = False


class StateUpdated(_Event, tag="state_updated", frozen=True):
    """The workflow published ``value`` under ``key`` (``ctx.set_state``), shown by ``get_execution().state``."""

    key: str
    value: msgspec.Raw


class RunContinued(_Event, tag="run_continued", frozen=True):
    """The workflow called ``ctx.continue_as_new``: this run ends and ``new_run_id`` carries on with the input."""

    new_run_id: str
    input: msgspec.Raw


class RunCompleted(_Event, tag="run_completed", frozen=True):
    """The workflow function returned ``result``."""

    result: msgspec.Raw


class RunFailed(_Event, tag="run_failed", frozen=True):
    """The workflow function raised."""

    error: ErrorInfo


class RunCancelled(_Event, tag="run_cancelled", frozen=True):
    """The run was cancelled on request."""

    reason: str


Event: TypeAlias = (
    RunStarted
    | StepScheduled
    | StepCompleted
    | StepFailed
    | TimerStarted
    | TimerFired
    | ValueRecorded
    | PatchMarked
    | EventWaitStarted
    | InputRequested
    | MessageReceived
    | ChildStarted
    | ChildFinished
    | CancelRequested
    | StateUpdated
    | RunContinued
    | RunCompleted
    | RunFailed
    | RunCancelled
)

EVENT_TYPES: dict[str, type[Any]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        RunStarted,
        StepScheduled,
        StepCompleted,
        StepFailed,
        TimerStarted,
        TimerFired,
        ValueRecorded,
        PatchMarked,
        EventWaitStarted,
        InputRequested,
        MessageReceived,
        ChildStarted,
        ChildFinished,
        CancelRequested,
        StateUpdated,
        RunContinued,
        RunCompleted,
        RunFailed,
        RunCancelled,
    )
}
"""Every event class by its persisted tag."""

TERMINAL_EVENTS = (RunCompleted, RunFailed, RunCancelled, RunContinued)


class RecordedEvent(msgspec.Struct, frozen=True):
    """An event as stored: its 1-based position in the run's history, the time it was appended, the event."""

    seq: int
    at: datetime
    event: Event
