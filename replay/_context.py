"""``WorkflowContext``: the workflow's deterministic window on the world (time, randomness, timers, ids)."""

from __future__ import annotations

import asyncio
import random as _random
import uuid
from collections.abc import Generator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._instance import WorkflowInstance


class WorkflowContext:
    """Passed as the first argument of every workflow function.

    Everything here is safe on replay: ``now()`` and ``uuid4()`` are recorded in the history and answered from
    it on replay; ``random()`` draws from a generator seeded by a seed recorded when the run started; ``sleep``
    and ``sleep_until`` are durable timers.
    """

    __slots__ = ("_instance", "_random")

    def __init__(self, instance: WorkflowInstance, seed: int) -> None:
        self._instance = instance
        self._random = _random.Random(seed)

    @property
    def run_id(self) -> str:
        """The id of this run (the ``workflow_id`` given to ``start``, or a generated one)."""
        return self._instance.run_id

    @property
    def workflow_name(self) -> str:
        """The registered name of the running workflow."""
        return self._instance.workflow_name

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
