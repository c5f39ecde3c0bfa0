"""Plain records exchanged with a store: a run's row, a new run, an append, a claim, a log line."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from ._events import CarriedMessage, ErrorInfo, Event, RecordedEvent, RunStarted


class Unset:
    """The type of ``UNSET``: "leave this setting as it is" (``None`` means "no limit")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()

PENDING = "pending"
RUNNING = "running"
WAITING = "waiting"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
CONTINUED = "continued"
"""The run called ``ctx.continue_as_new``: its ``result`` names the run that carries on."""

STATUSES = (PENDING, RUNNING, WAITING, COMPLETED, FAILED, CANCELLED, CONTINUED)
FINISHED_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED, CONTINUED})
"""A run in one of these has a terminal event; it is never claimed again."""


class RunRecord(msgspec.Struct, frozen=True):
    """A run's row: its current state, derived from (and updated with) its history.

    ``result`` is the raw JSON of the workflow's return value. ``blocked`` holds the report of a
    ``NonDeterminismError`` while the run waits for fixed code; ``cancel_reason`` a pending cancellation.
    """

    id: str
    workflow: str
    status: str
    input: bytes
    created_at: datetime
    updated_at: datetime
    next_seq: int
    lease_epoch: int = 0
    queue: str = "default"
    priority: int = 0
    result: bytes | None = None
    error: ErrorInfo | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wake_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    cancel_reason: str | None = None
    blocked: str | None = None
    parent_id: str | None = None
    state: bytes | None = None
    """JSON object the workflow published with ``ctx.set_state`` (the latest value of every key)."""
    continued_from: str | None = None
    """The run this one continues (``ctx.continue_as_new``)."""
    dedup_key: str | None = None
    """While this run is unfinished, starting another with the same key returns this run."""
    trace_context: str | None = None
    """The W3C trace context the run's spans descend from (``traceparent``, then ``tracestate`` after a newline
    when there is one): its starter's span, or its parent run's. Opaque to the store."""
    current_step: str | None = None
    """What the run is doing, as of its last append: the names of its steps in flight, comma-separated (in call
    order), else what it waits for (``event:<name>``, ``input:<key>``, ``child:<run id>``, ``sleep``); ``None``
    once finished (and before its first append)."""

    @property
    def finished(self) -> bool:
        """True once the run has completed, failed or been cancelled."""
        return self.status in FINISHED_STATUSES


class NewRun(msgspec.Struct, frozen=True):
    """What ``Store.create_run`` needs; its ``RunStarted`` event becomes event 1 of the history."""

    id: str
    workflow: str
    input: msgspec.Raw
    random_seed: int
    queue: str = "default"
    priority: int = 0
    parent_id: str | None = None
    wake_at: datetime | None = None
    deadline: datetime | None = None
    continued_from: str | None = None
    carried: tuple[CarriedMessage, ...] = ()
    dedup_key: str | None = None
    trace_context: str | None = None
    """Stored in the run's row (not in its history): see ``RunRecord.trace_context``."""

    def started_event(self) -> RunStarted:
        """The ``RunStarted`` event (event 1) of the run this creates: every store writes exactly this."""
        return RunStarted(
            workflow=self.workflow,
            input=self.input,
            run_id=self.id,
            random_seed=self.random_seed,
            parent_id=self.parent_id,
            deadline=self.deadline,
            continued_from=self.continued_from,
            carried=self.carried,
        )


class Message(msgspec.Struct, frozen=True):
    """A message in a run's inbox, waiting for the run's worker to record it in the history.

    ``kind`` is ``"event"`` (``engine.send_event``: ``name`` is the event name), ``"input"``
    (``engine.provide_input``: ``name`` is the input key) or ``"child"`` (a child run finished: ``name`` is the
    child's id, ``payload`` the JSON ``{"status", "result", "error"}``). ``payload`` is JSON.
    """

    id: int
    run_id: str
    kind: str
    name: str
    payload: bytes
    sent_at: datetime


class PendingInput(msgspec.Struct, frozen=True):
    """A question a waiting run asks a person (``ctx.wait_for_input``): its key, prompt and schema (JSON)."""

    run_id: str
    key: str
    prompt: str
    spec: bytes
    created_at: datetime
    workflow: str = ""
    timeout_at: datetime | None = None


