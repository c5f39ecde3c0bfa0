"""Replay a run's recorded history against the workflow code as it is now: the debugging and deploy-safety tool.

``replay(workflow, history)`` re-executes the workflow function on Durable's deterministic loop, answering every
step, sleep and recorded value from the history. It never runs a step body, never sleeps, never touches a
database or the network: a history file (or a list of events) and the code are all it needs. The result says
whether the code issues the recorded commands and ends as the run ended, or where and why it diverged::

    import durable.replay
    result = durable.replay.replay(process_order, "run.json")
    print(result.report())          # OK / the first divergence as a diff, with file:line and a hint

``until=N`` stops after event N and captures the workflow's local variables; ``break_at="charge_payment"`` opens
pdb in the workflow code where it calls that step (``breakpoint()`` in workflow code works during a replay too).

Guarding a deploy: keep histories of in-flight runs (``durable history export``) in a folder of the test suite,
and replay them all in CI against the new code::

    def test_in_flight_runs_still_replay():
        import myapp.workflows  # noqa: F401  (registers the workflows)
        durable.replay.assert_histories_replay("tests/histories")

See docs/replay.md for the whole workflow and docs/history-format.md for the file format.
"""

from __future__ import annotations

import asyncio
import os
import sys
import sysconfig
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec

from history import (
    ChildStarted,
    ErrorInfo,
    EventWaitStarted,
    InputRequested,
    PatchMarked,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    StepScheduled,
    TimerStarted,
    ValueRecorded,
    decode_payload,
)
from replay import NonDeterminismError, Outcome, WorkflowInstance, canonical_error_type

try:
    from replay import unsafe_nondeterminism as _guards_off
except ImportError:  # pragma: no cover - a replay package without determinism guards: nothing to suspend
    _guards_off = nullcontext  # type: ignore[assignment]

from ._definitions import Workflow, registered_workflows, unknown_workflow
from ._history_file import (
    HistoryDocument,
    HistoryFileError,
    RunInfo,
    history_files,
    iter_histories,
    load_histories,
    load_history,
    make_document,
    write_history,
)
from ._replay_report import render_report
from .errors import StepFailed

__all__ = [
    "FrameLocals",
    "HistoryDocument",
    "HistoryFileError",
    "ReplayResult",
    "RunInfo",
    "assert_histories_replay",
    "check_histories",
    "history_files",
    "load_histories",
    "load_history",
    "make_document",
    "replay",
    "write_history",
]

History = Sequence[RecordedEvent] | HistoryDocument | str | os.PathLike[str]
"""What ``replay`` accepts as a history: events, a loaded document, or the path of a history file."""

WorkflowRef = Workflow | Callable[..., Coroutine[Any, Any, Any]] | Mapping[str, Workflow] | Iterable[Workflow] | None
"""The code to replay: a ``@durable.workflow``, a plain ``async def`` (named after the history's workflow),
several workflows (picked by the history's workflow name), or ``None`` for every registered workflow."""

_COMMAND_EVENTS = (StepScheduled, TimerStarted, ValueRecorded, PatchMarked, EventWaitStarted, InputRequested,
                   ChildStarted)
_END_EVENTS = (RunCompleted, RunFailed, RunCancelled, RunContinued)
_OWN_DIRS = tuple(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + name + os.sep
    for name in ("durable", "replay", "history")
)
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__ or "")) + os.sep
_STDLIB_DIRS = tuple({os.path.abspath(sysconfig.get_paths()[key]) + os.sep for key in ("stdlib", "platstdlib")})
_DEMO_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_demo.py")


@dataclass(frozen=True)
class FrameLocals:
    """One frame of workflow code suspended at an ``await``: the function, ``file:line`` and its variables."""

    function: str
    location: str
    locals: dict[str, Any]


