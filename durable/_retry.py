"""Retry policies for steps."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

Backoff = Literal["exponential", "linear", "constant"]


@dataclass(frozen=True)
class Retry:
    """How a failing step is retried.

    The delay before attempt ``n + 1`` (after attempt ``n`` failed) is ``base ** n`` seconds (exponential),
    ``n * base`` (linear) or ``base`` (constant), capped at ``max_backoff``; with ``jitter`` it is drawn
    uniformly from [delay/2, delay]. Delays longer than the worker's in-memory horizon (a few seconds) are
    durable timers: the run is released and resumed when the delay is over.

    Args:
        max_attempts: attempts in all, the first included (1 = no retry).
        backoff: ``"exponential"``, ``"linear"`` or ``"constant"``.
        base: the base of the formula above, in seconds.
        max_backoff: upper bound of any delay.
        jitter: randomize delays so that many failing runs do not retry in lockstep.
    """

    max_attempts: int = 3
    backoff: Backoff = "exponential"
    base: float = 2.0
    max_backoff: timedelta = timedelta(hours=1)
    jitter: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"Retry(max_attempts=...) must be an int >= 1, got {self.max_attempts!r}")
        if self.backoff not in ("exponential", "linear", "constant"):
            raise ValueError(
                f"Retry(backoff=...) must be 'exponential', 'linear' or 'constant', got {self.backoff!r}"
            )
        if self.base < 0:
            raise ValueError(f"Retry(base=...) must be >= 0 seconds, got {self.base!r}")
        if isinstance(self.max_backoff, (int, float)):
            object.__setattr__(self, "max_backoff", timedelta(seconds=self.max_backoff))

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt ``failed_attempt`` (1-based) failed."""
        if self.backoff == "exponential":
            try:
                seconds = float(self.base**failed_attempt)
            except OverflowError:
                seconds = float("inf")
        elif self.backoff == "linear":
            seconds = failed_attempt * self.base
        else:
            seconds = self.base
        seconds = min(seconds, self.max_backoff.total_seconds())
        if self.jitter:
            # Retry timing is the worker's business, not workflow code's: a plain RNG is right here.
            seconds = random.uniform(seconds / 2, seconds)
        return seconds

    def allows(self, failed_attempt: int) -> bool:
        """Whether another attempt follows attempt ``failed_attempt``."""
        return failed_attempt < self.max_attempts


NO_RETRY = Retry(max_attempts=1)