class Append(msgspec.Struct, frozen=True):
    """Events to add to one run's history, fenced by the lease epoch and the expected next sequence number.

    The run row is updated in the same commit: ``status`` (if not None), ``result``/``error`` (terminal runs),
    ``wake_at``, and when ``release`` is true the lease is given up so the run can be claimed again at
    ``wake_at`` (``None``: at once). ``at`` is the time stamped on every event of the batch.
    ``events`` may be empty (a pure status update or release).
    """

    run_id: str
    worker_id: str
    epoch: int
    first_seq: int
    events: Sequence[Event]
    at: datetime
    status: str | None = None
    result: bytes | None = None
    error: ErrorInfo | None = None
    wake_at: datetime | None = None
    release: bool = False
    consumed: Sequence[int] = ()
    """Inbox message ids this append records (they are marked consumed in the same commit)."""
    state: bytes | None = None
    """The run's published state (a JSON object) replacing the previous one; ``None`` leaves it."""
    open_inputs: Sequence[PendingInput] = ()
    """Inputs the run starts waiting for (listed by ``list_pending_inputs`` until closed or provided)."""
    close_inputs: Sequence[str] = ()
    """Keys of inputs the run no longer waits for (answered or timed out). A finished run closes all."""
    current_step: str | Unset | None = UNSET
    """The run's new ``current_step`` (``None`` clears it; ``UNSET`` leaves it). A finishing run's is cleared."""
    logs: Sequence[LogLine] = ()
    """Log lines captured since the last append (step attempts, ``ctx.logger``), written in the same commit."""


class LogLine(msgspec.Struct, frozen=True):
    """One captured log line of a run: a ``logging`` record or a line printed to stdout/stderr.

    ``step``, ``command_id`` and ``attempt`` name the step attempt that wrote it (all ``None`` for the workflow's
    own ``ctx.logger``). ``level`` is the ``logging`` level number (``level_name`` its name): a printed line is
    INFO on stdout and WARNING on stderr. ``stream`` is ``"log"``, ``"stdout"`` or ``"stderr"``. ``exc`` is the
    formatted traceback of a record logged with ``exc_info``; ``extra`` the JSON object of the record's extra
    fields. ``trace_id`` and ``span_id`` are the OpenTelemetry span that was current when the line was written
    (lowercase hex, 32 and 16 digits, as W3C ``traceparent`` prints them): the step attempt's span, or a span the
    step body made; the activation's ``durable.run`` span for ``ctx.logger``; ``None`` when the worker does not
    trace. ``id`` is assigned by the store (0 until written): lines of a run are ordered by it. Logs are not
    history: nothing replays them.
    """

    run_id: str
    at: datetime
    level: int
    level_name: str
    logger: str
    message: str
    stream: str = "log"
    step: str | None = None
    command_id: int | None = None
    attempt: int | None = None
    exc: str | None = None
    extra: bytes | None = None
    trace_id: str | None = None
    span_id: str | None = None
    id: int = 0


class Claim(msgspec.Struct, frozen=True):
    """A run this worker now leases (``run.lease_epoch`` is its fencing token), with its whole history."""

    run: RunRecord
    history: list[RecordedEvent]
    due_at: datetime | None = None
    """The time the claim ordered the run by (its ``wake_at`` before the claim, else its creation time); for
    metrics of how long runs wait to be claimed. ``None`` when the store does not tell."""


class Heartbeat(msgspec.Struct, frozen=True):
    """What a heartbeat learned: runs whose lease this worker lost, and cancellations requested since."""

    lost: frozenset[str]
    cancels: dict[str, str]
    messages: frozenset[str] = frozenset()
    """Held runs with unconsumed inbox messages (a worker driving them in memory must read their inbox)."""


class RunPage(msgspec.Struct, frozen=True):
    """One page of runs, newest first; pass ``next_cursor`` back to get the next page."""

    runs: list[RunRecord]
    next_cursor: str | None


class ChildOutcome(msgspec.Struct, frozen=True):
    """The payload of a ``"child"`` inbox message: how a child run ended."""

    status: str
    result: msgspec.Raw = msgspec.Raw(b"null")  # msgspec cannot decode ``Raw | None``: JSON null stands for none
    error: ErrorInfo | None = None


_child_encoder = msgspec.json.Encoder()


def child_outcome(child: RunRecord) -> bytes:
    """The JSON a store puts in the parent's inbox when ``child`` finishes (a ``ChildOutcome``)."""
    result = msgspec.Raw(child.result if child.result is not None else b"null")
    return _child_encoder.encode(ChildOutcome(status=child.status, result=result, error=child.error))


class QueueConfig(msgspec.Struct, frozen=True):
    """A queue's settings, shared by every worker (a queue nobody configured has the defaults).

    ``global_concurrency`` caps the runs of the queue leased at once across all workers; ``rate_limit`` caps
    the runs *started for the first time* in any window of ``rate_period`` seconds; a ``paused`` queue has no
    run claimed (runs already leased go on).
    """

    name: str
    paused: bool = False
    global_concurrency: int | None = None
    rate_limit: int | None = None
    rate_period: float | None = None


class QueueStats(msgspec.Struct, frozen=True):
    """A queue at one moment: ``running`` (leased), ``pending`` (ready now, not leased), ``scheduled`` (to start
    later: a delayed start), ``waiting`` (sleeping or waiting on the world), and the age in seconds of the oldest
    pending run."""

    name: str
    running: int
    pending: int
    scheduled: int
    waiting: int
    oldest_pending_age: float | None
    config: QueueConfig
