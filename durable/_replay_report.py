"""The text of a replay report (``ReplayResult.report()`` and ``durable replay``): OK with the commands matched,
the first divergence as a diff with the line of code that issued it, or the workflow's variables at ``until``."""

from __future__ import annotations

import linecache
from typing import TYPE_CHECKING, Any

from history import RunCancelled, RunContinued, RunFailed
from replay import WorkflowContext

from ._format import Style

if TYPE_CHECKING:
    from .replay import ReplayResult

_VALUE_CHARS = 160


def render_report(result: ReplayResult, *, color: bool, max_commands: int) -> str:
    """The report of one replay, in a few indented lines under a one-line verdict."""
    style = Style(color)
    where = f" from {result.source}" if result.source else ""
    title = f"run {result.run_id} (workflow {result.workflow}){where}"
    if result.divergence is not None:
        return "\n".join(_diverged(result, style, title, max_commands))
    if result.until is not None:
        return "\n".join(_stopped(result, style, title, max_commands))
    if result.matches_recorded is False:
        lines = [f"{style('DIFFERENT END', 'red')}  {title}", *_commands(result, style, max_commands)]
        lines.append(f"  {style('-', 'red')} {result.mismatch}")
        lines.append(style("  The code issues the recorded commands but computes another outcome from them: "
                           "something in the workflow between its last command and its return changed.", "dim"))
        return "\n".join(lines)
    return "\n".join(_ok(result, style, title, max_commands))


def _ok(result: ReplayResult, style: Style, title: str, max_commands: int) -> list[str]:
    lines = [f"{style('OK', 'green')}  {title}", *_commands(result, style, max_commands)]
    end = result.recorded_end
    if end is not None and isinstance(end.event, RunCancelled):
        lines.append(f"  the run was cancelled at event {end.seq} ({end.event.reason})")
    elif end is not None and isinstance(end.event, RunContinued):
        lines.append(f"  the run continued as run {end.event.new_run_id} at event {end.seq}")
    elif end is not None:
        lines.append(f"  {_outcome(result)}: the same as recorded (event {end.seq})")
    elif result.outcome is not None:
        lines.append(f"  {_outcome(result)} (the history has no end event yet)")
    if result.waiting_for:
        lines.append("  the run is in flight; after its recorded events the code waits for:")
        lines += [f"    {item}" for item in result.waiting_for]
    return lines


def _diverged(result: ReplayResult, style: Style, title: str, max_commands: int) -> list[str]:
    error = result.divergence
    assert error is not None
    at = f", at event {error.seq} of {result.total_events}" if error.seq is not None else ""
    lines = [f"{style('DIVERGED', 'red')}  {title}{at}", *_commands(result, style, max_commands, before=True)]
    recorded = f"event {error.seq}, recorded:" if error.seq is not None else "the history recorded:"
    width = max(len(recorded), len("the code issued:"))
    lines.append(style(f"  - {recorded.ljust(width)}  {error.recorded}", "red"))
    lines.append(style(f"  + {'the code issued:'.ljust(width)}  {error.issued}", "green"))
    location = error.location or (result.frames[-1].location if result.frames else None)
    if location is not None:
        label = "at" if error.location else "the code waits at"
        lines.append(f"    {label} {location}{_source_line(location)}")
    if error.hint:
        lines.append(f"  {style('hint:', 'yellow')} {error.hint}")
    lines.append(style("  A replay changes nothing. Make the code issue the recorded commands again (guard new "
                       "behaviour with ctx.patched(...), see docs/replay.md), then replay again.", "dim"))
    return lines


def _stopped(result: ReplayResult, style: Style, title: str, max_commands: int) -> list[str]:
    lines = [f"{style('STOPPED', 'cyan')} after event {result.events} of {result.total_events}  {title}"]
    lines += _commands(result, style, max_commands)
    if result.outcome is not None:
        lines.append(f"  the workflow had ended by event {result.events}: {_outcome(result)}")
        return lines
    if result.waiting_for:
        lines.append("  the code now waits for: " + "; ".join(result.waiting_for))
    for frame in result.frames:
        lines.append(f"  {style('locals of ' + frame.function, 'bold')} at {frame.location}"
                     f"{_source_line(frame.location)}")
        lines += [f"    {name} = {_value(value)}" for name, value in frame.locals.items()]
    return lines


def _commands(result: ReplayResult, style: Style, max_commands: int, before: bool = False) -> list[str]:
    count = len(result.commands)
    noun = "command" if count == 1 else "commands"
    if before:
        head = f"  the code re-issued {count} recorded {noun} before it"
    else:
        head = f"  replayed {result.events} events, running no step: the code re-issued the {count} recorded {noun}"
    lines = [style(head + (":" if count else ""), "dim")]
    shown = result.commands
    if count > max_commands:
        tail = max(1, max_commands // 4)
        shown = [*result.commands[: max_commands - tail], f"… {count - max_commands} more …",
                 *result.commands[-tail:]]
    lines += [f"    {item}" for item in shown]
    return lines


def _outcome(result: ReplayResult) -> str:
    if result.outcome is None:
        return "still waiting"
    if result.outcome.error is not None:
        return f"raised {result.outcome.error.type}: {result.outcome.error.message}"
    end = result.recorded_end
    if end is not None and isinstance(end.event, RunFailed):  # pragma: no cover - reported as a mismatch
        return "returned"
    raw = result.outcome.result or b"null"
    text = " ".join(bytes(raw).decode("utf-8", "replace").split())
    return f"returned {text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + '…'}"


def _source_line(location: str) -> str:
    filename, _, line = location.rpartition(":")
    if not line.isdigit():
        return ""
    text = linecache.getline(filename, int(line)).strip()
    return f":  {text}" if text else ""


def _value(value: Any) -> str:
    """A local variable for the report: its repr, on one line, cut to a readable length."""
    if isinstance(value, WorkflowContext):
        return f"<WorkflowContext of run {value.run_id!r}>"
    try:
        text = repr(value)
    except Exception as exc:  # a user __repr__ that fails must not break the report
        text = f"<{type(value).__qualname__}: repr() failed: {exc}>"
    text = " ".join(text.split())
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"
