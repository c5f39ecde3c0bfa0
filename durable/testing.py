"""``durable.testing``: test workflows in milliseconds, on an in-memory engine whose clock is virtual.

::

    from durable.testing import TestEngine

    async def test_reminder_is_sent_after_two_days():
        async with TestEngine(workflows=[remind]) as engine:
            engine.fail_step("send_email", times=2, error=ConnectionError("smtp down"))
            result = await engine.run(remind, "ada@example.com")      # sleeps two days: returns at once
            assert engine.step_attempts["send_email"] == 3

* **Time skipping.** Whenever no run is being driven and no run is ready, the clock jumps to the next wake time
  (a timer, a retry delay, a delayed start) and the worker is woken: ``await ctx.sleep(timedelta(days=2))`` costs
  milliseconds, and ``ctx.now()`` reports the virtual time. ``auto_skip=False`` leaves the clock to you
  (``engine.clock.advance(...)``). Step bodies run in real time; the clock does not move while one runs.
* **Every wait replays.** The worker's horizon is 0, so each timer or retry releases the run and the next claim
  replays it from its history: a non-deterministic workflow fails its test (``RunBlocked``) instead of in
  production. The determinism guards (docs/determinism.md) are on as well.
* **Failures and mocks.** ``fail_step(name, times=n)`` makes the next ``n`` attempts of a step fail without running
  its body; ``mock_step(name, returns=...)`` replaces its body. Both are visible in the history exactly as real
  failures and results are.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from history import FAILED, PENDING, RUNNING, WAITING, MemoryStore, RecordedEvent, RunRecord

from ._definitions import Workflow
from ._driver import _NEVER
from ._engine import Engine, RunHandle
from ._step_context import StepInfo
from ._worker import Worker
from .errors import DurableError, ResultTimeout, RunNotFound, WorkflowFailed

__all__ = ["RunBlocked", "TestEngine", "VirtualClock"]

_LEASE_SECONDS = 10 * 365 * 24 * 3600.0
"""Leases outlast any clock jump a test makes while a run is driven, so a jump never looks like a crashed worker."""

_SKIP_POLL = 0.005
"""Real seconds between idle checks when no notification arrives (a driver finishing notifies nobody)."""

_BLOCKED_POLL = 0.02
"""Real seconds between checks for a blocked run while waiting for a result (blocking notifies nobody)."""

_MISSING: Any = object()


class RunBlocked(DurableError):
    """The run's replay diverged from its history (a ``NonDeterminismError``); the message is its report."""

    def __init__(self, run_id: str, report: str) -> None:
        super().__init__(f"run {run_id!r} is blocked: {report}")
        self.run_id = run_id
        self.report = report


class VirtualClock:
    """A clock that moves only when told to. Call it for the time (UTC, timezone-aware).

    Args:
        start: the initial time (default: the real time now).
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError(f"VirtualClock needs a timezone-aware start, got naive {start!r}")
        self._now = start if start is not None else datetime.now(UTC)
        self._listeners: list[Callable[[], None]] = []

    def __call__(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move the clock forward by ``delta`` (a timedelta or seconds); returns the new time."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError(f"a VirtualClock only moves forward, got {delta!r}")
        return self.advance_to(self._now + timedelta(seconds=seconds))

    def advance_to(self, when: datetime) -> datetime:
        """Move the clock to ``when`` (never backwards); returns the new time."""
        if when > self._now:
            self._now = when
            for listener in self._listeners:
                listener()
        return self._now

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every move (the test engine wakes its worker)."""
        self._listeners.append(listener)

    def __repr__(self) -> str:
        return f"<VirtualClock {self._now.isoformat()}>"


class _Failure:
    __slots__ = ("error", "remaining")

    def __init__(self, remaining: int, error: BaseException | type[BaseException] | None) -> None:
        self.remaining = remaining
        self.error = error


