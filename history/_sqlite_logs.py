"""The SQLite store's captured logs: the statements on ``durable_logs`` and the mixin that runs them.

Lines in an append are inserted by ``insert_logs`` inside the append's transaction (same commit as the step's
outcome); ``write_logs`` is a transaction of its own (the live tail of a long step).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from ._logs import LogQuery, ReadsLogs
from ._records import LogLine

_T = TypeVar("_T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Add one log line (?1 run id … ?12 extra, ?13 trace id, ?14 span id); its id is the next of the AUTOINCREMENT
# sequence.
INSERT_LOG = """
INSERT INTO durable_logs (run_id, at, level, level_name, logger, stream, step, command_id, attempt, message, exc,
                          extra, trace_id, span_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"""

_COLUMNS = ("id, run_id, at, level, level_name, logger, stream, step, command_id, attempt, message, exc, extra, "
            "trace_id, span_id")


@cache
def read_logs(by_step: bool, by_attempt: bool, by_level: bool) -> str:
    """Run ``?1``'s lines with ``id > ?2``, by id, at most ``?3``; filtered by step, attempt and lowest level
    (the next parameters, in that order, when given). Reads the run's range of ``durable_logs_run``."""
    where, args = ["run_id = ?1", "id > ?2"], 3
    for flag, condition in ((by_step, "step = "), (by_attempt, "attempt = "), (by_level, "level >= ")):
        if flag:
            args += 1
            where.append(f"{condition}?{args}")
    return f"SELECT {_COLUMNS} FROM durable_logs WHERE {' AND '.join(where)} ORDER BY id LIMIT ?3"


def insert_logs(db: sqlite3.Connection, lines: Sequence[LogLine]) -> None:
    """Insert ``lines`` in order, inside the caller's transaction."""
    db.executemany(
        INSERT_LOG,
        [(line.run_id, (line.at - _EPOCH) // _MICROSECOND, line.level, line.level_name, line.logger, line.stream,
          line.step, line.command_id, line.attempt, line.message, line.exc, line.extra, line.trace_id, line.span_id)
         for line in lines],
    )  # fmt: skip


def _line(row: Sequence[Any]) -> LogLine:
    (line_id, run_id, at, level, level_name, logger, stream, step, command_id, attempt, message, exc, extra,
     trace_id, span_id) = row
    return LogLine(run_id=run_id, at=_EPOCH + timedelta(microseconds=at), level=level, level_name=level_name,
                   logger=logger, message=message, stream=stream, step=step, command_id=command_id,
                   attempt=attempt, exc=exc, extra=extra, trace_id=trace_id, span_id=span_id, id=line_id)


class SqliteLogs(ReadsLogs):
    """``write_logs`` and ``read_logs`` of ``SqliteStore`` (a mixin: it uses the store's thread and connection)."""

    if TYPE_CHECKING:  # provided by SqliteStore

        async def _call(self, fn: Callable[..., _T], *args: Any) -> _T: ...

        async def _write(self, fn: Callable[..., _T], *args: Any) -> _T: ...

        def _connection(self) -> sqlite3.Connection: ...

    async def write_logs(self, lines: Sequence[LogLine]) -> None:
        """Store log lines now (unfenced), in one transaction."""
        if lines:
            await self._write(_write_logs, list(lines))

    async def _read_log_lines(self, query: LogQuery) -> list[LogLine]:
        """The run's log lines after ``after_id``, by id, filtered (``Store.read_logs``)."""
        return await self._call(self._read_logs, read_logs(*query.filters), query.arguments)

    def _read_logs(self, sql: str, args: list[Any]) -> list[LogLine]:
        return [_line(row) for row in self._connection().execute(sql, args)]


def _write_logs(db: sqlite3.Connection, _now: int, lines: list[LogLine]) -> None:
    insert_logs(db, lines)
