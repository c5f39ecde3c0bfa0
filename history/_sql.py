"""What the two SQL stores (Postgres and SQLite) share: migration files, fence errors, the error codec."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import msgspec

from ._errors import (
    HistoryConflict,
    InputAlreadyProvided,
    InputNotPending,
    LeaseLost,
    RunAlreadyFinished,
    RunNotFound,
    SchemaError,
)
from ._events import ErrorInfo
from ._records import FINISHED_STATUSES, Append, PendingInput

_error_decoder = msgspec.json.Decoder(ErrorInfo)
_encoder = msgspec.json.Encoder()
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered schema change: ``migrations/<dialect>/0001_init.sql`` is version 1, named ``init``."""

    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """The migrations shipped for ``dialect`` ("postgres" or "sqlite"), in order, checked to be 1, 2, 3, …"""
    folder = resources.files("history").joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise SchemaError(f"the {dialect} migrations shipped with Durable are not numbered 1, 2, 3, …: {found}")
    return found


def check_not_newer(current: int, migrations: list[Migration], where: str) -> None:
    """Refuse a database whose schema is newer than this code knows (a newer Durable upgraded it)."""
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise SchemaError(
            f"{where} has Durable schema version {current}, newer than this version of Durable knows "
            f"({latest}): upgrade the durable-engine package on this machine to match the newest worker"
        )


def check_may_create(current: int, create: bool, where: str) -> None:
    """Refuse to create the schema in a database that has none when the caller only means to use one (a
    read-only command pointed at the wrong database must not leave Durable's tables there)."""
    if current == 0 and not create:
        raise SchemaError(
            f"{where} has no Durable schema: is it the database your workers use? Point --database-url or "
            f"DURABLE_DATABASE_URL at that one (a worker, `durable start` or `durable db upgrade` creates the "
            f"schema in a new database)"
        )


def lease_lost(run_id: str) -> LeaseLost:
    """The error of an append or a blocked-mark by a worker that no longer holds the run's lease."""
    return LeaseLost(f"run {run_id!r}: this worker no longer holds its lease")


def history_conflict(run_id: str, first_seq: int, next_seq: int) -> HistoryConflict:
    """The error of an append that does not start at the history's next sequence number."""
    return HistoryConflict(f"run {run_id!r}: append at event {first_seq} but the history's next event is {next_seq}")


def run_not_found(run_id: str) -> RunNotFound:
    """The error of an operation on a run id that names no run."""
    return RunNotFound(f"no run with id {run_id!r}")


def run_already_finished(run_id: str, status: str) -> RunAlreadyFinished:
    """The error of a message or an input sent to a finished run (the same words as ``MemoryStore``)."""
    return RunAlreadyFinished(f"run {run_id!r} has {status}; it takes no more events or input")


def input_already_provided(run_id: str, key: str) -> InputAlreadyProvided:
    """The error of a second answer to an input."""
    return InputAlreadyProvided(f"input {key!r} of run {run_id!r} was provided already")


def input_not_pending(run_id: str, key: str) -> InputNotPending:
    """The error of an answer to an input the run does not wait for."""
    return InputNotPending(f"run {run_id!r} does not wait for an input named {key!r}")


def side_inputs(item: Append) -> tuple[list[PendingInput], list[str]]:
    """The inputs ``item`` opens and closes, as one statement each can apply them: ``MemoryStore`` opens (the
    last of one key wins) and then closes, so a key both opened and closed is only closed, and each key once."""
    closed = list(dict.fromkeys(item.close_inputs))
    opened = {pending.key: pending for pending in item.open_inputs}
    for key in closed:
        opened.pop(key, None)
    return list(opened.values()), closed


def check_finished_list(sql_list: str, where: str) -> None:
    """Refuse (at import) a SQL list of finished statuses that is out of step with ``FINISHED_STATUSES``."""
    if set(re.findall(r"'([a-z]+)'", sql_list)) != FINISHED_STATUSES:
        raise ImportError(f"{where} is out of step with history.FINISHED_STATUSES")


def encode_error(error: ErrorInfo | None) -> str | None:
    """An ``ErrorInfo`` as JSON text for the ``error`` column."""
    return None if error is None else _encoder.encode(error).decode()


def decode_error(text: str | bytes | None) -> ErrorInfo | None:
    """The ``ErrorInfo`` stored by ``encode_error``."""
    return None if text is None else _error_decoder.decode(text)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable URL>"
