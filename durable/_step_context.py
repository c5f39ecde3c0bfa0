"""What a running step body can learn about itself (``durable.current_step()``)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class StepInfo:
    """The step attempt being executed: which run, which step, which attempt."""

    run_id: str
    workflow: str
    step: str
    command_id: int
    attempt: int


_CURRENT_STEP: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar("durable_step", default=None)


def current_step() -> StepInfo | None:
    """The step attempt whose body is running in this task or thread, or ``None`` outside step bodies."""
    return _CURRENT_STEP.get()
