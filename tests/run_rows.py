"""Test helper: set a run's status and timestamps directly in its store's database (or the memory store's row),
to build a known set of runs for metrics and retention tests, and count the rows a run has in each table."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from history import MemoryStore, Store

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KEEP: Any = object()
"""Leave this column as it is."""

PER_RUN_TABLES = ("durable_events", "durable_inbox", "durable_inputs")


def _us(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - EPOCH) // timedelta(microseconds=1)


class RunRows:
    """Direct access to the run rows of ``store`` (a real SQL connection beside the store, for SQL stores)."""

    def __init__(self, kind: str, url: str, store: Store) -> None:
        self.kind = kind
        self.url = url
        self.store = store
        self._pg: Any = None
        self._sqlite: sqlite3.Connection | None = None

    async def open(self) -> RunRows:
        if self.kind == "postgres":
            self._pg = await asyncpg.connect(self.url)
        elif self.kind == "sqlite":
            self._sqlite = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None, timeout=10)
        return self

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()

    async def set(
        self,
        run_id: str,
        *,
        status: str = KEEP,
        created_at: datetime = KEEP,
        started_at: datetime | None = KEEP,
        finished_at: datetime | None = KEEP,
    ) -> None:
        """Overwrite the given columns of a run's row."""
        changes = {
            name: value
            for name, value in (("status", status), ("created_at", created_at), ("started_at", started_at),
                                ("finished_at", finished_at))
            if value is not KEEP
        }  # fmt: skip
        if not changes:
            return
        if isinstance(self.store, MemoryStore):
            run = self.store._runs[run_id]
            self.store._runs[run_id] = msgspec.structs.replace(run, **changes)
        elif self._pg is not None:
            columns = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(changes))
            await self._pg.execute(f"UPDATE durable_runs SET {columns} WHERE id = $1", run_id, *changes.values())
        else:
            assert self._sqlite is not None
            values = [v if isinstance(v, str) else _us(v) for v in changes.values()]
            columns = ", ".join(f"{name} = ?" for name in changes)
            self._sqlite.execute(f"UPDATE durable_runs SET {columns} WHERE id = ?", [*values, run_id])

    async def count(self, table: str, run_ids: list[str]) -> int:
        """Rows of ``run_ids`` in ``table`` (``durable_runs`` by id, the others by run_id); memory: the store's
        dictionaries."""
        if isinstance(self.store, MemoryStore):
            return _memory_count(self.store, table, run_ids)
        column = "id" if table == "durable_runs" else "run_id"
        if self._pg is not None:
            count: int = await self._pg.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = ANY($1)", run_ids)
            return count
        assert self._sqlite is not None
        marks = ", ".join("?" * len(run_ids))
        row = self._sqlite.execute(f"SELECT count(*) FROM {table} WHERE {column} IN ({marks})", run_ids).fetchone()
        return int(row[0])

    async def delete_events(self, run_id: str) -> None:
        """A plain DELETE of a run's events, as any client could send (the database must refuse it)."""
        if self._pg is not None:
            await self._pg.execute("DELETE FROM durable_events WHERE run_id = $1", run_id)
        else:
            assert self._sqlite is not None
            self._sqlite.execute("DELETE FROM durable_events WHERE run_id = ?", (run_id,))


def _memory_count(store: MemoryStore, table: str, run_ids: list[str]) -> int:
    ids = set(run_ids)
    if table == "durable_runs":
        return sum(1 for run_id in ids if run_id in store._runs)
    if table == "durable_events":
        return sum(len(store._events.get(run_id, [])) for run_id in ids)
    if table == "durable_inbox":
        return sum(1 for m in store._inbox.values() if m.run_id in ids)
    if table == "durable_inputs":
        return sum(1 for key in store._inputs if key[0] in ids) + sum(1 for key in store._provided if key[0] in ids)
    raise AssertionError(table)
