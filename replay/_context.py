"""``WorkflowContext``: the workflow's deterministic window on the world (time, randomness, timers, ids)."""

from __future__ import annotations

import asyncio
import logging
import random as _random
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from ._input_spec import build_spec
from ._world import MISSING

if TYPE_CHECKING:
    from ._instance import WorkflowInstance


def _seconds(duration: timedelta | float | None) -> float | None:
    if duration is None:
        return None
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    if seconds < 0:
        raise ValueError(f"timeout must be >= 0, got {seconds} seconds")
    return seconds


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"ctx.{what}() needs a non-empty string name, got {name!r}")


class WorkflowContext:
    """Passed as the first argument of every workflow function.

    Everything here is safe on replay: ``now()`` and ``uuid4()`` are recorded in the history and answered from
    it on replay; ``random()`` draws from a generator seeded by a seed recorded when the run started; ``sleep``
    and ``sleep_until`` are durable timers.
    """

    __slots__ = ("_instance", "_rng", "_seed")

    def __init__(self, instance: WorkflowInstance, seed: int) -> None:
        self._instance = instance
        self._seed = seed
        self._rng: _random.Random | None = None  # made on first use: most workflows never draw a number

    @property
    def _random(self) -> _random.Random:
        if self._rng is None:
            self._rng = _random.Random(self._seed)
        return self._rng

    @property
    def run_id(self) -> str:
        """The id of this run (the ``workflow_id`` given to ``start``, or a generated one)."""
        return self._instance.run_id

    @property
    def workflow_name(self) -> str:
        """The registered name of the running workflow."""
        return self._instance.workflow_name

    @property
    def logger(self) -> logging.Logger:
        """The workflow's logger (``durable.workflow.<name>``): use it as any ``logging.Logger``. Its records are
        kept with the run (``engine.get_logs``, ``durable logs``) and reach the application's handlers, but only
        when the code runs for the first time: while it replays history they are dropped, so nothing is printed
        or stored twice."""
        return self._instance.logger

    @property
    def is_replaying(self) -> bool:
        """True while the code re-executes recorded history (e.g. to skip printing twice)."""
        return self._instance.replaying

    def now(self) -> datetime:
        """The current time (UTC, timezone-aware), recorded on first execution and replayed from the history."""
        return self._instance.record_now()

    def uuid4(self) -> uuid.UUID:
        """A random UUID, recorded on first execution and replayed from the history."""
        return self._instance.record_uuid4()

    def random(self) -> float:
        """A float in [0, 1) from the run's recorded seed: the same sequence on every replay."""
        return self._random.random()

    def randint(self, a: int, b: int) -> int:
        """An integer in [a, b] from the run's recorded seed."""
        return self._random.randint(a, b)

    def choice(self, seq: Any) -> Any:
        """A random element of ``seq`` from the run's recorded seed."""
        return self._random.choice(seq)

    def sleep(self, duration: timedelta | float) -> asyncio.Future[None]:
        """Sleep durably for ``duration`` (a timedelta or seconds): survives restarts, holds no worker while long.

        ``asyncio.sleep`` inside a workflow is durable too; this is the explicit spelling.
        """
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        if seconds < 0:
            raise ValueError(f"ctx.sleep() needs a duration >= 0, got {seconds} seconds")
        return self._instance.start_timer(seconds=seconds)

    def sleep_until(self, when: datetime) -> asyncio.Future[None]:
        """Sleep durably until ``when`` (timezone-aware); returns at once if that time has passed."""
        if when.tzinfo is None:
            raise ValueError(
                f"ctx.sleep_until() needs a timezone-aware datetime, got naive {when!r}: "
                "use datetime(..., tzinfo=timezone.utc)"
            )
        return self._instance.start_timer(until=when)

    # -- waiting on the world -----------------------------------------------------------------------------------

    def wait_for_event(
        self,
        name: str,
        *,
        timeout: timedelta | float | None = None,
        filter: Callable[[Any], bool] | None = None,
        default: Any = MISSING,
    ) -> asyncio.Future[Any]:
        """Wait for an external event ``name`` (sent with ``engine.send_event``) and return its payload.

        An event sent before the wait is kept and delivered when the wait comes; one that ``filter`` rejects
        stays queued for a later wait. On ``timeout`` (a durable timer) the wait raises ``durable.WaitTimeout``,
        or returns ``default`` when one is given.
        """
        _check_name(name, "wait_for_event")
        return self._instance.wait_for_message(
            "event", name, timeout=_seconds(timeout), default=default, match=filter
        )

    def wait_for_input(
        self,
        key: str,
        *,
        prompt: str,
        type: str = "text",
        choices: Sequence[Any] | None = None,
        fields: Sequence[Mapping[str, Any]] | None = None,
        max_length: int | None = None,
        timeout: timedelta | float | None = None,
        timeout_value: Any = MISSING,
    ) -> asyncio.Future[Any]:
        """Ask a person for input and wait for it (``engine.provide_input`` / ``durable inputs provide``).

        ``type`` is ``"text"``, ``"single_choice"``/``"multi_choice"`` (with ``choices``) or ``"form"`` (with
        ``fields``: dicts with ``name``, ``type`` text/number/boolean/select, ``required``, ``options``,
        ``max_length``, ``min``, ``max``). The question is listed with its schema by
        ``engine.list_pending_inputs`` until answered; answers are validated against the schema. On ``timeout``
        the wait returns ``timeout_value`` if given, else raises ``durable.WaitTimeout``.
        """
        _check_name(key, "wait_for_input")
        spec = build_spec(type, choices, fields, max_length)
        return self._instance.wait_for_message(
            "input", key, timeout=_seconds(timeout), default=timeout_value, prompt=prompt, spec=spec
        )

    def call_workflow(
        self, workflow: Any, *args: Any, workflow_id: str | None = None, cancel_with_parent: bool = True
    ) -> asyncio.Future[Any]:
        """Start a child run of ``workflow`` and wait for its result. Its failure raises
        ``durable.ChildWorkflowFailed``; cancelling this run cancels the child (unless
        ``cancel_with_parent=False``). ``workflow_id`` defaults to ``<this run's id>-<command number>``."""
        return self._instance.call_child(
            workflow, args, workflow_id=workflow_id, wait=True, cancel_with_parent=cancel_with_parent
        )

    def start_workflow(self, workflow: Any, *args: Any, workflow_id: str | None = None) -> asyncio.Future[Any]:
        """Start a child run without waiting for it; returns a handle with its ``id``."""
        return self._instance.call_child(workflow, args, workflow_id=workflow_id, wait=False)

    def set_state(self, key: str, value: Any) -> None:
        """Publish ``value`` under ``key``: visible while the run is in flight as ``get_execution(id).state``."""
        _check_name(key, "set_state")
        self._instance.set_state(key, value)

    @property
    def state(self) -> dict[str, Any]:
        """Everything published with ``set_state`` so far (read-only copy)."""
        return dict(self._instance.state)

    def continue_as_new(self, *args: Any) -> NoReturn:
        """End this run and start a fresh one of the same workflow with ``args``: a workflow that loops forever
        keeps its history bounded. The new run's id is this one's with ``~N`` appended; ``run.result()`` on
        the first follows the chain."""
        raise self._instance.continue_as_new(args)

    async def compensate(self) -> list[BaseException]:
        """Run the compensations of the completed steps (``@durable.step(compensate=...)``), most recent first,
        each a recorded, retried step. Returns the errors of compensations that failed for good (the others
        still run). Called automatically when the workflow fails or is cancelled."""
        errors: list[BaseException] = []
        for compensation, args, kwargs in self._instance.take_compensations():
            try:
                await compensation(*args, **kwargs)
            except Exception as exc:
                errors.append(exc)
        return errors

    @property
    def cancel_reason(self) -> str | None:
        """Why the run is being cancelled, once a cancellation reached it (``durable.Cancelled`` was raised)."""
        return self._instance.cancel_reason

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the code path of patch ``patch_id``: ``if ctx.patched("new-tax-api"): ...``.

        Runs that started before the patch was deployed replay the old path (False); new runs, and old runs
        once they are past what their history recorded, take the new one (True, recorded in the history).
        When no run without the patch is left, replace the call by ``ctx.deprecate_patch(patch_id)``, then
        remove it. See docs/versioning.md.
        """
        if not isinstance(patch_id, str) or not patch_id:
            raise ValueError(f"ctx.patched() needs a non-empty string id, got {patch_id!r}")
        return self._instance.patched(patch_id)

    def deprecate_patch(self, patch_id: str) -> None:
        """Mark that every run now takes patch ``patch_id``'s path; its markers in histories are ignored."""
        if not isinstance(patch_id, str) or not patch_id:
            raise ValueError(f"ctx.deprecate_patch() needs a non-empty string id, got {patch_id!r}")

    def __await__(self) -> Generator[Any, None, None]:  # pragma: no cover - guards a common slip
        raise TypeError("a WorkflowContext is not awaitable; did you mean `await ctx.sleep(...)`?")
