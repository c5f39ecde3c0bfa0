"""The deterministic event loop that workflow code runs on.

One FIFO ready-queue, a virtual clock that only moves when the driver says so (to the time recorded with the
event being delivered), no selector and no I/O. ``call_later``/``call_at`` do not wait: they hand the timer to
``on_timer``, which turns it into a durable timer command, so ``asyncio.sleep``, ``asyncio.wait_for`` and
``asyncio.timeout`` inside a workflow are durable too. The driver calls ``run_until_idle()`` after every delivery;
it returns when no callback is ready, i.e. when every task waits on something only the outside world can supply.

Why not asyncio's own loop: its ``run_forever`` blocks on a selector and takes time from the OS, so a replay
would neither be deterministic nor finish without real waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import _guards
from ._errors import WorkflowCodeError

_T = TypeVar("_T")


class DeterministicLoop(asyncio.AbstractEventLoop):
    """An asyncio loop driven step by step by a workflow instance."""

    def __init__(
        self,
        on_timer: Callable[[asyncio.TimerHandle], None],
        on_timer_cancelled: Callable[[asyncio.TimerHandle], None],
        start_time: float,
    ) -> None:
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._time = start_time
        self._on_timer = on_timer
        self._on_timer_cancelled = on_timer_cancelled
        self._running = False
        self._closed = False
        self.unhandled: list[dict[str, Any]] = []
        self.guard_violation: WorkflowCodeError | None = None  # set by the determinism guards (replay/_guards.py)

    # -- driving ----------------------------------------------------------------------------------------------

    def set_time(self, when: float) -> None:
        """Move the virtual clock (seconds since the epoch); it never goes backwards."""
        self._time = max(self._time, when)

    def run_until_idle(self) -> None:
        """Run ready callbacks, in FIFO order, until none is left."""
        previous = asyncio.events._get_running_loop()
        # The worker calls this from inside its own (real) asyncio loop; the workflow's tasks must see this loop
        # as the running one, then the real loop is put back. Temporal's Python SDK does the same swap.
        asyncio.events._set_running_loop(self)
        self._running = True
        armed = _guards.arm(self)  # this thread now runs workflow code: non-deterministic calls raise
        try:
            ready = self._ready
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
        finally:
            _guards.disarm(armed)
            self._running = False
            asyncio.events._set_running_loop(previous)

    # -- the asyncio.AbstractEventLoop surface that workflow code can reach -----------------------------------

    def time(self) -> float:
        """Virtual time: the time recorded with the event being delivered."""
        return self._time

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_at(self._time + delay, callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        self._on_timer(handle)
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        self._on_timer_cancelled(handle)

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, _T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def get_exception_handler(self) -> None:
        return None

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        # Exceptions of tasks nobody awaited: keep them for the driver's report instead of logging from inside
        # a replay (which would print the same warning on every replay).
        self.unhandled.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.unhandled.append(context)

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> asyncio.Handle:  # type: ignore[override]
        raise RuntimeError(
            "workflow code cannot use threads: run blocking or threaded work in a @durable.step instead"
        )

    def run_in_executor(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise RuntimeError(
            "workflow code cannot use run_in_executor: move the blocking call into a @durable.step "
            "(sync steps run in a worker thread)"
        )

    def get_task_factory(self) -> None:
        return None

    async def shutdown_asyncgens(self) -> None:
        return None
