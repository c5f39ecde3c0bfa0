"""Workflows and a worker process for the crash tests (``test_crash.py``).

Run a worker with::

    python -m tests.crash_app worker URL [--lease S] [--concurrency N] [--grace S] [--poll S]

It serves the workflows below until SIGTERM (then shuts down gracefully, like ``durable worker``). The
environment tells it what to record and when to die:

``CRASH_LOG``
    The side-effect log. Every step body appends one line ``pid run_id command_id attempt kind phase`` to it
    *before* returning (``kind`` is ``effect``, or ``begin`` when a slow step starts). That line is the step's
    side effect: the tests count executions with it. It is written with one ``write()`` on an ``O_APPEND``
    descriptor, so a line is whole, and it is in the file once ``write()`` returns, SIGKILL or not.
``CRASH_KILL_FILE``
    Lines ``run_id command_id when``: the process SIGKILLs itself in the first execution of that step, ``after``
    writing its side effect and before the step returns (between the side effect and the record of its result),
    or ``before`` the side effect (the previous step is recorded, this one has done nothing yet: a ``begin``
    line marks the attempt). Later executions of the step (by the next worker) are left alone, so each line
    kills once.
``CRASH_AUDIT``
    A file where the worker notes every append the store refused (``pid run_id first_seq ErrorType``).
``CRASH_READY``
    A file where the worker appends its pid once its SIGTERM handler is installed.
``CRASH_BLIND_HEARTBEAT``
    When set, heartbeats still renew the leases this worker holds but never tell it about a lease it lost, so
    a stale worker learns it is stale only when its append is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence
from typing import Any

import durable
from history import Heartbeat, Store, open_store

LOG_ENV = "CRASH_LOG"
KILL_FILE_ENV = "CRASH_KILL_FILE"
AUDIT_ENV = "CRASH_AUDIT"
READY_ENV = "CRASH_READY"
BLIND_ENV = "CRASH_BLIND_HEARTBEAT"


# -- side effects -----------------------------------------------------------------------------------------------


def _append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _die_if_first(path: str, run_id: str, command_id: int, kind: str) -> None:
    """SIGKILL this process if the line just written is the first of its ``kind`` for this step in the log."""
    with open(path, encoding="utf-8") as log:
        fields = (line.split() for line in log)
        seen = sum(1 for f in fields if f[1] == run_id and f[2] == str(command_id) and f[4] == kind)
    if seen == 1:
        os.kill(os.getpid(), signal.SIGKILL)


def _kill_points() -> set[tuple[str, int, str]]:
    path = os.environ.get(KILL_FILE_ENV)
    if not path or not os.path.exists(path):
        return set()
    with open(path, encoding="utf-8") as points:
        return {(run, int(cid), when) for run, cid, when in (line.split() for line in points if line.strip())}


def _log(path: str, kind: str, phase: int) -> None:
    info = durable.current_step()
    assert info is not None, "side effects are logged from step bodies"
    _append_line(path, f"{os.getpid()} {info.run_id} {info.command_id} {info.attempt} {kind} {phase}\n")


def side_effect(phase: int, kind: str = "effect") -> None:
    """Log this execution of the current step; die before or after it if the kill file says so."""
    info = durable.current_step()
    assert info is not None, "side_effect() is called from step bodies"
    path = os.environ[LOG_ENV]
    points = _kill_points() if kind == "effect" else set()
    if (info.run_id, info.command_id, "before") in points:
        _log(path, "begin", phase)
        _die_if_first(path, info.run_id, info.command_id, "begin")
    _log(path, kind, phase)
    if (info.run_id, info.command_id, "after") in points:
        _die_if_first(path, info.run_id, info.command_id, "effect")


# -- steps and workflows ----------------------------------------------------------------------------------------


@durable.step(name="crash.effect")
async def effect(phase: int, value: int) -> int:
    side_effect(phase)
    return value * value + 1


@durable.step(name="crash.effect_in_thread")
def effect_in_thread(phase: int, value: int) -> int:
    """``effect`` as a plain ``def``: the worker runs it in a thread, and a kill comes from that thread."""
    side_effect(phase)
    return value * value + 1


@durable.step(name="crash.work")
async def work(phase: int, value: int, millis: int) -> int:
    await asyncio.sleep(millis / 1000)
    side_effect(phase)
    await asyncio.sleep(0.005)  # more work after the side effect: a window where a kill loses the execution
    return value + phase


@durable.step(name="crash.slow", retry=durable.Retry(max_attempts=1))
async def slow(phase: int, seconds: float) -> str:
    side_effect(phase, "begin")
    await asyncio.sleep(seconds)
    side_effect(phase)
    return f"slept {seconds}"


@durable.workflow(name="crash_seq")
async def crash_seq(ctx: durable.WorkflowContext, n: int) -> list[int]:
    """``n`` steps one after the other: step ``i`` is command ``i + 1`` and phase ``i``."""
    return [await effect(i, i) for i in range(n)]


@durable.workflow(name="crash_seq_threads")
async def crash_seq_threads(ctx: durable.WorkflowContext, n: int) -> list[int]:
    """``crash_seq`` with sync steps (run in worker threads): step ``i`` is command ``i + 1`` and phase ``i``."""
    return [await effect_in_thread(i, i) for i in range(n)]


def expected_seq(n: int) -> list[int]:
    return [i * i + 1 for i in range(n)]


@durable.workflow(name="crash_sleepy")
async def crash_sleepy(ctx: durable.WorkflowContext, n: int) -> list[int]:
    """Like ``crash_seq``, with a short durable sleep after each step: step ``i`` is command ``2i + 1``."""
    out = []
    for i in range(n):
        out.append(await effect(i, i))
        await ctx.sleep(0.02)
    return out


@durable.workflow(name="crash_mixed")
async def crash_mixed(ctx: durable.WorkflowContext, k: int) -> dict[str, Any]:
    """Sequential steps, parallel groups of steps and a durable sleep that take 50-250 ms each (about a second in
    all, different for each ``k`` so that concurrent runs are at different points at any moment); the phase of
    a step is its position in the sequence (the steps of a group share one)."""

    def millis(j: int) -> int:
        return 50 + (37 * k + 71 * j) % 200

    first = await effect(0, k)
    group = await asyncio.gather(*(work(1, first + j, millis(j)) for j in range(3)))
    await ctx.sleep(millis(11) / 1000)  # a durable timer, kept in memory (shorter than the worker's horizon)
    middle = await effect(2, sum(group) % 97)
    second = await asyncio.gather(*(work(3, middle + j, millis(j + 3)) for j in range(4)))
    single = await work(4, sum(second), millis(7))
    third = await asyncio.gather(*(work(5, single + j, millis(j + 8)) for j in range(2)))
    last = await effect(6, sum(third) % 89)
    return {"first": first, "group": group, "middle": middle, "second": second, "third": third, "last": last}


def expected_mixed(k: int) -> dict[str, Any]:
    first = k * k + 1
    group = [first + j + 1 for j in range(3)]
    middle = (sum(group) % 97) ** 2 + 1
    second = [middle + j + 3 for j in range(4)]
    third = [sum(second) + 4 + j + 5 for j in range(2)]
    return {
        "first": first,
        "group": group,
        "middle": middle,
        "second": second,
        "third": third,
        "last": (sum(third) % 89) ** 2 + 1,
    }


@durable.workflow(name="crash_slow")
async def crash_slow(ctx: durable.WorkflowContext, seconds: float) -> list[Any]:
    """A quick step, a slow one (``begin`` logged when it starts), a quick one."""
    return [await effect(0, 1), await slow(1, seconds), await effect(2, 2)]


def expected_slow(seconds: float) -> list[Any]:
    return [2, f"slept {seconds}", 5]


@durable.step(name="crash.refund")
async def refund(phase: int, amount: int) -> str:
    """The compensation of ``charge``: called with its arguments, so its phase is the charge's."""
    side_effect(phase)
    return f"refunded {amount}"


