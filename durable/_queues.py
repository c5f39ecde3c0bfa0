"""``engine.queues``: pause, resume, limit and inspect the queues runs are placed on."""

from __future__ import annotations

from datetime import timedelta

from history import UNSET, QueueConfig, QueueStats, Store, Unset


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a queue name must be a non-empty string, got {name!r}")
    return name


class Queues:
    """The queues of one database. Settings are stored there, so every worker obeys them (pausing takes effect
    at each worker's next claim: at once when notified, else within its poll interval)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def pause(self, name: str) -> QueueConfig:
        """Stop claiming runs of ``name`` (runs already executing go on)."""
        return await self._store.configure_queue(_check_name(name), paused=True)

    async def resume(self, name: str) -> QueueConfig:
        """Claim runs of ``name`` again."""
        return await self._store.configure_queue(_check_name(name), paused=False)

    async def configure(
        self,
        name: str,
        *,
        global_concurrency: int | Unset | None = UNSET,
        rate_limit: int | Unset | None = UNSET,
        per: timedelta | float | Unset | None = UNSET,
    ) -> QueueConfig:
        """Set limits shared by all workers: at most ``global_concurrency`` runs of the queue executing at once,
        at most ``rate_limit`` runs started per ``per``. ``None`` removes a limit; a setting not given is kept.
        """
        if not isinstance(global_concurrency, Unset) and global_concurrency is not None and global_concurrency < 1:
            raise ValueError(f"global_concurrency must be >= 1 (or None for no limit), got {global_concurrency}")
        if not isinstance(rate_limit, Unset) and rate_limit is not None and rate_limit < 1:
            raise ValueError(f"rate_limit must be >= 1 (or None for no limit), got {rate_limit}")
        period: float | Unset | None = per.total_seconds() if isinstance(per, timedelta) else per
        if not isinstance(period, Unset) and period is not None and period <= 0:
            raise ValueError(f"per= must be a positive duration, got {per!r}")
        if not isinstance(rate_limit, Unset) and rate_limit is not None and isinstance(period, Unset):
            raise ValueError("a rate_limit needs its period: configure(name, rate_limit=10, per=timedelta(seconds=1))")
        return await self._store.configure_queue(
            _check_name(name), global_concurrency=global_concurrency, rate_limit=rate_limit, rate_period=period
        )

    async def stats(self, name: str) -> QueueStats:
        """Runs of the queue by state (running, pending, scheduled, waiting), its oldest pending age, settings."""
        return await self._store.queue_stats(_check_name(name))

    async def list(self) -> list[QueueConfig]:
        """Every queue with runs or settings, by name."""
        return await self._store.list_queues()