@dataclass(frozen=True)
class ReplayResult:
    """What a replay found. ``ok`` when the code issued every recorded command, in order, and (for a finished
    run) ended as the run ended.

    Attributes:
        run_id, workflow: the run replayed.
        source: where the history came from (a file, ``file line N`` for JSON lines), when known.
        events: how many events were replayed (all of them, or up to ``until``).
        total_events: the length of the history.
        commands: the recorded commands the code re-issued, described (``event 2: #1 step add([4, 1])``).
        divergence: the first mismatch, or ``None``.
        outcome: how the workflow function ended during the replay (raw result or error), ``None`` if it is
            still waiting (an in-flight run, a replay stopped by ``until``, or a divergence).
        recorded_end: the run's recorded final event (``run_completed``/``run_failed``/``run_cancelled``), if any.
        matches_recorded: whether ``outcome`` equals the recorded end; ``None`` when there is nothing to compare.
        mismatch: what differs between the outcome and the recorded end, when they differ.
        waiting_for: commands the code issued that the history has no record of yet: what a worker would run
            next (for an in-flight run), or what the code waits for at ``until``.
        until: the ``until`` given.
        frames: with ``until`` (or at a divergence the code did not issue), the suspended workflow frames,
            outermost (the workflow function) first.
        break_hits: how many times ``break_at`` opened the debugger.
    """

    run_id: str
    workflow: str
    source: str | None
    events: int
    total_events: int
    commands: list[str]
    divergence: NonDeterminismError | None
    outcome: Outcome | None
    recorded_end: RecordedEvent | None
    matches_recorded: bool | None
    mismatch: str | None = None
    waiting_for: list[str] = field(default_factory=list)
    until: int | None = None
    frames: list[FrameLocals] = field(default_factory=list)
    break_at: str | None = None
    break_hits: int = 0

    @property
    def ok(self) -> bool:
        """True when the replay matched the history (and the recorded end, if any)."""
        return self.divergence is None and self.matches_recorded is not False

    @property
    def locals(self) -> dict[str, Any]:
        """The workflow function's local variables where it waits (with ``until``); empty if it returned."""
        return self.frames[0].locals if self.frames else {}

    @property
    def result(self) -> Any:
        """The workflow's return value in this replay (plain JSON values), or ``None``."""
        if self.outcome is None or self.outcome.result is None:
            return None
        return decode_payload(self.outcome.result)

    @property
    def error(self) -> ErrorInfo | None:
        """The error the workflow raised in this replay, if it raised."""
        return self.outcome.error if self.outcome is not None else None

    def report(self, *, color: bool = False, max_commands: int = 20) -> str:
        """A human-readable report: OK with the commands matched, or the divergence as a diff."""
        return render_report(self, color=color, max_commands=max_commands)

    def __str__(self) -> str:
        return self.report()


# -- replay -----------------------------------------------------------------------------------------------------


def replay(
    workflow: WorkflowRef,
    history: History,
    *,
    until: int | None = None,
    break_at: str | None = None,
    debugger: Callable[[FrameType], None] | None = None,
) -> ReplayResult:
    """Re-execute ``workflow`` against ``history`` with no database, no worker, no step bodies and no sleeps.

    Args:
        workflow: the code (see ``WorkflowRef``); a plain ``async def`` is taken as the history's workflow.
        history: the events, a loaded ``HistoryDocument``, or the path of a history file (one run).
        until: stop after event ``until`` and capture the workflow's local variables there (``result.frames``).
        break_at: open the debugger in the workflow code each time it calls the step of this name.
        debugger: what ``break_at`` calls with the workflow frame (default: ``pdb`` at that frame).

    Returns:
        a ``ReplayResult``; a divergence is reported in it, not raised.

    Raises:
        HistoryFileError: the history file cannot be used (the message says why and what to do).
        UnknownWorkflowError: no workflow of the history's name is among the code given.
    """
    events, source = _events_of(history)
    if until is not None and until < 1:
        raise ValueError(f"until= is an event number (1 or more), got {until}")
    definition = _definition(workflow, events[0].event.workflow)  # type: ignore[union-attr]
    cut = list(events) if until is None or until >= len(events) else list(events[:until])
    instance = _ReplayInstance(definition, cut, break_at, debugger or _enter_debugger)
    divergence: NonDeterminismError | None = None
    breakpoints: list[FrameType] = []
    try:
        with _breakpoints_stop_in_workflow_code(breakpoints):
            instance.replay(cut)
    except NonDeterminismError as exc:
        divergence = exc
    finally:
        if breakpoints or instance.break_hits:
            sys.settrace(None)  # the replay is over, and with it the debugging session (`n` past the end)
    try:
        return _result(instance, events, cut, source, divergence, until, break_at)
    finally:
        instance.close()