@durable.step(name="crash.charge", compensate=refund)
async def charge(phase: int, amount: int) -> str:
    side_effect(phase)
    return f"charged {amount}"


SAGA_ERROR = "the card was declined for good"


@durable.step(name="crash.decline", retry=durable.Retry(max_attempts=1))
async def decline(phase: int) -> None:
    side_effect(phase)
    raise RuntimeError(SAGA_ERROR)


@durable.workflow(name="crash_saga")
async def crash_saga(ctx: durable.WorkflowContext, n: int) -> None:
    """``n`` charges (charge ``i`` is command ``i + 1``, phase ``i``, amount ``10 (i + 1)``), then a step that
    fails for good (command ``n + 1``, phase ``n``): the refunds run, most recent first, and the refund of charge
    ``i`` is command ``2n + 1 - i`` (phase ``i``, the charge's arguments)."""
    for i in range(n):
        await charge(i, 10 * (i + 1))
    await decline(n)


WORKFLOWS = {wf.name: wf for wf in (crash_seq, crash_seq_threads, crash_sleepy, crash_mixed, crash_slow, crash_saga)}


# -- the worker process -------------------------------------------------------------------------------------------


class AuditedStore:
    """The worker's store, noting refused appends (``CRASH_AUDIT``) and optionally blinding heartbeats."""

    def __init__(self, inner: Store, audit: str | None, blind: bool) -> None:
        self._inner = inner
        self._audit = audit
        self._blind = blind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def append(self, batch: Sequence[Any]) -> list[Exception | None]:
        outcomes = await self._inner.append(batch)
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome is not None and self._audit:
                _append_line(self._audit, f"{os.getpid()} {item.run_id} {item.first_seq} {type(outcome).__name__}\n")
        return outcomes

    async def heartbeat(self, worker_id: str, leases: dict[str, int], lease_seconds: float) -> Heartbeat:
        beat = await self._inner.heartbeat(worker_id, leases, lease_seconds)
        return Heartbeat(lost=frozenset(), cancels=beat.cancels) if self._blind else beat


async def serve(url: str, *, lease: float, concurrency: int, grace: float, poll: float) -> None:
    store = open_store(url)
    await store.open()
    try:
        audited = AuditedStore(store, os.environ.get(AUDIT_ENV), bool(os.environ.get(BLIND_ENV)))
        worker = durable.Worker(
            audited,  # type: ignore[arg-type]
            WORKFLOWS,
            concurrency=concurrency,
            lease_seconds=lease,
            poll_interval=poll,
        )
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Task[None]] = []
        loop.add_signal_handler(signal.SIGTERM, lambda: stopping.append(loop.create_task(worker.shutdown(grace))))
        if os.environ.get(READY_ENV):
            _append_line(os.environ[READY_ENV], f"{os.getpid()}\n")
        await worker.run()
        await asyncio.gather(*stopping)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.crash_app")
    sub = parser.add_subparsers(required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("url")
    worker.add_argument("--lease", type=float, default=1.0)
    worker.add_argument("--concurrency", type=int, default=100)
    worker.add_argument("--grace", type=float, default=10.0)
    worker.add_argument("--poll", type=float, default=0.1)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.url, lease=args.lease, concurrency=args.concurrency, grace=args.grace, poll=args.poll))


if __name__ == "__main__":
    main()
