"""Errors raised while replaying a workflow against its history."""

from __future__ import annotations

from history import DurableError


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
