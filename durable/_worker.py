"""The worker: claims ready runs, drives each with a ``RunDriver``, heartbeats their leases, shuts down cleanly.

Wake-ups are pushed: the store's hub is notified on new runs and releases (relayed from other processes by
Postgres LISTEN/NOTIFY); a slow poll is only the fallback, and the worker also sleeps exactly until the next
known wake time (a timer or retry coming due).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from history import Append, Claim, HistoryConflict, LeaseLost, QueueStats, Store

from ._appender import GroupAppender
from ._definitions import Workflow
from ._driver import RunDriver
from ._logs import LogLimits, StepLogs
from ._retention import Retention, RetentionJob
from ._step_context import StepInfo
from ._telemetry import Telemetry

if TYPE_CHECKING:
    from ._telemetry import MeterProvider, TracerProvider

log = logging.getLogger("durable.worker")


StepInterceptor = Callable[
    [StepInfo, tuple[Any, ...], dict[str, Any], Callable[[], Awaitable[Any]]], Awaitable[Any]
]
"""``(info, args, kwargs, proceed) -> result``: called instead of each step attempt's body; ``await proceed()``
runs the real body. A testing hook (``durable.testing`` injects failures and mocks with it)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


_QUEUE_DEPTH_EVERY = 5.0
"""Seconds between reads of queue stats for the ``durable.queue.depth`` gauge (only when metrics are on)."""

_CLAIM_BATCH = 100
"""Most runs taken by one claim: large enough to amortize a round trip, small enough to share a burst."""


def check_queues(queues: Mapping[str, int] | None) -> dict[str, int] | None:
    """Validate a worker's queue map (names to per-worker concurrency); a clear ValueError if it is wrong."""
    if queues is None:
        return None
    checked = dict(queues)
    for name, limit in checked.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"queue names must be non-empty strings, got {name!r}")
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"queue {name!r}: concurrency must be an int >= 1, got {limit!r}")
    if not checked:
        raise ValueError("queues= names at least one queue (or None to serve every queue)")
    return checked


