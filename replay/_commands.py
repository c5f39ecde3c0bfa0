"""What a workflow instance asks its driver to do: run a step, arm a timer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import msgspec


class StepDefinition(Protocol):
    """What the instance needs of a step (``durable.step`` objects implement it)."""

    name: str

    def decode_result(self, raw: msgspec.Raw) -> Any:
        """Turn a recorded result back into the value the workflow receives."""


@dataclass(eq=False)
class StepRequest:
    """A step the workflow awaits and the history has no final outcome for: the driver runs it.

    ``attempt`` is the next attempt's number (1 plus the failed attempts recorded) and ``not_before`` the
    recorded retry time of the last failure; ``scheduled_recorded`` says whether ``StepScheduled`` is in the
    history already (it is written with the step's first outcome, in the same commit).
    """

    command_id: int
    name: str
    definition: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    args_raw: msgspec.Raw
    digest: str
    attempt: int = 1
    not_before: datetime | None = None
    scheduled_recorded: bool = False
    future: Any = field(default=None, repr=False)


@dataclass(eq=False)
class TimerRequest:
    """A durable timer the driver must fire at ``fire_at`` (by appending ``TimerFired``)."""

    command_id: int
    fire_at: datetime
