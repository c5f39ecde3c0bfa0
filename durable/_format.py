"""Terminal formatting shared by the CLI commands: colour (on a TTY only), tables, times, event summaries.

Kept apart from ``_cli`` so that every command that prints runs or histories (``show``, ``demo``, and later
``durable history``) renders them the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

import msgspec

from history import (
    CancelRequested,
    ChildFinished,
    ChildStarted,
    EventWaitStarted,
    InputRequested,
    MessageReceived,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    RunStarted,
    StateUpdated,
    StepCompleted,
    StepFailed,
    StepScheduled,
    TimerFired,
    TimerStarted,
    ValueRecorded,
    event_type,
)

from ._driver import _NEVER
from ._execution import Execution, StepView

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}

STATUS_STYLES = {
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "retrying": "yellow",
    "running": "cyan",
    "waiting": "blue",
    "pending": "dim",
    "continued": "cyan",
}
"""The colour of each run or step status."""

Cell = str | tuple[str, str | None]
"""A table cell: its text, or ``(text, style)`` to colour it."""


class Style:
    """Applies ANSI colours when ``enabled``: by default only when ``stream`` is a terminal and ``NO_COLOR`` is
    unset (https://no-color.org); ``FORCE_COLOR`` turns colour on regardless."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: IO[str]) -> Style:
        """The style suited to ``stream``."""
        if os.environ.get("NO_COLOR"):
            return cls(False)
        if os.environ.get("FORCE_COLOR"):
            return cls(True)
        isatty = getattr(stream, "isatty", None)
        return cls(bool(isatty and isatty()))

    def __call__(self, text: str, style: str | None) -> str:
        """``text`` in ``style`` (a name of ``_CODES``), or unchanged when colour is off or ``style`` is None."""
        if not self.enabled or not style or not text:
            return text
        return f"\x1b[{_CODES[style]}m{text}\x1b[0m"

    def status(self, status: str) -> str:
        """A status word in its colour."""
        return self(status, STATUS_STYLES.get(status))


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], style: Style, indent: str = "  ") -> str:
    """Left-aligned columns under dimmed headers. Widths are measured before colouring, so they line up."""
    plain = [[cell if isinstance(cell, str) else cell[0] for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for texts in plain:
        for i, text in enumerate(texts):
            widths[i] = max(widths[i], len(text))
    header: list[Cell] = [(h, "dim") for h in headers]
    lines = []
    for row in [header, *rows]:
        cells = []
        for cell, width in zip(row, widths, strict=True):
            text, cell_style = (cell, None) if isinstance(cell, str) else cell
            cells.append(style(text, cell_style) + " " * (width - len(text)))
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines)


# -- values -------------------------------------------------------------------------------------------------


def short(value: Any, limit: int = 60) -> str:
    """A value as compact one-line JSON, cut to ``limit`` characters."""
    if isinstance(value, (msgspec.Raw, bytes)):
        text = bytes(value).decode("utf-8", "replace")
    else:
        try:
            text = msgspec.json.encode(value).decode()
        except (TypeError, msgspec.EncodeError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(moment: datetime | None) -> str:
    """A timestamp in local time, to the millisecond; ``-`` for none."""
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def millis(ms: float | None) -> str:
    """A duration: ``12 ms``, ``1.25 s``, ``3m 05s``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(int(ms / 1000), 60)
    return f"{minutes}m {seconds:02d}s"


# -- events -------------------------------------------------------------------------------------------------


def event_subject(event: Any) -> str:
    """The command an event belongs to: ``#3 charge_payment``, ``#5 timer``, or empty for run events."""
    command_id = getattr(event, "command_id", None)
    if command_id is None:
        return ""
    name = getattr(event, "name", None) or getattr(event, "key", None) or getattr(event, "kind", None)
    if isinstance(event, (TimerStarted, TimerFired)):
        name = "timer"
    elif isinstance(event, (ChildStarted, ChildFinished)):
        name = "child"
    return f"#{command_id} {name}" if name else f"#{command_id}"


def event_details(event: Any, start: datetime | None = None) -> str:  # one branch per event kind
    """A short human summary of what an event records."""
    if isinstance(event, RunStarted):
        return f"{event.workflow}, input {short(event.input)}"
    if isinstance(event, StepScheduled):
        return f"args {short(event.args)}"
    if isinstance(event, StepCompleted):
        return f"attempt {event.attempt}, {millis(event.duration_ms)} -> {short(event.result)}"
    if isinstance(event, StepFailed):
        then = "final" if event.retry_at is None else f"retry at {_offset(event.retry_at, start)}"
        return f"attempt {event.attempt}, {millis(event.duration_ms)}, {then}: {_error_line(event.error)}"
    if isinstance(event, TimerStarted):
        length = "until" if event.seconds is None else f"{event.seconds:g}s, until"
        return f"sleep {length} {_offset(event.fire_at, start)}"
    if isinstance(event, TimerFired):
        return "woke up"
    if isinstance(event, ValueRecorded):
        return f"ctx.{event.kind}() = {short(event.value)}"
    if isinstance(event, RunCompleted):
        return f"result {short(event.result)}"
    if isinstance(event, RunFailed):
        return _error_line(event.error)
    if isinstance(event, RunCancelled):
        return f"reason: {event.reason}"
    return _world_details(event)


def _world_details(event: Any) -> str:  # one branch per event kind
    """The summary of an event of waiting on the world (messages, inputs, children, state, continuation)."""
    if isinstance(event, EventWaitStarted):
        return f"wait for event {event.name!r}" + (f" until {when(event.timeout_at)}" if event.timeout_at else "")
    if isinstance(event, InputRequested):
        return f"ask {event.key!r}: {event.prompt}" + (f" (until {when(event.timeout_at)})" if event.timeout_at else "")
    if isinstance(event, MessageReceived):
        return f"{event.kind} {event.name!r} = {short(event.payload)}"
    if isinstance(event, ChildStarted):
        return f"run {event.child_id} of {event.workflow}" + ("" if event.wait else " (not awaited)")
    if isinstance(event, ChildFinished):
        outcome = _error_line(event.error) if event.error is not None else f"-> {short(event.result)}"
        return f"run {event.child_id} {event.status}: {outcome}"
    if isinstance(event, CancelRequested):
        return f"reason: {event.reason}" + (" (the run's timeout)" if event.timeout else "")
    if isinstance(event, StateUpdated):
        return f"{event.key} = {short(event.value)}"
    if isinstance(event, RunContinued):
        return f"continued as run {event.new_run_id}, input {short(event.input)}"
    return ""


def event_style(event: Any) -> str | None:
    """The colour of an event's type in a history table."""
    if isinstance(event, (StepFailed, RunFailed)):
        return "yellow" if isinstance(event, StepFailed) and event.retry_at is not None else "red"
    if isinstance(event, (StepCompleted, RunCompleted)):
        return "green"
    if isinstance(event, (RunCancelled, CancelRequested)):
        return "magenta"
    if isinstance(event, ChildFinished):
        return STATUS_STYLES.get(event.status)
    return None


def _error_line(error: Any) -> str:
    return f"{error.type}: {' '.join(error.message.split())}"


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (ending in an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _offset(moment: datetime, start: datetime | None) -> str:
    if start is None:
        return when(moment)
    return f"+{(moment - start).total_seconds():.3f}s"


def history_table(events: Sequence[RecordedEvent], style: Style) -> str:
    """The event history as a table: seq, time since the run started, type, command, details."""
    start = events[0].at if events else None
    rows: list[list[Cell]] = []
    for rec in events:
        rows.append(
            [
                str(rec.seq),
                _offset(rec.at, start),
                (event_type(rec.event), event_style(rec.event)),
                event_subject(rec.event),
                cut(event_details(rec.event, start), 110),
            ]
        )
    return table(["seq", "time", "type", "command", "details"], rows, style)


def steps_table(steps: Sequence[StepView], style: Style) -> str:
    """One row per step call: command id, name, status, attempt, duration of the last attempt."""
    rows: list[list[Cell]] = [
        [
            f"#{s.command_id}",
            s.name,
            (s.status, STATUS_STYLES.get(s.status)),
            str(s.attempt),
            millis(s.duration_ms),
            cut(_error_line(s.error), 70) if s.error is not None else "",
        ]
        for s in steps
    ]
    return table(["cmd", "step", "status", "attempt", "duration", "error"], rows, style)


def step_tracebacks(steps: Sequence[StepView], style: Style) -> list[str]:
    """The recorded traceback of each step that failed for good: where the error was raised, in the step body."""
    return [
        _indented(f"traceback of step #{s.command_id} {s.name}", s.error.traceback, style)
        for s in steps
        if s.status == "failed" and s.error is not None and s.error.traceback
    ]


def execution_table(executions: Sequence[Execution], style: Style) -> str:
    """One row per run, as ``durable list`` prints them."""
    rows: list[list[Cell]] = [
        [
            e.id,
            e.workflow,
            (e.status, STATUS_STYLES.get(e.status)),
            when(e.created_at),
            millis(e.duration_ms),
            str(e.history_length),
            (e.current_step or "")[:40],
        ]
        for e in executions
    ]
    return table(["id", "workflow", "status", "created", "took", "events", "doing"], rows, style)


def execution_summary(execution: Execution, style: Style) -> str:
    """The header of ``durable show``: status, workflow, times, input, result or error, divergence report."""
    e = execution
    fields: list[tuple[str, str]] = [
        ("status", style.status(e.status)),
        ("workflow", e.workflow),
        ("created", when(e.created_at)),
        ("started", when(e.started_at)),
        ("finished", when(e.finished_at) + (f"  (took {millis(e.duration_ms)})" if e.duration_ms else "")),
        ("events", str(e.history_length)),
        ("input", short(e.input, 200)),
    ]
    if e.parent_id:
        fields.append(("parent", e.parent_id))
    if e.continued_from:
        fields.append(("prev run", f"{e.continued_from}  (this run continues it: continue-as-new)"))
    if e.continued_as:
        fields.append(("next run", f"{e.continued_as}  (continued as new)"))
    if e.worker and not e.finished_at:
        fields.append(("worker", e.worker))
    if e.current_step and not e.finished_at:
        fields.append(("doing", e.current_step))
    if e.wake_at and not e.finished_at:
        parked = e.wake_at >= _NEVER  # waits for nothing but the world: an event, an input, a child's outcome
        fields.append(("wakes at", "when an event, input or child's outcome it waits for arrives" if parked
                       else when(e.wake_at)))
    if e.status == "completed":
        fields.append(("result", short(e.result, 200)))
    if e.cancel_reason:
        fields.append(("cancel", e.cancel_reason))
    if e.error is not None:
        fields.append(("error", style(_error_line(e.error), "red")))
    lines = [style(f"Run {e.id}", "bold")]
    lines += [f"  {style(name.ljust(9), 'dim')} {value}" for name, value in fields]
    if e.error is not None and e.error.traceback:
        lines.append(_indented("traceback", e.error.traceback, style))
    if e.blocked:
        lines.append(_indented("blocked", e.blocked, style))
    return "\n".join(lines)


def _indented(title: str, text: str, style: Style) -> str:
    body = "\n".join("    " + line for line in text.rstrip().splitlines())
    return f"  {style(title, 'dim')}\n{body}"
