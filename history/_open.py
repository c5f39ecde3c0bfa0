"""Pick a store from a database URL."""

from __future__ import annotations

import os

from ._errors import DurableError
from ._store import Store

DEFAULT_URL = "sqlite:///durable.db"
"""The embedded default: a SQLite file in the current directory, no server needed."""


def default_url() -> str:
    """``DURABLE_DATABASE_URL`` if set, else the embedded SQLite default."""
    return os.environ.get("DURABLE_DATABASE_URL") or DEFAULT_URL


def open_store(url: str | None = None, *, create_schema: bool = True) -> Store:
    """A (not yet opened) store for ``url``: ``postgresql://…``, ``sqlite:///path.db`` or ``memory://``.

    ``create_schema=False``: opening refuses a database without Durable's schema (``SchemaError``; for SQLite, a
    file that does not exist: ``DatabaseUnavailable``) instead of creating it. An older Durable schema is still
    upgraded. For tools that only look at runs (the read-only CLI commands, a dashboard).

    Raises:
        DurableError: the URL's scheme is none of these.
    """
    url = url or default_url()
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        from ._postgres import PostgresStore

        return PostgresStore(url, create_schema=create_schema)
    if scheme == "sqlite":
        from ._sqlite import SqliteStore

        return SqliteStore(url, create_schema=create_schema)
    if scheme == "memory":
        from ._memory import MemoryStore

        return MemoryStore(url)
    raise DurableError(
        f"unsupported database URL {url!r}: use postgresql://user@host/dbname, sqlite:///path/to/file.db "
        f"or memory:// (set it with Engine(url) or DURABLE_DATABASE_URL)"
    )
