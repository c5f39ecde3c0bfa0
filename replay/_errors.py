"""Errors raised while replaying a workflow against its history."""

from __future__ import annotations

from typing import Any

from history import DurableError, ErrorInfo


class NonDeterminismError(DurableError):
    """The workflow code issued a command that does not match the recorded history.

    Attributes:
        run_id: the run whose replay diverged.
        seq: the number of the recorded event that does not match (or ``None`` when the code issued a command
            past anything recorded that the history contradicts).
        recorded: a description of what the history recorded there.
        issued: a description of what the code issued now.
        location: ``file:line`` of the workflow code that issued the command, when known.
        hint: the most likely cause and what to do.
    """

    def __init__(
        self,
        run_id: str,
        seq: int | None,
        recorded: str,
        issued: str,
        location: str | None = None,
        hint: str = "",
    ) -> None:
        self.run_id = run_id
        self.seq = seq
        self.recorded = recorded
        self.issued = issued
        self.location = location
        self.hint = hint
        where = f" at event {seq}" if seq is not None else ""
        lines = [
            f"run {run_id!r} diverged from its history{where}:",
            f"  history recorded: {recorded}",
            f"  code issued now:  {issued}" + (f"  ({location})" if location else ""),
        ]
        if hint:
            lines.append(f"  hint: {hint}")
        lines.append(
            "  The run was left untouched. Deploy code that issues the recorded commands (guard new behaviour "
            "with ctx.patched(...)), and the run resumes."
        )
        super().__init__("\n".join(lines))


class WorkflowCodeError(DurableError):
    """Workflow code used something that would make replay non-deterministic (a thread, real I/O, ...)."""


class WaitTimeout(DurableError, TimeoutError):
    """``ctx.wait_for_event``/``ctx.wait_for_input`` ran out of time (pass ``default=``/``timeout_value=`` to get a
    value instead)."""


class ChildWorkflowFailed(DurableError):
    """A child run awaited with ``ctx.call_workflow`` failed or was cancelled.

    Attributes:
        child_id: the child run's id.
        status: ``failed`` or ``cancelled``.
        error_type, error_message, remote_traceback: the child's recorded error.
    """

    def __init__(self, child_id: str, status: str, error: ErrorInfo | None) -> None:
        self.child_id = child_id
        self.status = status
        self.error_type = error.type if error else status
        self.error_message = error.message if error else ""
        self.remote_traceback = error.traceback if error else ""
        detail = f": {self.error_type}: {self.error_message}" if error else ""
        super().__init__(f"child run {child_id!r} {status}{detail}")


class ContinueAsNew(BaseException):
    """Raised by ``ctx.continue_as_new``: ends this run and starts the next with ``input`` (JSON)."""

    def __init__(self, input: Any) -> None:
        super().__init__("continue as new")
        self.input = input