class TestEngine:
    """An in-memory ``durable.Engine`` on a ``VirtualClock``, with helpers for tests.

    Use it as ``async with TestEngine(workflows=[...]) as engine:``.

    Args:
        workflows: the workflows to serve (default: every ``@durable.workflow`` imported).
        start: the virtual clock's initial time (default: the real time now).
        auto_skip: jump the clock to the next wake time whenever everything is idle (settable later).
        timeout: default real-time limit, in seconds, of ``run``/``wait_completed``/``wait_failed``.
        concurrency: most runs driven at once.

    Attributes:
        clock: the ``VirtualClock`` (the store's, the worker's and ``ctx.now()``'s).
        engine: the underlying ``durable.Engine`` (every client method is there).
        store: the ``history.MemoryStore``.
        step_attempts: how many attempts of each step started, by step name (injected failures included).
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self,
        workflows: list[Workflow] | None = None,
        *,
        start: datetime | None = None,
        auto_skip: bool = True,
        timeout: float = 10.0,
        concurrency: int = 100,
    ) -> None:
        self.clock = VirtualClock(start)
        self.store = MemoryStore(clock=self.clock)
        self.engine = Engine(
            store=self.store,
            workflows=workflows,
            clock=self.clock,
            horizon=0.0,
            lease_seconds=_LEASE_SECONDS,
            poll_interval=0.05,
            concurrency=concurrency,
        )
        self.auto_skip = auto_skip
        self.timeout = timeout
        self.step_attempts: collections.Counter[str] = collections.Counter()
        self._failures: dict[str, _Failure] = {}
        self._mocks: dict[str, Callable[..., Any]] = {}
        self._skipper: asyncio.Task[None] | None = None
        self.clock.on_advance(self.store.hub.notify_work)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def open(self) -> TestEngine:
        """Start the engine, its worker and the time skipper."""
        await self.engine.open()
        self.worker.step_interceptor = self._intercept
        self._skipper = asyncio.get_running_loop().create_task(self._skip_time())
        return self

    async def close(self) -> None:
        """Stop everything (runs not finished stay as they are)."""
        if self._skipper is not None:
            self._skipper.cancel()
            try:
                await self._skipper
            except asyncio.CancelledError:
                pass
            self._skipper = None
        await self.engine.close(grace=1.0)

    async def __aenter__(self) -> TestEngine:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def worker(self) -> Worker:
        """The in-process worker (``worker.active_runs``, ``worker.counts``)."""
        if self.engine.worker is None:
            raise DurableError("the TestEngine is not open: use `async with TestEngine(...) as engine:`")
        return self.engine.worker

    def now(self) -> datetime:
        """The virtual time."""
        return self.clock()

    async def advance(self, delta: timedelta | float) -> datetime:
        """Move the virtual clock forward (runs that come due are woken) and let the worker react."""
        when = self.clock.advance(delta)
        await asyncio.sleep(0)
        return when

    def __getattr__(self, name: str) -> Any:
        """Every other public ``durable.Engine`` method, on the engine under test: ``get_logs``, ``subscribe``,
        ``get_execution``, ``list_executions``, ``get_metrics``, ``send_event``, ``provide_input``, ``cancel``…"""
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return getattr(self.engine, name)
        except AttributeError:
            raise AttributeError(f"TestEngine (and durable.Engine) has no attribute {name!r}") from None

    # -- runs ------------------------------------------------------------------------------------------------

    async def start(self, workflow: Workflow | str, *args: Any, **options: Any) -> RunHandle:
        """``engine.start``: start a run and return its handle (``workflow_id=``, ``delay=``, ... as there)."""
        return await self.engine.start(workflow, *args, **options)

    async def run(self, workflow: Workflow | str, *args: Any, **options: Any) -> Any:
        """Start a run, wait for it, and return its result (raises ``WorkflowFailed`` if it failed)."""
        return await self.wait_completed(await self.start(workflow, *args, **options))

    async def wait_completed(self, run: RunHandle | str, timeout: float | None = None) -> Any:
        """Wait until ``run`` finishes and return its result.

        Raises:
            WorkflowFailed / WorkflowCancelled: as ``run.result()``.
            RunBlocked: its replay diverged from its history.
            ResultTimeout: it did not finish within ``timeout`` real seconds (default: the engine's ``timeout``).
        """
        record = await self._wait_finished(run, timeout)
        return await self.engine.result(record.id)

    async def wait_failed(self, run: RunHandle | str, timeout: float | None = None) -> WorkflowFailed:
        """Wait until ``run`` finishes, check that it failed, and return the ``WorkflowFailed`` it raises
        (``error_type``, ``error_message``, ``remote_traceback``). A run that ends otherwise fails the test."""
        record = await self._wait_finished(run, timeout)
        if record.status != FAILED:
            outcome = f"result {bytes(record.result).decode()}" if record.result is not None else "no result"
            raise AssertionError(f"run {record.id!r} was expected to fail, but it ended {record.status} ({outcome})")
        try:
            await self.engine.result(record.id)
        except WorkflowFailed as failed:
            return failed
        raise AssertionError(f"run {record.id!r} is failed but its result did not raise WorkflowFailed")

    async def history(self, run: RunHandle | str) -> list[RecordedEvent]:
        """The run's recorded events, in order."""
        return await self.engine.get_history(_run_id(run))

    async def _wait_finished(self, run: RunHandle | str, timeout: float | None) -> RunRecord:
        run_id = _run_id(run)
        limit = self.timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + limit
        while True:
            record = await self.store.get_run(run_id)
            if record is None:
                raise RunNotFound(f"no run with id {run_id!r} in this TestEngine")
            if record.finished:
                return record
            if record.blocked is not None:
                raise RunBlocked(run_id, record.blocked)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise ResultTimeout(
                    f"run {run_id!r} did not finish within {limit}s of real time (status {record.status}, "
                    f"virtual time {self.clock().isoformat()}): a step that never returns, or auto_skip=False "
                    f"with no engine.advance(...)?"
                )
            await self.store.hub.wait_finished(run_id, min(remaining, _BLOCKED_POLL))

    # -- step failures and mocks -------------------------------------------------------------------------------

    def fail_step(self, name: str, times: int = 1, error: BaseException | type[BaseException] | None = None) -> None:
        """Make the next ``times`` attempts of step ``name`` (in any run) raise ``error`` instead of running.

        The step's retry policy applies as to a real failure: ``times`` below its ``max_attempts`` shows retries
        in the history and then success; more fails the step (``StepFailed`` in the workflow). ``error``: an
        exception or exception class (default: a ``RuntimeError`` naming the step).
        """
        if not isinstance(times, int) or times < 1:
            raise ValueError(f"fail_step needs times >= 1, got {times!r}")
        self._failures[name] = _Failure(times, error)

    def mock_step(self, name: str, returns: Any = _MISSING, *, call: Callable[..., Any] | None = None) -> None:
        """Replace the body of step ``name``: return ``returns``, or call ``call(*args, **kwargs)`` (sync or
        async) with the step's arguments. Results are recorded like real ones."""
        if (returns is _MISSING) == (call is None):
            raise TypeError("mock_step takes either returns=... or call=..., not both or neither")
        self._mocks[name] = call if call is not None else (lambda *args, **kwargs: returns)

    async def _intercept(
        self, info: StepInfo, args: tuple[Any, ...], kwargs: dict[str, Any], proceed: Callable[[], Any]
    ) -> Any:
        self.step_attempts[info.step] += 1
        failure = self._failures.get(info.step)
        if failure is not None and failure.remaining > 0:
            failure.remaining -= 1
            error = failure.error
            if error is None:
                raise RuntimeError(f"injected failure of step {info.step!r} (durable.testing fail_step)")
            raise error.with_traceback(None) if isinstance(error, BaseException) else error()
        mock = self._mocks.get(info.step)
        if mock is not None:
            result = mock(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result
        return await proceed()

    # -- time skipping -----------------------------------------------------------------------------------------

    async def _skip_time(self) -> None:
        signal = self.store.hub.subscribe_work()
        try:
            while True:
                await signal.wait(_SKIP_POLL)
                if self.auto_skip:
                    await self._skip_if_idle()
        finally:
            signal.close()

    async def _skip_if_idle(self) -> None:
        """If no run is driven or ready, move the clock to the earliest wake time of a run the worker serves."""
        worker = self.worker
        if worker.active_runs:
            return
        now = self.clock()
        target: datetime | None = None
        for status in (PENDING, RUNNING, WAITING):
            cursor: str | None = None
            while True:
                page = await self.store.list_runs(status=status, limit=1000, cursor=cursor)
                for run in page.runs:
                    if run.workflow not in worker.workflows or run.blocked is not None:
                        continue  # nobody here will run it, or it waits for fixed code: no reason to skip to it
                    if run.wake_at is not None and run.wake_at >= _NEVER:
                        continue  # parked: it waits for nothing a clock can bring
                    if run.lease_owner is not None or run.wake_at is None or run.wake_at <= now:
                        return  # being claimed or driven, or ready: the worker gets to it at the present time
                    target = run.wake_at if target is None else min(target, run.wake_at)
                cursor = page.next_cursor
                if cursor is None:
                    break
        if target is not None and not worker.active_runs and self.clock() == now:
            self.clock.advance_to(target)


def _run_id(run: RunHandle | str) -> str:
    return run.id if isinstance(run, RunHandle) else run
