"""What the two SQL stores (Postgres and SQLite) share: migration files, fence errors, the error codec."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import msgspec

from ._errors import HistoryConflict, LeaseLost, SchemaError
from ._events import ErrorInfo

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


def lease_lost(run_id: str) -> LeaseLost:
    """The error of an append or a blocked-mark by a worker that no longer holds the run's lease."""
    return LeaseLost(f"run {run_id!r}: this worker no longer holds its lease")


def history_conflict(run_id: str, first_seq: int, next_seq: int) -> HistoryConflict:
    """The error of an append that does not start at the history's next sequence number."""
    return HistoryConflict(f"run {run_id!r}: append at event {first_seq} but the history's next event is {next_seq}")


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