class _ReplayInstance(WorkflowInstance):
    """A workflow instance that can stop in the debugger when the code calls a given step.

    Anything issued past the recorded history is stamped with the time of the last replayed event, so a replay
    never reads the wall clock either.
    """

    def __init__(
        self,
        definition: Workflow,
        events: Sequence[RecordedEvent],
        break_at: str | None,
        debugger: Callable[[FrameType], None],
    ) -> None:
        last = events[-1].at
        super().__init__(definition, events[0], clock=lambda: last, step_failed=StepFailed)
        self.break_at = break_at
        self.break_hits = 0
        self._debugger = debugger

    def call_step(self, definition: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.break_at is not None and definition.name == self.break_at:
            frame = _user_frame(sys._getframe(1))
            if frame is not None:
                self.break_hits += 1
                self._debugger(frame)
        return super().call_step(definition, args, kwargs)


def _enter_debugger(frame: FrameType) -> None:
    """``break_at``'s default: pdb at the workflow line calling the step. ``PYTHONBREAKPOINT=0`` turns it off, as
    it does ``breakpoint()``."""
    if os.environ.get("PYTHONBREAKPOINT") == "0":
        return
    with _guards_off():  # pdb reads ~/.pdbrc: not the workflow's I/O, and it cannot change its commands
        _open_pdb(frame)


def _open_pdb(frame: FrameType) -> None:
    """pdb at ``frame`` of workflow code, stepping through workflow code only.

    pdb stops at the next trace event in workflow code: this frame suspending at its ``await`` (shown as
    "--Return--" on the calling line); ``n`` then steps on with the recorded result.
    """
    import pdb

    class WorkflowPdb(pdb.Pdb):
        def stop_here(self, frame: FrameType) -> bool:
            return _steppable(frame) and bool(super().stop_here(frame))

    WorkflowPdb().set_trace(frame)


def _steppable(frame: FrameType | None) -> bool:
    """Whether a debugger stepping through a replay should stop in ``frame``: workflow code, and the standard
    library when workflow code called it; never Durable, asyncio, or what they call (``typing`` resolving a
    step's result type, say: Bdb's ``skip`` patterns cannot express "called by")."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _is_user_file(filename):
            return False
        if not filename.startswith("<") and not os.path.abspath(filename).startswith(_STDLIB_DIRS):
            return True
        frame = frame.f_back
    return False


@contextmanager
def _breakpoints_stop_in_workflow_code(hits: list[FrameType]) -> Iterator[None]:
    """While replaying, ``breakpoint()`` in workflow code opens pdb at the workflow's line (with the determinism
    guards suspended while pdb starts); ``hits`` collects the frames. Only the default hook is replaced: a hook
    set by the user (or a test) is left as it is."""
    original = sys.breakpointhook
    if original is not sys.__breakpointhook__:
        yield
        return

    def hook(*args: Any, **kwargs: Any) -> Any:
        setting = os.environ.get("PYTHONBREAKPOINT", "")
        if setting == "0":
            return None
        frame = sys._getframe(1)
        hits.append(frame)
        with _guards_off():
            if setting in ("", "pdb.set_trace"):
                return _open_pdb(frame)
            return original(*args, **kwargs)  # another debugger, named by PYTHONBREAKPOINT

    sys.breakpointhook = hook
    try:
        yield
    finally:
        sys.breakpointhook = original


def _events_of(history: History) -> tuple[Sequence[RecordedEvent], str | None]:
    if isinstance(history, HistoryDocument):
        return history.events, None
    if isinstance(history, (str, os.PathLike)):
        return load_history(history).events, str(history)
    events = list(history)
    if not events:
        raise HistoryFileError("the history is empty: it needs at least its run_started event")
    make_document(events)  # checks that it starts with run_started
    return events, None


def _definition(workflow: WorkflowRef, name: str) -> Workflow:
    if isinstance(workflow, Workflow):
        if workflow.name != name:
            raise ValueError(
                f"the history is of workflow {name!r}, but the code given is workflow {workflow.name!r}: pass "
                f"the workflow named {name!r} (or a plain async function, taken as it)"
            )
        return workflow
    if callable(workflow) and not isinstance(workflow, Mapping):
        return Workflow(workflow, name=name)
    if workflow is None:
        known = registered_workflows()
    elif isinstance(workflow, Mapping):
        known = dict(workflow)
    else:
        known = {w.name: w for w in workflow}
    found = known.get(name)
    if found is None:
        raise unknown_workflow(name, set(known))
    return found


# -- results ----------------------------------------------------------------------------------------------------


def _result(
    instance: _ReplayInstance,
    events: Sequence[RecordedEvent],
    cut: Sequence[RecordedEvent],
    source: str | None,
    divergence: NonDeterminismError | None,
    until: int | None,
    break_at: str | None,
) -> ReplayResult:
    last = cut[-1]
    recorded_end = last if isinstance(last.event, _END_EVENTS) else None
    outcome = instance.outcome if divergence is None else None
    matches, mismatch = (None, None)
    if divergence is None and recorded_end is not None:
        matches, mismatch = _compare(outcome, recorded_end)
    waiting = [] if divergence is not None else _waiting_for(instance)
    # The variables where the code waits: asked for with until; and the place to show when a divergence is
    # something the code did *not* issue (it waits elsewhere, or returned early).
    wants_frames = until is not None if divergence is None else divergence.location is None
    frames = _frames(instance) if wants_frames else []
    return ReplayResult(
        run_id=instance.run_id,
        workflow=instance.workflow_name,
        source=source,
        events=len(cut),
        total_events=len(events),
        commands=_matched_commands(cut, divergence),
        divergence=divergence,
        outcome=outcome,
        recorded_end=recorded_end,
        matches_recorded=matches,
        mismatch=mismatch,
        waiting_for=waiting,
        until=until,
        frames=frames,
        break_at=break_at,
        break_hits=instance.break_hits,
    )


def _compare(outcome: Outcome | None, end: RecordedEvent) -> tuple[bool | None, str | None]:
    event = end.event
    if isinstance(event, (RunCancelled, RunContinued)):
        return None, None  # cancelled from outside, or continued as a new run: no outcome to compare
    if outcome is None:  # pragma: no cover - the instance reports this case as a divergence
        return False, "the workflow is still waiting where the run ended"
    if isinstance(event, RunCompleted):
        if outcome.result is None:
            assert outcome.error is not None
            return False, (f"the run completed with {_short(event.result)} (event {end.seq}), but the code now "
                           f"raises {outcome.error.type}: {outcome.error.message}")
        if msgspec.json.decode(outcome.result) != msgspec.json.decode(event.result):
            return False, (f"the run completed with {_short(event.result)} (event {end.seq}), but the code now "
                           f"returns {_short(outcome.result)}")
        return True, None
    assert isinstance(event, RunFailed)
    if outcome.cancelled is not None and outcome.timed_out:  # the run's deadline passed: it failed, timed out
        if event.error.type.endswith("WorkflowTimeout"):
            return True, None
        return False, (f"the run failed with {event.error.type}: {event.error.message} (event {end.seq}), but the "
                       f"code now times out")
    if outcome.error is None:
        return False, (f"the run failed with {event.error.type}: {event.error.message} (event {end.seq}), but the "
                       f"code now returns {_short(outcome.result)}")
    recorded_type = canonical_error_type(event.error.type)  # older histories name Durable's errors by module path
    if (outcome.error.type, outcome.error.message) != (recorded_type, event.error.message):
        return False, (f"the run failed with {event.error.type}: {event.error.message} (event {end.seq}), but the "
                       f"code now raises {outcome.error.type}: {outcome.error.message}")
    return True, None


def _matched_commands(cut: Sequence[RecordedEvent], divergence: NonDeterminismError | None) -> list[str]:
    """The recorded commands the code re-issued: all of them, or those it issued before the divergent one
    (commands are numbered in call order, so "before" is a smaller command id, whatever order they ended in)."""
    limit: int | None = None
    limit_seq: int | None = None
    if divergence is not None and divergence.seq is not None:
        limit_seq = divergence.seq
        for rec in cut:
            if rec.seq == divergence.seq:
                limit = getattr(rec.event, "command_id", None)
                break
    described = []
    for rec in cut:
        event = rec.event
        if not isinstance(event, _COMMAND_EVENTS):
            continue
        if limit_seq is not None:
            command_id = getattr(event, "command_id", None)
            if limit is not None and command_id is not None:
                if command_id >= limit:
                    continue
            elif rec.seq >= limit_seq:
                continue
        described.append(f"event {rec.seq}: {describe_command(event)}")
    return described


def describe_command(event: Any) -> str:
    """A recorded command in one short line: ``#3 step charge(["A-1", 42.5])``, ``#4 timer 1s``, …"""
    if isinstance(event, StepScheduled):
        return f"#{event.command_id} step {event.name}({_short(event.args)[1:-1]})"
    if isinstance(event, TimerStarted):
        length = f"until {event.fire_at.isoformat()}" if event.seconds is None else f"{event.seconds:g}s"
        return f"#{event.command_id} timer {length}"
    if isinstance(event, ValueRecorded):
        return f"#{event.command_id} ctx.{event.kind}() = {_short(event.value)}"
    if isinstance(event, PatchMarked):
        return f"patch {event.patch_id!r} taken"
    if isinstance(event, EventWaitStarted):
        return f"#{event.command_id} wait for event {event.name!r}"
    if isinstance(event, InputRequested):
        return f"#{event.command_id} wait for input {event.key!r}"
    if isinstance(event, ChildStarted):
        return f"#{event.command_id} child run {event.child_id} of {event.workflow}"
    return str(event.__struct_config__.tag)