def make_worker_id() -> str:
    """``host:pid:random``: unique per worker, readable in ``durable show``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Executes runs of ``workflows`` from ``store``.

    Args:
        store: an opened store.
        workflows: the workflows this worker serves, by name.
        concurrency: most runs driven at once, in all.
        queues: the queues served, each with this worker's concurrency for it (``{"default": 10, "ai": 5}``);
            ``None`` serves every queue.
        lease_seconds: how long a claim lasts without a heartbeat; a crashed worker's runs are taken over
            after this long. Heartbeats renew every third of it.
        horizon: waits (timers, retry delays) shorter than this are done in memory, holding the lease; longer
            ones release the run until it is due.
        poll_interval: fallback poll when no notification arrives.
        clock: what "now" is (timers, retry times, ``ctx.now()``); a test passes a virtual clock.
        step_interceptor: a testing hook called instead of every step attempt's body (see ``StepInterceptor``).
        capture_logs: keep what step bodies log and print, per run, step and attempt (``engine.get_logs``,
            ``durable logs``); it still reaches the usual handlers and the terminal. See docs/observability-logs.md.
        log_limits: how much one step attempt may capture (``LogLimits()``: 1,000 lines / 1 MB).
        retention: delete old finished runs periodically, in a background task (see ``durable.Retention``).
        tracer_provider: OpenTelemetry tracer provider for run and step spans (default: the global one).
        meter_provider: OpenTelemetry meter provider for the ``durable`` metrics (default: the global one).
            Whether each is on is decided when ``run()`` starts: with the API's no-op defaults (nothing
            configured) a worker traces and measures nothing and pays nothing per step.
    """

    def __init__(
        self,
        store: Store,
        workflows: Mapping[str, Workflow],
        *,
        concurrency: int = 100,
        queues: Mapping[str, int] | None = None,
        lease_seconds: float = 30.0,
        horizon: float = 5.0,
        poll_interval: float = 2.0,
        clock: Callable[[], datetime] = _utcnow,
        worker_id: str | None = None,
        step_interceptor: StepInterceptor | None = None,
        capture_logs: bool = True,
        log_limits: LogLimits | None = None,
        retention: Retention | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}")
        self.store = store
        self.workflows = dict(workflows)
        self.concurrency = concurrency
        self.queues = check_queues(queues)
        self.lease_seconds = lease_seconds
        self.horizon = horizon
        self.poll_interval = poll_interval
        self.clock = clock
        self.worker_id = worker_id or make_worker_id()
        self.step_interceptor = step_interceptor
        self._providers = (tracer_provider, meter_provider)
        self.telemetry = Telemetry(tracer_provider, meter_provider)
        self.queue_depths: tuple[QueueStats, ...] = ()
        """The queues' stats as last read for the ``durable.queue.depth`` gauge (only when metrics are on)."""
        self.stopping = False
        self.counts: collections.Counter[str] = collections.Counter()
        self.logs = StepLogs(store, capture_logs, log_limits or LogLimits())
        self._appender = GroupAppender(store)
        self._drivers: dict[str, tuple[RunDriver, asyncio.Task[None]]] = {}
        self._signal = store.hub.subscribe_work()
        self._stopped = asyncio.Event()
        self.retention = None if retention is None else RetentionJob(store, retention, clock, self.worker_id)
        """The periodic cleanup (``None`` without ``retention=``); ``await worker.retention.wait_pass()``."""

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and drive runs until ``stop()``; then wait for the drivers to hand their runs back."""
        names = sorted(self.workflows)
        await self.store.register_workflows(self.worker_id, names)
        self.telemetry = Telemetry(*self._providers)  # decided once per start: providers set up by now count
        metrics = self.telemetry.metrics
        if metrics is not None:
            metrics.add_worker(self)
        depths = None if metrics is None else asyncio.get_running_loop().create_task(self._queue_depth_loop())
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_loop())
        cleanup = None if self.retention is None else asyncio.get_running_loop().create_task(self.retention.run())
        stop_listening = self.store.hub.on_message(self._message_arrived)
        log.info("worker %s serving %s", self.worker_id, ", ".join(names) or "no workflows")
        self.logs.start(self.telemetry.log_ids)  # log lines get span ids only when this worker traces
        try:
            while not self.stopping:
                claimed = await self._claim_once(names)
                if claimed or self.stopping:
                    continue
                await self._signal.wait(await self._idle_timeout(names))
            while self._drivers:
                await asyncio.wait([task for _, task in self._drivers.values()])
        finally:
            self.logs.stop()
            stop_listening()
            heartbeat.cancel()
            if cleanup is not None:  # awaited: a pass cut short releases its connection before the store closes
                cleanup.cancel()
                await asyncio.gather(cleanup, return_exceptions=True)
            if depths is not None:  # awaited too: a read cut short releases its connection before the store closes
                depths.cancel()
                await asyncio.gather(depths, return_exceptions=True)
            if metrics is not None:
                metrics.discard_worker(self)
            self._signal.close()
            self._stopped.set()

    def stop(self) -> None:
        """Stop claiming; drivers finish their in-flight steps and release their runs."""
        self.stopping = True
        self._signal.set()
        for driver, _ in self._drivers.values():
            driver.wake()

    async def shutdown(self, grace: float = 10.0) -> None:
        """``stop()``, then wait up to ``grace`` seconds before abandoning in-flight steps (their runs' leases
        expire and another worker re-runs those steps)."""
        self.stop()
        try:
            async with asyncio.timeout(grace):
                await self._stopped.wait()
        except TimeoutError:
            log.warning("worker %s: %d run(s) still busy after %ss; abandoning them", self.worker_id,
                        len(self._drivers), grace)
            for _, task in list(self._drivers.values()):
                task.cancel()
            await self._stopped.wait()

    # -- claiming --------------------------------------------------------------------------------------------

    async def _claim_once(self, names: list[str]) -> bool:
        """Claim what there is room for (in all, and per queue when the worker serves named queues); True when a
        claim came back full, so there may be more right away."""
        free = self.concurrency - len(self._drivers)
        if free <= 0 or not names:
            return False
        wanted: list[tuple[str | None, int]] = [(None, min(free, _CLAIM_BATCH))]
        if self.queues is not None:
            active = collections.Counter(driver.run.queue for driver, _ in self._drivers.values())
            wanted = [
                (name, min(limit - active[name], free, _CLAIM_BATCH))
                for name, limit in self.queues.items()
                if limit > active[name]
            ]
        full = False
        for queue, limit in wanted:
            try:
                claims = await self.store.claim(self.worker_id, names, limit, self.lease_seconds, queue=queue)
            except Exception:
                log.exception("worker %s: claim failed; retrying", self.worker_id)
                await asyncio.sleep(1.0)
                return False
            for claim in claims:
                self._start_driver(claim)
            full = full or (len(claims) == limit > 0)
        return full

    async def _idle_timeout(self, names: list[str]) -> float:
        if len(self._drivers) >= self.concurrency:
            return self.poll_interval
        try:
            wake_at = await self.store.next_wake_at(names)
        except Exception:
            return self.poll_interval
        if wake_at is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, (wake_at - self.clock()).total_seconds()))

    def _start_driver(self, claim: Claim) -> None:
        driver = RunDriver(self, claim)
        task = asyncio.get_running_loop().create_task(self._drive(driver))
        self._drivers[claim.run.id] = (driver, task)

    async def _drive(self, driver: RunDriver) -> None:
        try:
            await driver.drive()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("worker %s: run %s crashed its driver; it will be retried after its lease expires",
                          self.worker_id, driver.run_id)
        finally:
            self._drivers.pop(driver.run_id, None)
            self._signal.set()

    # -- leases ---------------------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            leases = {run_id: driver.epoch for run_id, (driver, _) in self._drivers.items()}
            if not leases:
                continue
            try:
                beat = await self.store.heartbeat(self.worker_id, leases, self.lease_seconds)
            except Exception:
                log.warning("worker %s: heartbeat failed; retrying", self.worker_id, exc_info=True)
                continue
            for run_id in beat.lost:
                entry = self._drivers.get(run_id)
                if entry is not None:
                    entry[0].lease_lost()
            for run_id, reason in beat.cancels.items():
                self.cancel_local(run_id, reason)
            for run_id in beat.messages:
                self._message_arrived(run_id)

    async def _queue_depth_loop(self) -> None:
        """Read the served queues' stats every few seconds for the ``durable.queue.depth`` gauge: off the per-step
        path, and only when a meter provider is configured."""
        while True:
            try:
                served = self.queues if self.queues is not None else [q.name for q in await self.store.list_queues()]
                names = list(served)
                self.queue_depths = tuple([await self.store.queue_stats(name) for name in names])
            except Exception:
                log.debug("worker %s: reading queue stats failed; retrying", self.worker_id, exc_info=True)
            await asyncio.sleep(_QUEUE_DEPTH_EVERY)

    def _message_arrived(self, run_id: str) -> None:
        entry = self._drivers.get(run_id)
        if entry is not None:
            entry[0].messages_arrived()

    @property
    def active_runs(self) -> int:
        """How many runs this worker drives right now."""
        return len(self._drivers)

    def cancel_local(self, run_id: str, reason: str) -> bool:
        """Cancel a run now if this worker drives it (the in-process fast path of ``engine.cancel``)."""
        entry = self._drivers.get(run_id)
        if entry is None:
            return False
        entry[0].cancel(reason)
        return True

    async def append(self, item: Append, *, lease_deadline: float) -> None:
        """Append through the group committer, retrying transient store errors for up to ``lease_deadline``
        seconds. After a retry, a ``HistoryConflict`` may mean the first try did commit: the run row tells."""
        deadline = time.monotonic() + lease_deadline
        delay = 0.05
        retried = False
        while True:
            try:
                await self._appender.submit(item)
                return
            except HistoryConflict:
                if retried and await self._landed(item):
                    return
                raise
            except LeaseLost:
                raise
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("run %s: append failed (%s); retrying in %.2fs", item.run_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                retried = True

    async def _landed(self, item: Append) -> bool:
        run = await self.store.get_run(item.run_id)
        return run is not None and run.lease_epoch == item.epoch and run.next_seq == item.first_seq + len(item.events)

    def count(self, status: str) -> None:
        """Count a finished run by status (``worker.counts``)."""
        self.counts[status] += 1
