"""Captured log lines: turning a ``logging`` record or a printed line into a ``LogLine``, bounded and storable.

Shared by the worker's capture (``durable._logs``: step bodies) and the workflow instance (``replay``:
``ctx.logger``). Everything here is pure: no store, no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from ._records import LogLine

MAX_LINE_CHARS = 65_536
"""Longest message (and traceback) stored per line; the rest is cut with a marker. One giant ``print`` must not
make the append that carries it (and its step's outcome) huge."""

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
"""Attributes every ``LogRecord`` has: the others were given with ``extra=``."""

_json = msgspec.json.Encoder()


def clean_text(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (with a marker saying how much was cut), storable by every store:
    NUL characters (PostgreSQL's text refuses them) and lone surrogates (not UTF-8) are escaped."""
    if len(text) > limit:
        text = f"{text[:limit]}… [truncated: {len(text) - limit:,} more characters]"
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text


def record_extra(record: logging.LogRecord) -> bytes | None:
    """The record's ``extra=`` fields as a JSON object (a value JSON cannot hold is stored as its ``repr``)."""
    fields = {key: value for key, value in record.__dict__.items() if key not in _STANDARD}
    if not fields:
        return None
    try:
        return _json.encode(fields)
    except (TypeError, ValueError, OverflowError):
        return _json.encode({key: _jsonable(value) for key, value in fields.items()})


def _jsonable(value: Any) -> Any:
    try:
        _json.encode(value)
    except (TypeError, ValueError, OverflowError):
        return repr(value)
    return value


def record_text(record: logging.LogRecord) -> tuple[str, str | None]:
    """The record's message (its arguments merged) and its formatted traceback and stack, if any."""
    try:
        message = record.getMessage()
    except Exception:  # bad arguments for the format: logging itself would report it; keep what there is
        message = f"{record.msg!r} % {record.args!r}"
    exc = None
    if record.exc_info and record.exc_info[0] is not None:
        exc = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        exc = record.exc_text
    if record.stack_info:
        exc = f"{exc}\n{record.stack_info}" if exc else record.stack_info
    return message, exc


def line_from_record(
    record: logging.LogRecord,
    run_id: str,
    step: str | None = None,
    command_id: int | None = None,
    attempt: int | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
) -> LogLine:
    """A ``LogLine`` of a ``logging`` record, bounded and cleaned."""
    message, exc = record_text(record)
    return LogLine(
        run_id=run_id,
        at=datetime.fromtimestamp(record.created, UTC),
        level=record.levelno,
        level_name=record.levelname,
        logger=record.name,
        message=clean_text(message),
        step=step,
        command_id=command_id,
        attempt=attempt,
        exc=None if exc is None else clean_text(exc),
        extra=record_extra(record),
        trace_id=trace_id,
        span_id=span_id,
    )


def line_size(line: LogLine) -> int:
    """What a line counts against a per-attempt byte limit: its text (characters) and its extra fields."""
    return len(line.message) + len(line.exc or "") + len(line.extra or b"")


class LogQuery(msgspec.Struct, frozen=True):
    """What ``Store.read_logs`` was asked for: a run's lines with ``id > after_id``, at most ``limit``, filtered by
    step name, attempt number and lowest level (``None``: any)."""

    run_id: str
    step: str | None
    attempt: int | None
    min_level: int | None
    after_id: int
    limit: int

    @property
    def filters(self) -> tuple[bool, bool, bool]:
        """Which of step, attempt and lowest level filter: the SQL stores build one statement per combination."""
        return self.step is not None, self.attempt is not None, self.min_level is not None

    @property
    def arguments(self) -> list[Any]:
        """The SQL stores' parameters: run id, after id, limit, then the filters given, in that order."""
        given = [value for value in (self.step, self.attempt, self.min_level) if value is not None]
        return [self.run_id, self.after_id, self.limit, *given]


class ReadsLogs:
    """``Store.read_logs`` with its arguments gathered once; a store implements ``_read_log_lines`` (the way
    ``ListsRuns`` serves ``list_runs``)."""

    async def read_logs(
        self,
        run_id: str,
        *,
        step: str | None = None,
        attempt: int | None = None,
        min_level: int | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[LogLine]:
        """The run's log lines with ``id > after_id``, by id, filtered by step name, attempt number and lowest
        level; at most ``limit``."""
        query = LogQuery(run_id, step, attempt, min_level, after_id, max(limit, 0))
        return await self._read_log_lines(query)

    async def _read_log_lines(self, query: LogQuery) -> list[LogLine]:
        raise NotImplementedError


def select_lines(lines: Iterable[LogLine], query: LogQuery) -> list[LogLine]:
    """``Store.read_logs`` over lines in id order (the memory store's reading; the SQL stores filter alike)."""
    found: list[LogLine] = []
    for line in lines:
        if len(found) >= query.limit:
            break
        if line.id <= query.after_id:
            continue
        if query.step is not None and line.step != query.step:
            continue
        if query.attempt is not None and line.attempt != query.attempt:
            continue
        if query.min_level is not None and line.level < query.min_level:
            continue
        found.append(line)
    return found
