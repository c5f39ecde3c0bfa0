"""In-process wake-ups: "there is work" for workers, "run X finished" for callers awaiting a result, and the
fan-out of live events ("run X has new events", "a step attempt started") for subscribers.

A store calls ``notify_work``/``notify_finished``/``notify_appended`` after its own commits; the Postgres store
also relays NOTIFYs from other processes. Waiters always re-check the database after waking, so a lost wake-up
costs at most the waiter's poll interval, never a run (a subscriber re-reads the history after the last event it
saw, so it never misses or repeats an event either).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence

from ._live import StepNotice

AppendedListener = Callable[[str, int, "int | None"], None]
"""``(run_id, last_seq, first_seq)``: the run's history grew to ``last_seq``, from ``first_seq`` (``None``:
not known) on."""


class WorkSignal:
    """One worker's subscription to "there may be work": set by any notify, cleared by each wait."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._event = asyncio.Event()

    def set(self) -> None:
        """Wake the subscriber."""
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notify; True if one came."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True

    def close(self) -> None:
        """Stop receiving notifies."""
        self._hub._work.discard(self)


class Hub:
    """Fan-out of wake-ups inside one process."""

    def __init__(self) -> None:
        self._work: set[WorkSignal] = set()
        self._finished: defaultdict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._message_listeners: list[Callable[[str], None]] = []
        self._appended_listeners: list[AppendedListener] = []
        self._step_listeners: list[Callable[[StepNotice], None]] = []

    def subscribe_work(self) -> WorkSignal:
        """A new subscription to work notifications."""
        signal = WorkSignal(self)
        self._work.add(signal)
        return signal

    def notify_work(self) -> None:
        """Tell every subscribed worker that runs may be ready."""
        for signal in self._work:
            signal.set()

    def on_message(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(run_id)`` whenever a run gets an inbox message; returns a function that unsubscribes."""
        self._message_listeners.append(listener)
        return lambda: self._message_listeners.remove(listener)

    def notify_message(self, run_id: str) -> None:
        """Tell listeners (the worker driving ``run_id``) that the run has a new inbox message."""
        for listener in list(self._message_listeners):
            listener(run_id)
        self.notify_work()

    def notify_finished(self, run_id: str) -> None:
        """Wake whoever waits for ``run_id`` to finish."""
        for waiter in self._finished.pop(run_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def wait_finished(self, run_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a finish notification of ``run_id``."""
        waiter = asyncio.get_running_loop().create_future()
        self._finished[run_id].append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        finally:
            waiters = self._finished.get(run_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._finished[run_id]
        return True

    # -- live events ---------------------------------------------------------------------------------------

    def on_appended(self, listener: AppendedListener) -> Callable[[], None]:
        """Call ``listener(run_id, last_seq, first_seq)`` whenever events are appended to a run (in this process,
        or relayed from others); returns a function that unsubscribes."""
        self._appended_listeners.append(listener)
        return lambda: self._appended_listeners.remove(listener)

    def notify_appended(self, run_id: str, last_seq: int, first_seq: int | None = None) -> None:
        """Tell subscribers that ``run_id``'s history now ends at ``last_seq`` (the new events start at
        ``first_seq``). Free when nobody subscribes: stores call it after every commit that adds events."""
        if self._appended_listeners:
            for listener in list(self._appended_listeners):
                listener(run_id, last_seq, first_seq)

    def on_step_started(self, listener: Callable[[StepNotice], None]) -> Callable[[], None]:
        """Call ``listener(notice)`` for every step attempt that starts; returns a function that unsubscribes."""
        self._step_listeners.append(listener)
        return lambda: self._step_listeners.remove(listener)

    def notify_step_started(self, notices: Sequence[StepNotice]) -> None:
        """Hand step-start notices to this process's listeners."""
        for listener in list(self._step_listeners):
            for notice in notices:
                listener(notice)

    def subscribe_live(
        self, on_appended: AppendedListener, on_step_started: Callable[[StepNotice], None]
    ) -> Callable[[], None]:
        """``on_appended`` and ``on_step_started`` together; returns one function that unsubscribes both (once)."""
        stops = [self.on_appended(on_appended), self.on_step_started(on_step_started)]

        def stop() -> None:
            while stops:
                stops.pop()()

        return stop


def once(action: Callable[[], None]) -> Callable[[], None]:
    """``action``, made safe to call more than once: the later calls do nothing (a subscription's stop)."""
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return call


class InProcessLive:
    """``Store.notify_step_started``/``subscribe_live`` for the stores that tell only their own process (memory,
    SQLite): through the store's hub. Other processes see a SQLite run's steps when they are recorded (polling)."""

    hub: Hub

    def notify_step_started(self, notices: Sequence[StepNotice]) -> None:
        """Hand the notices to this process's subscribers."""
        self.hub.notify_step_started(notices)

    async def subscribe_live(
        self, on_appended: AppendedListener, on_step_started: Callable[[StepNotice], None]
    ) -> Callable[[], None]:
        """Listen to the appends and step starts of this process."""
        return self.hub.subscribe_live(on_appended, on_step_started)
