"""The PostgreSQL store's captured logs: the statements that write and read ``durable_logs``, and the arrays the
append statement takes for the lines that commit with a step's outcome (``APPEND_FULL``'s ``logged``).

Round trips: ``write_logs`` 1 (all lines in one statement), ``read_logs`` 1; lines in an append cost none.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from ._logs import LogQuery, ReadsLogs
from ._records import Append, LogLine

LOG_COLUMNS = ("id, run_id, at, level, level_name, logger, stream, step, command_id, attempt, message, exc, extra, "
               "trace_id, span_id")
"""The columns of ``durable_logs`` in an order that builds a ``LogLine`` by keyword (see ``_line``)."""

LOG_ARRAYS = 14
"""How many parallel arrays carry log lines (``log_columns``): every column but ``id``."""

# Insert log lines given as fourteen parallel arrays (one element per line), unfenced: the live tail of a long
# step (the rest of its lines commit with its outcome, in APPEND_FULL).
WRITE_LOGS = """
INSERT INTO durable_logs (run_id, at, level, level_name, logger, stream, step, command_id, attempt, message, exc,
                          extra, trace_id, span_id)
SELECT run_id, at, level, level_name, logger, stream, step, command_id, attempt, message, exc, extra, trace_id,
       span_id
FROM unnest($1::text[], $2::timestamptz[], $3::integer[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::integer[], $9::integer[], $10::text[], $11::text[], $12::bytea[], $13::text[], $14::text[])
    WITH ORDINALITY AS l(run_id, at, level, level_name, logger, stream, step, command_id, attempt, message, exc,
                         extra, trace_id, span_id, ord)
ORDER BY ord  -- ids in the order the lines were written"""


@cache
def read_logs(by_step: bool, by_attempt: bool, by_level: bool) -> str:
    """Run ``$1``'s lines with ``id > $2``, by id, at most ``$3``; filtered by step, attempt and lowest level
    (the next parameters, in that order, when given). One statement per combination, like ``list_runs``; each
    reads the run's range of ``durable_logs_run`` from ``$2``."""
    where, args = ["run_id = $1", "id > $2"], 3
    for flag, condition in ((by_step, "step = "), (by_attempt, "attempt = "), (by_level, "level >= ")):
        if flag:
            args += 1
            where.append(f"{condition}${args}")
    return f"SELECT {LOG_COLUMNS} FROM durable_logs WHERE {' AND '.join(where)} ORDER BY id LIMIT $3"


def log_columns(lines: Sequence[LogLine], columns: list[list[Any]] | None = None) -> list[list[Any]]:
    """The fourteen parallel arrays of ``lines`` (``WRITE_LOGS``'s ``$1``-``$14``, ``APPEND_FULL``'s
    ``$28``-``$41``), added to ``columns`` when given."""
    if columns is None:
        columns = [[] for _ in range(LOG_ARRAYS)]
    runs, ats, levels, names, loggers, streams, steps, cids, attempts, messages, excs, extras, traces, spans = columns
    for line in lines:
        runs.append(line.run_id)
        ats.append(line.at)
        levels.append(line.level)
        names.append(line.level_name)
        loggers.append(line.logger)
        streams.append(line.stream)
        steps.append(line.step)
        cids.append(line.command_id)
        attempts.append(line.attempt)
        messages.append(line.message)
        excs.append(line.exc)
        extras.append(line.extra)
        traces.append(line.trace_id)
        spans.append(line.span_id)
    return columns


def log_args(items: Sequence[Append]) -> list[list[Any]]:
    """``APPEND_FULL``'s log arrays for a batch: the lines of every item (only applied items' are inserted)."""
    columns: list[list[Any]] = [[] for _ in range(LOG_ARRAYS)]
    for item in items:
        if item.logs:
            log_columns(item.logs, columns)
    return columns


def _line(row: Any) -> LogLine:
    (line_id, run_id, at, level, level_name, logger, stream, step, command_id, attempt, message, exc, extra,
     trace_id, span_id) = row
    return LogLine(run_id=run_id, at=at, level=level, level_name=level_name, logger=logger, message=message,
                   stream=stream, step=step, command_id=command_id, attempt=attempt, exc=exc,
                   extra=None if extra is None else bytes(extra), trace_id=trace_id, span_id=span_id, id=line_id)


class PostgresLogs(ReadsLogs):
    """``write_logs`` and ``read_logs`` of ``PostgresStore`` (a mixin: it uses the store's pool, ``_db``)."""

    _db: Any

    async def write_logs(self, lines: Sequence[LogLine]) -> None:
        """Store log lines now, unfenced, in one statement (numbered in order by the identity column)."""
        if lines:
            await self._db.execute(WRITE_LOGS, *log_columns(lines))

    async def _read_log_lines(self, query: LogQuery) -> list[LogLine]:
        """The run's log lines after ``after_id``, by id, filtered (``Store.read_logs``); one round trip."""
        return [_line(row) for row in await self._db.fetch(read_logs(*query.filters), *query.arguments)]
