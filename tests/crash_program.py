"""Generated workflows and an in-process crash harness, for the property "a crash after any event changes
nothing": the same result and the same history as a run that never crashed (DESIGN.md invariants 5 and 6).

A *program* is a JSON list of ops that one generic workflow, ``crash_program``, interprets:

* ``["step", v]``: an async step returning ``2v + 1``;
* ``["flaky", v, k]``: a step whose attempts 1..k raise, then attempt k+1 returns ``v`` (retries without delay);
* ``["doomed", v]``: a step failing both its attempts, caught in the workflow as ``durable.StepFailed``;
* ``["par", [op, ...]]``: ``asyncio.gather`` of step/flaky ops;
* ``["sleep", s]``: ``ctx.sleep(s)`` with tiny ``s`` (kept in memory: shorter than the worker's horizon);
* ``["random"]``, ``["now"]``: ``ctx.randint`` (seeded by the run) and ``ctx.now()`` (recorded);
* ``["raise"]``: the workflow raises, so the run fails.

Step bodies are ``async`` and return without awaiting, so parallel steps end in the order they were issued and
a worker appends the same batches on every execution: the reference history is reproducible, and a history
that differs after a crash is a real difference.

A crash is simulated the way a SIGKILL looks to the database: ``CrashingStore`` forwards a worker's calls to the
real store until the worker's append that would take the history past event ``crash_after``; that append is
either dropped (the process died before its commit: the step side effects it records happened, but their
results are lost) or committed (it died right after the commit). From then on every call of that worker hangs
forever, like a process that no longer exists: it never releases its lease, never heartbeats, never appends.
A second worker then takes the run over through the real path (the lease expires, it claims the run, replays
the history, runs what is left). The clock is virtual so the expiry costs no wall time.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import msgspec
from hypothesis import strategies as st

import durable
from durable._definitions import encode_input
from history import (
    Append,
    MemoryStore,
    NewRun,
    RecordedEvent,
    RunRecord,
    StepCompleted,
    StepFailed,
    Store,
    encode_event,
)
from history import open_store as open_store_for

WORKFLOW = "crash_program"
SEED = 1234567
LEASE_SECONDS = 30.0

EXECUTIONS: collections.Counter[tuple[str, int, int]] = collections.Counter()
"""Step bodies executed, by (run id, command id, attempt): the side effect the property counts."""


def _executed() -> None:
    info = durable.current_step()
    assert info is not None
    EXECUTIONS[(info.run_id, info.command_id, info.attempt)] += 1


_NO_DELAY = durable.Retry(max_attempts=4, backoff="constant", base=0.0)


@durable.step(name="crash_program.echo")
async def echo(v: int) -> int:
    _executed()
    return 2 * v + 1


@durable.step(name="crash_program.flaky", retry=_NO_DELAY)
async def flaky(v: int, failures: int) -> int:
    _executed()
    info = durable.current_step()
    assert info is not None
    if info.attempt <= failures:
        raise ConnectionError(f"flaky {v}: attempt {info.attempt} failed")
    return v


@durable.step(name="crash_program.doomed", retry=durable.Retry(max_attempts=2, backoff="constant", base=0.0))
async def doomed(v: int) -> int:
    _executed()
    raise ValueError(f"doomed {v}")


def _call(op: list[Any]) -> Awaitable[int]:
    return echo(op[1]) if op[0] == "step" else flaky(op[1], op[2])


@durable.workflow(name=WORKFLOW)
async def program(ctx: durable.WorkflowContext, ops: list[Any]) -> list[Any]:
    out: list[Any] = []
    for op in ops:
        kind = op[0]
        if kind in ("step", "flaky"):
            out.append(await _call(op))
        elif kind == "par":
            out.append(list(await asyncio.gather(*(_call(item) for item in op[1]))))
        elif kind == "doomed":
            try:
                await doomed(op[1])
            except durable.StepFailed as exc:
                out.append(f"caught {exc.error_type} after {exc.attempts}")
        elif kind == "sleep":
            await ctx.sleep(op[1])
            out.append("slept")
        elif kind == "random":
            out.append(ctx.randint(0, 10**6))
        elif kind == "now":
            out.append(type(ctx.now()).__name__)
        elif kind == "raise":
            raise ValueError(f"program gave up after {len(out)} ops")
    return out


# -- generating programs -------------------------------------------------------------------------------------

_values = st.integers(0, 99)
_step = st.tuples(st.just("step"), _values).map(list)
_flaky = st.tuples(st.just("flaky"), _values, st.integers(1, 3)).map(list)
_OPS = [
    _step,
    _flaky,
    st.tuples(st.just("doomed"), _values).map(list),
    st.tuples(st.just("par"), st.lists(st.one_of(_step, _flaky), min_size=2, max_size=4)).map(list),
    st.just(["random"]),
    st.just(["now"]),
]
_SLEEP = st.tuples(st.just("sleep"), st.sampled_from([0.0, 0.001, 0.003])).map(list)


def _programs(ops: list[st.SearchStrategy[list[Any]]], max_size: int) -> st.SearchStrategy[list[Any]]:
    return st.tuples(st.lists(st.one_of(ops), min_size=1, max_size=max_size), st.booleans()).map(
        lambda t: [*t[0], ["raise"]] if t[1] else t[0]
    )


programs = _programs([*_OPS, _SLEEP], 7)
"""Random programs of every op; about half end by raising (the run fails after its steps)."""

small_programs = _programs([*_OPS, _SLEEP], 4)
"""Shorter programs, for the property on a real database (each crash point costs a real lease expiry)."""


# -- the crash harness -----------------------------------------------------------------------------------------


class VirtualClock:
    """Wall time plus an offset the test advances, shared by the store (lease expiry) and the workers."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


