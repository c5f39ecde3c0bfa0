"""The part of a run's driver that deals with the world outside the run: its inbox (external events, people's
input, children's outcomes), child runs it starts, cancellation and the run's deadline, published state, and
continue-as-new. Split from ``_driver.py``, which drives steps and timers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from history import (
    CancelRequested,
    ChildFinished,
    ChildOutcome,
    Event,
    InputRequested,
    MessageReceived,
    NewRun,
    PendingInput,
    RunNotFound,
    RunStarted,
)
from replay import ChildRequest, WorkflowInstance

if TYPE_CHECKING:
    from ._driver import RunDriver

_state_encoder = msgspec.json.Encoder()

_CHILD_BATCH = 1000
"""Children created per ``create_runs`` at most (as ``start_many``'s batches)."""


@dataclass
class Arrival:
    """Something from outside (an inbox message, a cancellation) to append and, if ``event`` is set, deliver."""

    event: Event | None
    message_id: int | None = None


def next_run_id(run_id: str) -> str:
    """The id of the run that continues ``run_id``: ``order-1`` -> ``order-1~1`` -> ``order-1~2``.
    Derived from the id alone, so a worker that crashed after creating it creates the same one again."""
    root, _, generation = run_id.partition("~")
    return f"{root}~{int(generation) + 1 if generation.isdigit() else 1}"


class WorldDriver:
    """Owned by one ``RunDriver``; see the module docstring."""

    def __init__(self, driver: RunDriver) -> None:
        self.driver = driver
        self.inbox_due = True
        self.run_due = False  # re-read the run row (a cancellation may have been requested from another process)
        started = driver._history[0].event
        self.deadline = started.deadline if isinstance(started, RunStarted) else None
        self._children: list[ChildRequest] = []
        self._cancel_queued = False
        self._seen_messages: set[int] = set()

    # -- before each wait -------------------------------------------------------------------------------------

    def queue_cancellation(self, instance: WorkflowInstance, reason: str | None, now: datetime) -> None:
        """Queue a ``CancelRequested`` for a requested cancellation, or for a run past its deadline."""
        if self._cancel_queued or instance.cancel_reason is not None:
            return
        if reason is not None:
            event = CancelRequested(reason=reason)
        elif self.deadline is not None and now >= self.deadline:
            event = CancelRequested(reason=f"the run passed its deadline ({self.deadline.isoformat()})", timeout=True)
        else:
            return
        self._cancel_queued = True
        self.driver._ended.append(Arrival(event))

    async def before_wait(self, instance: WorkflowInstance) -> None:
        """Start children the code asked for, and read the inbox when the code waits on the world."""
        await self.create_children()
        if self.run_due:
            self.run_due = False
            run = await self.driver.worker.store.get_run(self.driver.run_id)
            if run is not None and run.cancel_reason is not None:
                self.driver.cancel(run.cancel_reason)
                self.queue_cancellation(instance, run.cancel_reason, self.driver.worker.clock())
        if self.inbox_due and instance.awaits_world:
            await self.read_inbox(instance)

    def earliest(self, next_due: datetime | None, instance: WorkflowInstance) -> datetime | None:
        """The next time the driver must act: ``next_due``, or the run's deadline if that comes first."""
        if self.deadline is None or self._cancel_queued or instance.cancel_reason is not None:
            return next_due
        return self.deadline if next_due is None else min(next_due, self.deadline)

    # -- children ---------------------------------------------------------------------------------------------

    async def create_children(self) -> None:
        """Create the child runs issued so far (idempotent: a child's id is fixed by its command). A fan-out
        (``asyncio.gather`` of many ``ctx.call_workflow``) creates its children in one ``create_runs``: one round
        trip for up to ``_CHILD_BATCH`` of them, not one each."""
        instance = self.driver._instance
        if instance is not None:
            self._children.extend(instance.take_new_children())
        store = self.driver.worker.store
        while self._children:
            batch = self._children[:_CHILD_BATCH]
            trace_context = self.driver.trace_context()  # the children's spans descend from this activation
            news = [
                NewRun(
                    id=request.child_id,
                    workflow=request.workflow,
                    input=request.input,
                    random_seed=random.getrandbits(63),
                    parent_id=self.driver.run_id,
                    deadline=self._deadline_of(request.workflow),
                    trace_context=trace_context,
                )
                for request in batch
            ]
            results = await store.create_runs(news) if len(news) > 1 else [await store.create_run(news[0])]
            for request, (_, created) in zip(batch, results, strict=True):
                if created:
                    self.driver.run_created(request.workflow)
            del self._children[: len(batch)]

    def _deadline_of(self, workflow: str) -> datetime | None:
        definition = self.driver.worker.workflows.get(workflow)
        timeout = getattr(definition, "timeout", None)
        return None if timeout is None else self.driver.worker.clock() + timedelta(seconds=timeout)

    async def cancelled(self, instance: WorkflowInstance) -> None:
        """Cancellation reached the code: stop the steps in flight and cancel the awaited children."""
        for task in self.driver._running.values():
            task.cancel()
        self.driver._running.clear()
        reason = f"parent run {self.driver.run_id!r} was cancelled: {instance.cancel_reason}"
        for child_id in instance.children_to_cancel():
            try:
                await self.driver.worker.store.request_cancel(child_id, reason)
            except RunNotFound:  # never created (the parent was cancelled first): nothing to stop
                pass

    async def continue_as_new(self, raw_input: msgspec.Raw, instance: WorkflowInstance) -> str:
        """Create the run that continues this one, handing it the messages no wait took; return its id."""
        run = self.driver.run
        new_id = next_run_id(run.id)
        _, created = await self.driver.worker.store.create_run(
            NewRun(
                id=new_id,
                workflow=run.workflow,
                input=raw_input,
                random_seed=random.getrandbits(63),
                queue=run.queue,
                priority=run.priority,
                parent_id=run.parent_id,
                deadline=self._deadline_of(run.workflow),
                continued_from=run.id,
                carried=instance.unused_messages(),
                trace_context=self.driver.trace_context(),
            )
        )
        if created:
            self.driver.run_created(run.workflow)
        return new_id

    # -- the inbox ----------------------------------------------------------------------------------------------

    async def read_inbox(self, instance: WorkflowInstance) -> None:
        """Turn unread inbox messages into arrivals for the next append (each message once)."""
        self.inbox_due = False
        for message in await self.driver.worker.store.read_inbox(self.driver.run_id):
            if message.id in self._seen_messages:
                continue
            self._seen_messages.add(message.id)
            event: Event | None
            if message.kind == "child":
                outcome = msgspec.json.decode(message.payload, type=ChildOutcome)
                command_id = instance.child_command(message.name)
                event = None if command_id is None else ChildFinished(
                    command_id=command_id,
                    child_id=message.name,
                    status=outcome.status,
                    result=outcome.result,
                    error=outcome.error,
                )
            else:
                event = MessageReceived(
                    message_id=message.id, kind=message.kind, name=message.name, payload=msgspec.Raw(message.payload)
                )
            self.driver._ended.append(Arrival(event, message.id))

    # -- what each append carries besides events ------------------------------------------------------------

    def side_effects(self, instance: WorkflowInstance, events: list[Event]) -> dict[str, Any]:
        """Inputs to open and close, and the published state, for an append of ``events``."""
        update: dict[str, Any] = {}
        opened = [
            PendingInput(
                run_id=self.driver.run_id,
                key=event.key,
                prompt=event.prompt,
                spec=bytes(event.spec),
                created_at=self.driver.worker.clock(),
                workflow=self.driver.run.workflow,
                timeout_at=event.timeout_at,
            )
            for event in events
            if isinstance(event, InputRequested)
        ]
        if opened:
            update["open_inputs"] = opened
        asked = {event.key: event.command_id for event in events if isinstance(event, InputRequested)}
        # The store opens before it closes: a close of an earlier question whose key is asked again in this same
        # append must not remove the new question.
        closed = [key for key, cid in instance.take_closed_inputs() if asked.get(key, cid) <= cid]
        if closed:
            update["close_inputs"] = closed
        if instance.state_changed:
            update["state"] = _state_encoder.encode(instance.state)
            instance.state_changed = False
        return update