def _waiting_for(instance: WorkflowInstance) -> list[str]:
    if instance.outcome is not None:
        return []
    waiting = [
        f"#{step.command_id} step {step.name}({_short(step.args_raw)[1:-1]})" for step in instance.take_new_steps()
    ]
    for cid, fire_at in sorted(instance.pending_timers.items()):
        waiting.append(f"#{cid} timer until {fire_at.isoformat()}")
    return waiting


def _short(raw: msgspec.Raw | bytes | None, limit: int = 80) -> str:
    if raw is None:
        return "null"
    text = " ".join(bytes(raw).decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- frames -----------------------------------------------------------------------------------------------------


def _is_user_file(filename: str) -> bool:
    """Workflow code: anything but Durable's packages and asyncio (``durable._demo`` is workflow code too)."""
    path = os.path.abspath(filename)
    if path.startswith(_OWN_DIRS):
        return path == _DEMO_FILE
    return not path.startswith(_ASYNCIO_DIR)


def _user_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost frame of workflow code (not Durable's, not asyncio's) at or above ``frame``."""
    while frame is not None and not _is_user_file(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


def _frames(instance: WorkflowInstance) -> list[FrameLocals]:
    """The workflow's suspended coroutine chain: the workflow function, then any ``async def`` it awaits."""
    task = instance.main_task
    if task.done():
        return []
    found = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None)
        if frame is None:
            break
        if _is_user_file(frame.f_code.co_filename):
            found.append(
                FrameLocals(
                    function=frame.f_code.co_qualname,
                    location=f"{frame.f_code.co_filename}:{frame.f_lineno}",
                    locals=dict(frame.f_locals),
                )
            )
        awaited = getattr(awaited, "cr_await", None)
    return found


