"""A connection to PostgreSQL lost while the store is open, reported as such.

Without this, a server that stops (or a network that drops) after ``open()`` surfaced as whatever asyncpg or the
socket raised — ``ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)`` — naming neither
the database nor what to do. ``GuardedPool`` wraps the store's pool: the calls the store makes (``fetch``,
``fetchrow``, ``fetchval``, ``execute``, and whatever runs inside ``acquire()``) raise ``DatabaseUnavailable``
with the store's URL and the way out instead, the original exception chained. Only the errors that mean "no
connection" are translated; every other database error (a unique violation a create relies on, a deadlock a
batch retries) passes through untouched. Costs one Python frame per call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ._errors import DatabaseUnavailable

Lost = tuple[type[BaseException], ...]
"""The exceptions that mean "no connection" (``_postgres.CONNECTION_LOST``: asyncpg is imported there only)."""


def connection_lost(url: str, exc: BaseException) -> DatabaseUnavailable:
    """The error of a call that found no connection to the server at ``url``."""
    reason = str(exc) or type(exc).__name__
    return DatabaseUnavailable(
        f"lost the connection to PostgreSQL at {url}: {reason}. Check that the server runs and can be reached; "
        f"then retry the call (workers retry on their own, and no history is changed by a call that failed)"
    )


def _guarded(name: str) -> Callable[..., Awaitable[Any]]:
    """``GuardedPool.<name>``: the pool's method of that name, a lost connection said as such."""

    async def call(self: GuardedPool, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._pool, name)(*args, **kwargs)
        except self._lost as exc:
            raise connection_lost(self._url, exc) from exc

    call.__name__ = call.__qualname__ = name
    return call


class GuardedPool:
    """The store's asyncpg pool, with lost connections raised as ``DatabaseUnavailable``."""

    def __init__(self, pool: Any, url: str, lost: Lost) -> None:
        self._pool = pool
        self._url = url
        self._lost = lost

    fetch = _guarded("fetch")
    fetchrow = _guarded("fetchrow")
    fetchval = _guarded("fetchval")
    execute = _guarded("execute")

    def acquire(self, **kwargs: Any) -> _GuardedAcquire:
        """``pool.acquire()``; a lost connection inside the ``async with`` block is translated on the way out."""
        return _GuardedAcquire(self._pool.acquire(**kwargs), self._url, self._lost)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class _GuardedAcquire:
    def __init__(self, inner: Any, url: str, lost: Lost) -> None:
        self._inner = inner
        self._url = url
        self._lost = lost

    async def __aenter__(self) -> Any:
        try:
            return await self._inner.__aenter__()
        except self._lost as exc:
            raise connection_lost(self._url, exc) from exc

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        await self._inner.__aexit__(exc_type, exc, tb)  # give the connection back (or drop a broken one)
        if isinstance(exc, self._lost):
            raise connection_lost(self._url, exc) from exc
        return False