class CrashingStore:
    """A worker's view of the store that dies (see the module docstring) at its first append ending past
    event ``crash_after``; ``commit_first`` decides whether that append lands before the death."""

    def __init__(self, inner: Store, crash_after: int | None, commit_first: bool) -> None:
        self._inner = inner
        self.crash_after = crash_after
        self.commit_first = commit_first
        self.crashed = asyncio.Event()  # set when the crash is decided (before a commit that goes first)
        self.dead = asyncio.Event()  # set when nothing more of this worker can reach the store
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # held: hung tasks stay alive
        self.appends: list[tuple[int, int]] = []  # (first_seq, number of events) of every append that landed

    def __getattr__(self, name: str) -> Any:
        """Every other store method, hanging once crashed (whatever the worker calls: claim, heartbeat, release,
        methods added later); plain attributes (url, hub) as they are."""
        attribute = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.crashed.is_set():
                await self._dead()
            return await attribute(*args, **kwargs)

        return call

    async def _dead(self) -> NoReturn:
        await self._never  # a killed process never gets an answer
        raise AssertionError("unreachable")

    async def append(self, batch: Sequence[Append]) -> list[Exception | None]:
        if self.crashed.is_set():
            await self._dead()
        ends = [item.first_seq - 1 + len(item.events) for item in batch]
        if self.crash_after is None or all(end <= self.crash_after for end in ends):
            return await self._record(batch)
        # Decided before the commit: whoever sees the run finished by this very append knows it was the last.
        self.crashed.set()
        if self.commit_first:
            await self._record(batch)
        self.dead.set()
        await self._dead()

    async def _record(self, batch: Sequence[Append]) -> list[Exception | None]:
        outcomes = await self._inner.append(batch)
        self.appends.extend((i.first_seq, len(i.events)) for i, o in zip(batch, outcomes, strict=True) if o is None)
        return outcomes


@dataclass
class Execution:
    """What one execution of a program left: the run row, its history, the step bodies executed, and (when
    the first worker crashed) the history and executions at the moment of the crash."""

    run_id: str
    run: RunRecord = None  # type: ignore[assignment]
    history: list[RecordedEvent] = field(default_factory=list)
    executions: collections.Counter[tuple[str, int, int]] = field(default_factory=collections.Counter)
    appends: list[tuple[int, int]] = field(default_factory=list)
    crashed: bool = False
    history_at_crash: list[RecordedEvent] = field(default_factory=list)
    executions_at_crash: collections.Counter[tuple[str, int, int]] = field(default_factory=collections.Counter)


@dataclass
class Backend:
    """Where programs run. ``open_store()`` opens a new store on the same database (one per simulated process);
    ``expire(seconds)`` lets a dead worker's lease run out (advance the virtual clock, or really wait)."""

    open_store: Callable[[], Awaitable[Store]]
    expire: Callable[[float], Awaitable[None]]
    clock: Callable[[], datetime] | None = None
    lease_seconds: float = LEASE_SECONDS
    poll_interval: float = 0.05


def memory_backend() -> Backend:
    """One ``MemoryStore`` shared by both workers, on a virtual clock: lease expiry costs no time."""
    clock = VirtualClock()
    store = MemoryStore(clock=clock)

    async def open_store() -> Store:
        return store

    async def expire(seconds: float) -> None:
        clock.advance(seconds + 1.0)

    return Backend(open_store=open_store, expire=expire, clock=clock)


def database_backend(url: str, lease_seconds: float) -> Backend:
    """A real database (SQLite file or Postgres), real time: a dead worker's lease really expires."""

    async def open_store() -> Store:
        store = open_store_for(url)
        await store.open()
        return store

    async def expire(seconds: float) -> None:
        await asyncio.sleep(seconds)

    return Backend(open_store=open_store, expire=expire, lease_seconds=lease_seconds)


def _worker(store: Any, backend: Backend) -> durable.Worker:
    options: dict[str, Any] = {}
    if backend.clock is not None:
        options["clock"] = backend.clock
    return durable.Worker(
        store,
        {WORKFLOW: program},
        lease_seconds=backend.lease_seconds,
        horizon=5.0,
        poll_interval=backend.poll_interval,
        **options,
    )


