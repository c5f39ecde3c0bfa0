"""``Engine``: the client API (start, inspect, list, cancel, await results), with an optional in-process worker."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from history import (
    CANCELLED,
    CONTINUED,
    FAILED,
    ErrorInfo,
    LogLine,
    NewRun,
    RunNotFound,
    RunRecord,
    Store,
    decode_payload,
    open_store,
)

from ._definitions import Workflow, encode_input, registered_workflows, resolve_workflow, unknown_workflow
from ._engine_world import WorldClient
from ._execution import Execution, ExecutionPage, execution_from
from ._ids import new_run_id
from ._logs import LogLimits, check_log_query, read_all_logs, with_logs
from ._metrics import MetricsClient
from ._queues import Queues
from ._retention import Retention, RetentionClient
from ._start_batch import StartBatcher
from ._subscribe import SubscribeClient
from ._telemetry import Telemetry
from ._worker import Worker, check_queues
from .errors import DurableError, ResultTimeout, WorkflowCancelled, WorkflowFailed

if TYPE_CHECKING:
    from ._telemetry import MeterProvider, TracerProvider

log = logging.getLogger("durable")

_RESULT_POLL = 1.0
"""Fallback poll while awaiting a result: a finish notification usually arrives first (same process, or
Postgres NOTIFY); this bounds the wait when it cannot (another process on SQLite)."""
_START_BATCH = 1000  # runs per store.create_runs call of start_many (one transaction each)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _start_time(now: datetime, delay: timedelta | float | None, scheduled_at: datetime | None) -> datetime | None:
    """When a new run may first start: after ``delay``, or at ``scheduled_at`` (not both)."""
    if delay is not None and scheduled_at is not None:
        raise ValueError("give delay= or scheduled_at=, not both")
    if scheduled_at is not None:
        if scheduled_at.tzinfo is None:
            raise ValueError(f"scheduled_at must be timezone-aware, got naive {scheduled_at!r}")
        return scheduled_at
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds < 0:
        raise ValueError(f"delay must be >= 0, got {seconds} seconds")
    return now + timedelta(seconds=seconds)


def _check_name(what: str, value: Any) -> None:
    """Refuse an id, key or name that is not a non-empty string, or holds a NUL character (PostgreSQL cannot
    store one in text, and SQLite would: the same start must not work on one database and fail on the other)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError(f"{what} must be a non-empty string without NUL characters, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no database can store it as text
        raise ValueError(f"{what} must be valid Unicode text (no lone surrogates), got {value!r}") from None


def _check_placement(queue: str, priority: int) -> None:
    """Refuse a queue that is not a non-empty string and a priority that is not an int."""
    _check_name("queue", queue)
    if not isinstance(priority, int):
        raise TypeError(f"priority must be an int (higher runs first), got {priority!r}")


class RunHandle:
    """A started run: its id, and ways to wait for it, inspect it or cancel it.

    ``created`` is False when ``start`` found an existing run with the same ``workflow_id`` and returned it.
    """

    def __init__(self, engine: Engine, run_id: str, workflow: str, created: bool = True) -> None:
        self.engine = engine
        self.id = run_id
        self.workflow = workflow
        self.created = created

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to finish and return its result.

        Raises:
            WorkflowFailed: the workflow raised (its error type, message and traceback are attached).
            WorkflowCancelled: the run was cancelled.
            ResultTimeout: ``timeout`` seconds passed first (the run goes on).
        """
        return await self.engine.result(self.id, timeout=timeout)

    async def execution(self, include_steps: bool = False) -> Execution:
        """The run's current state."""
        return await self.engine.get_execution(self.id, include_steps=include_steps)

    async def cancel(self, reason: str = "cancelled") -> Execution:
        """Cancel the run."""
        return await self.engine.cancel(self.id, reason=reason)

    def __repr__(self) -> str:
        return f"<RunHandle {self.workflow} {self.id}>"


class Engine(WorldClient, MetricsClient, RetentionClient, SubscribeClient):
    """Start and inspect workflow runs; by default also execute them with an in-process worker.

    Args:
        url: database URL (``postgresql://…``, ``sqlite:///file.db``, ``memory://``); default
            ``DURABLE_DATABASE_URL``, else ``sqlite:///durable.db``.
        worker: run a worker inside this process (``False``: a pure client).
        workflows: the workflows the in-process worker serves (default: every ``@durable.workflow`` imported).
        concurrency, lease_seconds, horizon, poll_interval: the worker's settings (see ``durable.Worker``).
        store: an already constructed store (e.g. a ``MemoryStore`` with a virtual clock), instead of ``url``.
        clock: what "now" is for the worker, ``ctx.now()`` and ``start(delay=...)`` (default: the UTC wall clock);
            give a store with a virtual clock the same one (``durable.testing`` does).
        capture_logs, log_limits: the in-process worker's log capture (see ``durable.Worker``).
        retention: delete old finished runs periodically in the in-process worker (see ``durable.Retention``).
        tracer_provider, meter_provider: OpenTelemetry providers for spans and metrics, of this engine (the trace
            context stored with the runs it starts, ``durable.runs.started``) and of its worker (default: the
            global ones; see docs/observability-tracing.md).
        create_schema: ``False`` refuses to open a database ``url`` that has no Durable schema, rather than create
            one (``SchemaError``; a missing SQLite file: ``DatabaseUnavailable``). For tools that only look at runs
            a worker made, so that a wrong URL is reported instead of leaving empty tables behind.

    Use it as ``async with Engine(...) as engine:``, or call ``await engine.open()`` and ``await engine.close()``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        worker: bool = True,
        workflows: list[Workflow] | None = None,
        concurrency: int = 100,
        queues: dict[str, int] | None = None,
        lease_seconds: float = 30.0,
        horizon: float = 5.0,
        poll_interval: float = 2.0,
        store: Store | None = None,
        clock: Callable[[], datetime] | None = None,
        capture_logs: bool = True,
        log_limits: LogLimits | None = None,
        retention: Retention | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        create_schema: bool = True,
    ) -> None:
        if retention is not None and not worker:
            raise ValueError("retention= runs in the in-process worker: give worker=True, or use `durable worker`")
        self.store: Store = store if store is not None else open_store(url, create_schema=create_schema)
        self._run_worker = worker
        self._workflows = workflows
        self._clock = clock or _utcnow
        self._worker_options: dict[str, Any] = dict(
            concurrency=concurrency,
            queues=check_queues(queues),
            lease_seconds=lease_seconds,
            horizon=horizon,
            poll_interval=poll_interval,
            capture_logs=capture_logs,
            log_limits=log_limits,
            retention=retention,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        self._telemetry = Telemetry(tracer_provider, meter_provider)
        self._starts = StartBatcher(self.store)
        self.queues = Queues(self.store)
        """Pause, resume, limit and inspect queues: ``await engine.queues.pause("ai")``."""
        if clock is not None:
            self._worker_options["clock"] = clock
        self.worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._opened = False

    @property
    def url(self) -> str:
        """The database URL (without password)."""
        return self.store.url

    async def open(self) -> Engine:
        """Connect, create or upgrade the schema, and start the in-process worker (if enabled)."""
        if self._opened:
            return self
        await self.store.open()
        self._opened = True
        self._telemetry = Telemetry(
            self._worker_options["tracer_provider"], self._worker_options["meter_provider"]
        )  # decided once per open: providers set up by now count
        if self._run_worker:
            self.worker = Worker(self.store, self._served(), **self._worker_options)
            self._worker_task = asyncio.get_running_loop().create_task(self.worker.run())
        return self

    async def close(self, grace: float = 10.0) -> None:
        """Stop the in-process worker (finishing in-flight steps for up to ``grace`` s) and disconnect."""
        if not self._opened:
            return
        await self._starts.close()
        if self.worker is not None and self._worker_task is not None:
            await self.worker.shutdown(grace)
            await self._worker_task
        await self.store.close()
        self._opened = False

    async def __aenter__(self) -> Engine:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _served(self) -> dict[str, Workflow]:
        if self._workflows is not None:
            return {wf.name: wf for wf in self._workflows}
        return registered_workflows()

    def _require_open(self) -> None:
        if not self._opened:
            raise DurableError(
                "the engine is not open: use `async with Engine(...) as engine:` or `await engine.open()`"
            )

    # -- starting ------------------------------------------------------------------------------------------

    async def start(
        self,
        workflow: Workflow | str,
        *args: Any,
        workflow_id: str | None = None,
        queue: str = "default",
        priority: int = 0,
        delay: timedelta | float | None = None,
        scheduled_at: datetime | None = None,
        dedup_key: str | None = None,
    ) -> RunHandle:
        """Start a run of ``workflow`` with ``args`` as its input (after ``ctx``).

        ``workflow_id`` is an idempotency key: if a run with that id exists, it is returned
        (``handle.created`` is False) and no second run starts. ``dedup_key`` does the same while a run with that
        key is unfinished (its key is free again once it finishes). The run is placed on ``queue`` (workers
        serve named queues, each with its own concurrency) with ``priority`` (higher first; FIFO within a
        priority). ``delay`` or ``scheduled_at`` postpone its first execution.
        """
        self._require_open()
        name, definition = await self._resolve(workflow)
        if workflow_id is not None:
            _check_name("workflow_id", workflow_id)
        wake_at = _start_time(self._clock(), delay, scheduled_at)
        if dedup_key is not None:
            _check_name("dedup_key", dedup_key)
        _check_placement(queue, priority)
        new = self._new_run(name, definition, args, queue, priority, wake_at, workflow_id, dedup_key)
        run, created = await self._starts.create(new)  # shares a commit with concurrent starts
        if created:
            self._telemetry.runs_created(name, 1)
        if not created and dedup_key is not None and run.id != new.id:
            return RunHandle(self, run.id, run.workflow, created=False)  # a live run holds the dedup key
        if not created and run.workflow != name:
            raise DurableError(
                f"workflow_id {run.id!r} is already used by a run of workflow {run.workflow!r}, not {name!r}: "
                f"choose another id"
            )
        return RunHandle(self, run.id, run.workflow, created)

    async def start_many(
        self,
        workflow: Workflow | str,
        inputs: Iterable[tuple[Any, ...]],
        *,
        queue: str = "default",
        priority: int = 0,
        delay: timedelta | float | None = None,
        scheduled_at: datetime | None = None,
    ) -> list[RunHandle]:
        """Start one run of ``workflow`` per tuple in ``inputs`` (each the ``args`` that ``start`` takes) and
        return their handles in the same order; every run gets a fresh id, ``queue``, ``priority`` and start time.

        Much faster than as many ``start`` calls when there are many runs: they are created up to 1,000 per
        database transaction (one round trip on PostgreSQL), and workers are woken once per batch. Every input
        is checked first: a bad one raises (``TypeError``, or the encoding error) before any run is created. The
        batches commit one after the other, so an error of the database part way leaves the earlier ones started.
        """
        self._require_open()
        name, definition = await self._resolve(workflow)
        wake_at = _start_time(self._clock(), delay, scheduled_at)
        _check_placement(queue, priority)
        news: list[NewRun] = []
        for args in inputs:
            if not isinstance(args, tuple):
                raise TypeError(f"each input of start_many is a tuple of the workflow's arguments, got {args!r}")
            news.append(self._new_run(name, definition, args, queue, priority, wake_at))
        handles: list[RunHandle] = []
        for at in range(0, len(news), _START_BATCH):
            created = await self.store.create_runs(news[at : at + _START_BATCH])
            handles += [RunHandle(self, run.id, run.workflow, fresh) for run, fresh in created]
            self._telemetry.runs_created(name, sum(fresh for _, fresh in created))
        return handles

    async def _resolve(self, workflow: Workflow | str) -> tuple[str, Workflow | None]:
        """The workflow's name and, when this process defines it, its definition; raises for an unknown name."""
        definition = resolve_workflow(workflow, self._served())
        if isinstance(definition, Workflow):
            return definition.name, definition
        known = await self.store.known_workflows()
        if definition not in known:
            raise unknown_workflow(definition, known | set(self._served()))
        return definition, None

    def _new_run(
        self,
        name: str,
        definition: Workflow | None,
        args: tuple[Any, ...],
        queue: str,
        priority: int,
        wake_at: datetime | None,
        workflow_id: str | None = None,
        dedup_key: str | None = None,
    ) -> NewRun:
        """The ``NewRun`` of a start, its arguments checked against the definition (when known) and encoded."""
        if definition is not None:
            definition.check_arguments(args)
        timeout = None if definition is None else definition.timeout
        run_id = workflow_id or new_run_id()
        return NewRun(
            id=run_id,
            workflow=name,
            input=encode_input(args, name),
            random_seed=random.getrandbits(63),
            queue=queue,
            priority=priority,
            wake_at=wake_at,
            deadline=None if timeout is None else self._clock() + timedelta(seconds=timeout),
            dedup_key=dedup_key,
            trace_context=self._telemetry.start_context(name, run_id, queue),
        )

    def get_handle(self, run_id: str, workflow: str = "") -> RunHandle:
        """A handle for an existing run id (no database access)."""
        return RunHandle(self, run_id, workflow, created=False)

    # -- reading -------------------------------------------------------------------------------------------

    async def _get_run(self, run_id: str) -> RunRecord:
        self._require_open()
        run = await self.store.get_run(run_id)
        if run is None:
            raise RunNotFound(f"no run with id {run_id!r} in {self.url}: check the id with `durable list`")
        return run

    async def get_execution(self, run_id: str, include_steps: bool = False, include_logs: bool = False) -> Execution:
        """The run's state; with ``include_steps``, one ``StepView`` per step call (read from its history); with
        ``include_logs``, every captured log line in ``logs`` (and each step's in its ``StepView.logs``)."""
        run = await self._get_run(run_id)
        history = await self.store.read_history(run_id) if include_steps else None
        children = await self.store.list_children(run_id)
        execution = execution_from(run, history, children=[child.id for child in children])
        if include_logs:
            execution = with_logs(execution, await read_all_logs(self.store, run_id))
        return execution

    async def get_logs(
        self,
        run_id: str,
        *,
        step: str | None = None,
        attempt: int | None = None,
        level: str | int | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[LogLine]:
        """The log lines captured for a run (step bodies' ``logging`` and ``print``, the workflow's ``ctx.logger``),
        oldest first.

        Args:
            run_id: the run.
            step: only the lines of steps of this name.
            attempt: only the lines of this attempt number.
            level: the lowest level, as a name (``"warning"``) or a number (printed lines are INFO on stdout and
                WARNING on stderr).
            after_id: only lines after this ``LogLine.id`` (read on from the last line seen).
            limit: at most this many lines (1-10,000).

        Raises:
            RunNotFound: no run has this id.
            ValueError: an unknown level, or a limit, attempt or ``after_id`` out of range.
        """
        self._require_open()
        min_level = check_log_query(step, attempt, level, after_id, limit)
        lines = await self.store.read_logs(
            run_id, step=step, attempt=attempt, min_level=min_level, after_id=after_id, limit=limit
        )
        if not lines:  # one round trip when there are lines; without, tell an unknown run from a quiet one
            await self._get_run(run_id)
        return lines

    async def get_history(self, run_id: str) -> list[Any]:
        """The run's recorded events, in order (``history.RecordedEvent``)."""
        await self._get_run(run_id)
        return await self.store.read_history(run_id)

    async def list_executions(
        self,
        *,
        workflow: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        current_step: str | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
        queue: str | None = None,
        parent_id: str | None = None,
        search: str | None = None,
        order_by: str = "-created_at",
    ) -> ExecutionPage:
        """Runs that match every filter given, a page at a time (keyset pagination: stable under inserts).

        Args:
            workflow: the workflow name.
            status: one status or several (``"failed"``, ``["pending", "running"]``).
            limit: runs per page, 1 to 1000.
            cursor: the ``next_cursor`` of the previous page (listed with the same ``order_by``).
            current_step: runs doing this now: a step name (also one of several parallel steps), or a wait such
                as ``"sleep"``, ``"event:<name>"``, ``"input:<key>"`` (see ``Execution.current_step``).
            started_after: runs started with ``start()`` at or after this aware datetime (their ``created_at``,
                so runs no worker has picked up yet are found too).
            started_before: runs started before this aware datetime.
            queue: the queue name.
            parent_id: children of this run.
            search: a prefix of the run id or of its dedup key (case-sensitive), e.g. a pasted id or an order
                number used as dedup key.
            order_by: ``created_at``, ``started_at`` (first picked up by a worker), ``finished_at`` or
                ``updated_at``; prefix ``-`` for newest first (the default is ``-created_at``). Runs without that
                time (not yet started, not finished) are left out of that order.

        Raises:
            ValueError: an unknown status or order, a limit out of range, a naive datetime, or a cursor that
                is malformed or belongs to another order.
        """
        self._require_open()
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValueError(f"limit must be an integer between 1 and 1000, got {limit!r}")
        page = await self.store.list_runs(
            workflow=workflow, status=status, limit=limit, cursor=cursor, current_step=current_step,
            started_after=started_after, started_before=started_before, queue=queue, parent_id=parent_id,
            search=search, order_by=order_by,
        )  # fmt: skip
        return ExecutionPage(items=[execution_from(run) for run in page.runs], next_cursor=page.next_cursor)

    # -- acting --------------------------------------------------------------------------------------------

    async def cancel(self, run_id: str, reason: str = "cancelled") -> Execution:
        """Cancel a run: it ends ``cancelled`` with ``reason`` (at once if this process drives it, else at the
        driving worker's next heartbeat, or when a waiting run is picked up). A finished run is unchanged."""
        self._require_open()
        try:
            run = await self.store.request_cancel(run_id, reason)
        except RunNotFound:
            raise RunNotFound(f"no run with id {run_id!r} in {self.url}: check the id with `durable list`") from None
        if self.worker is not None:
            self.worker.cancel_local(run_id, reason)
        return execution_from(run)

    async def result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait for ``run_id`` to finish; see ``RunHandle.result``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = await self._get_run(run_id)
            if run.status == CONTINUED and run.result is not None:
                run_id = decode_payload(run.result)["continued_as"]  # follow the chain to its last run
                continue
            if run.finished:
                return self._outcome(run)
            remaining = _RESULT_POLL if deadline is None else min(_RESULT_POLL, deadline - time.monotonic())
            if remaining <= 0:
                raise ResultTimeout(
                    f"run {run_id!r} did not finish within {timeout}s (status {run.status}); it goes on: "
                    f"wait again, or inspect it with `durable show {run_id}`"
                )
            await self.store.hub.wait_finished(run_id, remaining)

    def _outcome(self, run: RunRecord) -> Any:
        if run.status == FAILED:
            raise WorkflowFailed(run.id, run.error or ErrorInfo(type="unknown", message="no error recorded"))
        if run.status == CANCELLED:
            raise WorkflowCancelled(run.id, run.cancel_reason or "cancelled")
        assert run.result is not None
        definition = self._served().get(run.workflow)
        if definition is not None:
            return definition.decode_result(run.result)
        return decode_payload(run.result)
