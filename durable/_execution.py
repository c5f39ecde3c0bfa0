"""Read models: what ``engine.get_execution`` and ``engine.list_executions`` return."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import msgspec

from history import (
    CONTINUED,
    ErrorInfo,
    RecordedEvent,
    RunRecord,
    StepCompleted,
    StepFailed,
    StepScheduled,
    decode_payload,
)


class StepView(msgspec.Struct, frozen=True):
    """One step call of a run, as its history tells it.

    ``status`` is ``completed``, ``failed`` (for good), or ``retrying`` (an attempt failed, another follows at
    ``retry_at``). ``duration_ms`` is the last attempt's; ``attempt`` its number.
    """

    command_id: int
    name: str
    status: str
    attempt: int
    duration_ms: float
    args: Any = None
    result: Any = None
    error: ErrorInfo | None = None
    retry_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Execution(msgspec.Struct, frozen=True):
    """A run as a user sees it: status, input, result or error, timing, and (on request) its steps."""

    id: str
    workflow: str
    status: str
    input: Any
    created_at: datetime
    updated_at: datetime
    history_length: int
    result: Any = None
    error: ErrorInfo | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wake_at: datetime | None = None
    cancel_reason: str | None = None
    blocked: str | None = None
    parent_id: str | None = None
    queue: str = "default"
    priority: int = 0
    worker: str | None = None
    steps: list[StepView] | None = None
    state: dict[str, Any] = msgspec.field(default_factory=dict)
    """What the workflow published with ``ctx.set_state`` (latest value per key), visible while it runs."""
    children: list[str] = msgspec.field(default_factory=list)
    """Ids of the child runs it started (``get_execution`` only; listings leave it empty)."""
    continued_from: str | None = None
    continued_as: str | None = None
    """For a run that called ``ctx.continue_as_new``: the run that carries on."""
    current_step: str | None = None
    """What the run does now, as of its last recorded event: the names of its steps in flight (comma-separated
    when several run in parallel), else what it waits for (``event:<name>``, ``input:<key>``, ``child:<run id>``,
    ``sleep``); ``None`` when finished, or before the run recorded anything (its first step's first attempt)."""

    @property
    def duration_ms(self) -> float | None:
        """Milliseconds from first start to finish, for finished runs."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000.0


class ExecutionPage(msgspec.Struct, frozen=True):
    """A page of executions, in the order asked (newest first by default). Iterate it; pass ``next_cursor`` as
    ``cursor=`` (with the same ``order_by``) for the next page; ``None``: this is the last."""

    items: list[Execution]
    next_cursor: str | None

    def __iter__(self) -> Iterator[Execution]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def execution_from(
    run: RunRecord, history: Sequence[RecordedEvent] | None = None, children: list[str] | None = None
) -> Execution:
    """Build an ``Execution`` from a run row and, when given, its history (for ``steps``) and children."""
    result = decode_payload(run.result) if run.result is not None else None
    continued_as = result.get("continued_as") if run.status == CONTINUED and isinstance(result, dict) else None
    return Execution(
        id=run.id,
        workflow=run.workflow,
        status=run.status,
        input=decode_payload(run.input),
        result=decode_payload(run.result) if run.result is not None else None,
        error=run.error,
        created_at=run.created_at,
        updated_at=run.updated_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        wake_at=run.wake_at,
        cancel_reason=run.cancel_reason,
        blocked=run.blocked,
        parent_id=run.parent_id,
        queue=run.queue,
        priority=run.priority,
        worker=run.lease_owner,
        history_length=run.next_seq - 1,
        steps=steps_from(history) if history is not None else None,
        state=decode_payload(run.state) if run.state is not None else {},
        children=children or [],
        continued_from=run.continued_from,
        continued_as=continued_as,
        current_step=run.current_step,
    )


def steps_from(history: Sequence[RecordedEvent]) -> list[StepView]:
    """Fold a history into one ``StepView`` per step call, in call order."""
    scheduled: dict[int, tuple[StepScheduled, datetime]] = {}
    latest: dict[int, StepView] = {}
    for rec in history:
        event = rec.event
        if isinstance(event, StepScheduled):
            scheduled[event.command_id] = (event, rec.at)
        elif isinstance(event, (StepCompleted, StepFailed)):
            sched = scheduled.get(event.command_id)
            previous = latest.get(event.command_id)
            args = decode_payload(sched[0].args) if sched else None
            started_at = previous.started_at if previous is not None else rec.at
            if isinstance(event, StepCompleted):
                view = StepView(event.command_id, event.name, "completed", event.attempt, event.duration_ms,
                                args=args, result=decode_payload(event.result), started_at=started_at,
                                finished_at=rec.at)
            else:
                status = "retrying" if event.retry_at is not None else "failed"
                view = StepView(event.command_id, event.name, status, event.attempt, event.duration_ms,
                                args=args, error=event.error, retry_at=event.retry_at, started_at=started_at,
                                finished_at=rec.at)
            latest[event.command_id] = view
    return [latest[cid] for cid in sorted(latest)]