# -- many histories: the deploy guard -------------------------------------------------------------------------------


def check_histories(folder: str | os.PathLike[str], workflows: WorkflowRef = None) -> list[ReplayResult]:
    """Replay every history in ``folder`` (``*.json``, ``*.jsonl``) against ``workflows`` (default: every
    registered workflow); one result per run, in file order. Raises ``HistoryFileError`` for a bad file."""
    results = []
    for where, document in iter_histories(folder):
        result = replay(workflows, document)
        results.append(_with_source(result, where))
    return results


def assert_histories_replay(folder: str | os.PathLike[str], workflows: WorkflowRef = None) -> list[ReplayResult]:
    """Fail (``AssertionError`` with every report) unless each history in ``folder`` replays against the code.

    Also fails when the folder holds no history, so a misplaced folder cannot pass silently.
    """
    results = check_histories(folder, workflows)
    if not results:
        raise AssertionError(f"no history files (*.json, *.jsonl) in {Path(folder)}: nothing was checked")
    failed = [r for r in results if not r.ok]
    if failed:
        reports = "\n\n".join(r.report() for r in failed)
        raise AssertionError(f"{len(failed)} of {len(results)} histories no longer replay:\n\n{reports}")
    return results


def _with_source(result: ReplayResult, where: str) -> ReplayResult:
    return replace(result, source=where)
