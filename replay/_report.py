"""Human-readable pieces of a divergence report: what was recorded, what was issued, where, and why."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from types import FrameType

import msgspec

from history import (
    ChildStarted,
    Event,
    EventWaitStarted,
    InputRequested,
    StepScheduled,
    TimerStarted,
    ValueRecorded,
    event_type,
)

_MAX_ARGS_CHARS = 200
_OWN_PACKAGES = tuple(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + name + os.sep
    for name in ("replay", "durable", "history")
)
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__ or "")) + os.sep


def _short(raw: msgspec.Raw | bytes | None) -> str:
    if raw is None:
        return ""
    text = bytes(raw).decode("utf-8", "replace")
    return text if len(text) <= _MAX_ARGS_CHARS else text[: _MAX_ARGS_CHARS - 1] + "…"


def describe_recorded(event: Event) -> str:
    """One line for a recorded event: ``step 'charge'(["o-1", 10.0])``, ``timer 5s``, ..."""
    if isinstance(event, StepScheduled):
        return f"step {event.name!r} with arguments {_short(event.args)}"
    if isinstance(event, TimerStarted):
        if event.seconds is None:
            return f"timer until {event.fire_at.isoformat()}"
        return f"timer of {event.seconds:g}s"
    if isinstance(event, ValueRecorded):
        return f"ctx.{event.kind}()"
    if isinstance(event, EventWaitStarted):
        return f"wait for event {event.name!r}"
    if isinstance(event, InputRequested):
        return f"wait for input {event.key!r}"
    if isinstance(event, ChildStarted):
        return f"{'call' if event.wait else 'start'} of child workflow {event.workflow!r} as {event.child_id!r}"
    return event_type(event)


def describe_issued(
    kind: str,
    name: str | None,
    args: msgspec.Raw | None,
    *,
    seconds: float | None = None,
    until: datetime | None = None,
) -> str:
    """One line for a command the code issued now, in the same words as ``describe_recorded``."""
    if kind == "step":
        return f"step {name!r} with arguments {_short(args)}"
    if kind == "timer":
        if until is not None:
            return f"timer until {until.isoformat()}"
        return f"timer of {seconds:g}s" if seconds is not None else "a timer"
    if kind == "value":
        return f"ctx.{name}()" if name else "a recorded value (ctx.now()/ctx.uuid4())"
    return kind


def divergence_hint(recorded: Event, issued: str, recorded_steps: list[str]) -> str:
    """The most likely cause of a mismatch, in words a user can act on."""
    if isinstance(recorded, StepScheduled) and issued.startswith("step "):
        issued_name = issued.split("'")[1] if "'" in issued else ""
        if issued_name == recorded.name:
            return "the step's arguments changed (different code, or values computed non-deterministically)"
        if issued_name in recorded_steps:
            return "calls were reordered (or a step was added or removed before this point)"
        return "the step was renamed, or a new step was inserted before this point"
    if isinstance(recorded, TimerStarted) and issued.startswith("timer"):
        return "the sleep duration changed"
    return "a command was added or removed before this point, or the code took another branch"


def user_code_location(frame: FrameType | None) -> str | None:
    """``file:line`` of the innermost frame that belongs to the user's code (not Durable's, not asyncio's)."""
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_OWN_PACKAGES) and not filename.startswith(_ASYNCIO_DIR):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None