class _WorkerErrors(logging.Handler):
    """Collects the errors workers log (a driver that crashed, say): the run would otherwise just hang until its
    lease expires, and the property would fail by timeout, slowly and without saying why."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f"\n{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        self.messages.append(text)


async def _finished(store: Store, run_id: str, errors: _WorkerErrors, timeout: float = 30.0) -> RunRecord:
    async with asyncio.timeout(timeout):
        while True:
            assert not errors.messages, "a worker logged an error:\n" + "\n".join(errors.messages)
            run = await store.get_run(run_id)
            assert run is not None
            if run.finished:
                return run
            await store.hub.wait_finished(run_id, 0.05)


async def execute(
    ops: list[Any],
    backend: Backend,
    *,
    run_id: str = "crash-program-run",
    crash_after: int | None = None,
    commit_first: bool = False,
) -> Execution:
    """Run ``ops`` to its end; with ``crash_after``, crash the first worker there and let a second one finish."""
    errors = _WorkerErrors()
    logger = logging.getLogger("durable")
    logger.addHandler(errors)
    try:
        return await _execute(ops, backend, run_id, crash_after, commit_first, errors)
    finally:
        logger.removeHandler(errors)


async def _execute(
    ops: list[Any], backend: Backend, run_id: str, crash_after: int | None, commit_first: bool, errors: _WorkerErrors
) -> Execution:
    # Long because it is the whole scenario in order: start, crash (or not), take over, collect, clean up.
    EXECUTIONS.clear()
    result = Execution(run_id=run_id)
    store = await backend.open_store()
    stores = {id(store): store}
    before = asyncio.all_tasks()
    try:
        await store.create_run(
            NewRun(id=run_id, workflow=WORKFLOW, input=encode_input((ops,), WORKFLOW), random_seed=SEED)
        )
        first_store = await backend.open_store()
        stores[id(first_store)] = first_store
        crashing = CrashingStore(first_store, crash_after, commit_first)
        first = _worker(crashing, backend)
        first_task = asyncio.create_task(first.run())
        done = asyncio.create_task(_finished(store, run_id, errors))
        await asyncio.wait([done, asyncio.create_task(crashing.crashed.wait())], return_when=asyncio.FIRST_COMPLETED)
        if crashing.crashed.is_set():
            await crashing.dead.wait()
            result.crashed = True
            result.history_at_crash = await store.read_history(run_id)
            result.executions_at_crash = collections.Counter(EXECUTIONS)
            await backend.expire(backend.lease_seconds)
            second = _worker(store, backend)  # a new worker on the test's own store: one connection pool less
            second_task = asyncio.create_task(second.run())
            result.run = await done
            await second.shutdown(5.0)
            await second_task
        else:
            result.run = await done
            await first.shutdown(5.0)
        result.history = await store.read_history(run_id)
        result.executions = collections.Counter(EXECUTIONS)
        result.appends = crashing.appends
        if crashing.crashed.is_set() and first_task.done():
            raise AssertionError(f"the crashed worker stopped: {first_task!r}, {first_task.exception()!r}")
        return result
    finally:
        # What is left of the first worker hangs forever if it crashed: end it without letting it write.
        leftovers = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        for opened in stores.values():
            await opened.close()


# -- comparing ------------------------------------------------------------------------------------------------


def outcome(run: RunRecord) -> tuple[str, Any, Any]:
    """What ``run.result()`` tells a user: the status and the result, or the error's type and message."""
    error = (run.error.type, run.error.message) if run.error is not None else None
    return run.status, run.result, error


def normalized(history: Sequence[RecordedEvent]) -> list[dict[str, Any]]:
    """The history without what legitimately differs between two executions: the run id, when things happened
    (event times, durations, timer fire times, retry times, ``ctx.now()`` values) and tracebacks. Everything else
    must be equal: event kinds and order, command ids, step names, arguments, attempt numbers, results,
    error types and messages, whether a failure was retried."""
    out = []
    for rec in history:
        event = msgspec.json.decode(encode_event(rec.event))
        event.pop("duration_ms", None)
        event.pop("fire_at", None)
        if "retry_at" in event:
            event["retry_at"] = event["retry_at"] is not None
        if isinstance(event.get("error"), dict):
            event["error"].pop("traceback", None)
        if event["type"] == "run_started":
            event["run_id"] = "<run id>"
        if event["type"] == "value_recorded" and event["kind"] == "now":
            event["value"] = "<now>"
        out.append(event)
    return out


def attempt_outcomes(run_id: str, history: Sequence[RecordedEvent]) -> set[tuple[str, int, int]]:
    """The step attempts whose outcome is recorded, as (run id, command id, attempt)."""
    keys = set()
    for rec in history:
        event = rec.event
        if isinstance(event, (StepCompleted, StepFailed)):
            keys.add((run_id, event.command_id, event.attempt))
    return keys


def crash_points(appends: Sequence[tuple[int, int]]) -> list[tuple[int, bool]]:
    """Every distinct crash of a run whose appends were ``appends``: before and after the commit of each one,
    as (``crash_after``, ``commit_first``). A crash after event k is one of these: a history only grows by
    whole appends, so k stands for the append containing event k+1."""
    points = []
    for first_seq, count in appends:
        if count:
            points.append((first_seq - 1, False))
            points.append((first_seq - 1, True))
    return points
