"""Fixtures shared by the whole suite, in sections: async tests, PostgreSQL, stores.

Async tests: just write ``async def test_…`` (and ``async def``/async-generator fixtures), no marker. They run on
asyncio through anyio's own pytest plugin (installed with anyio), which this file switches to its "auto" mode;
an async fixture and the test that uses it share one event loop, created per test. Do not add pytest-asyncio.

PostgreSQL: ``postgres_url`` is a fresh database per test, cloned from a template migrated once per session
(``CREATE DATABASE … TEMPLATE …``, which STYLE.md asks for instead of truncating; the next clone is made while
the current test runs), dropped at teardown. The server comes from ``DURABLE_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``, trust auth). When it is unreachable, Postgres tests are skipped
with a message naming it, or fail when the ``CI`` environment variable is set, so CI never goes green by
skipping. Tests that need the server get the ``postgres`` marker automatically (``-m "not postgres"``).

Stores: ``store`` is an opened store of each kind ("memory", "sqlite", "postgres"); ``store_kind`` says which,
``store_url`` is its URL and ``new_store`` opens more stores on the same database (another "process").
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

import history

_T = TypeVar("_T")

# --- async tests ---------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    # The same as `--anyio-mode=auto`: every coroutine test runs under anyio's plugin, without a marker.
    if config.getoption("anyio_mode", default=None) is None:
        config.option.anyio_mode = "auto"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run async tests and fixtures on asyncio only (the engine's runtime)."""
    return "asyncio"


def run_async(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from synchronous code, on a thread of its own so that it never meets the
    event loop of the test being set up."""

    async def main() -> _T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def sqlite_url_with_schema(path: Path) -> str:
    """``sqlite:///<path>``, a new database with Durable's schema as a worker leaves it: the commands that only
    look at runs refuse a database without one (``create_schema=False``)."""
    url = f"sqlite:///{path}"
    run_async(lambda: history.open_store(url).upgrade())
    return url


# --- PostgreSQL ----------------------------------------------------------------------------------------------

POSTGRES_ENV = "DURABLE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tag every test that needs the server with the `postgres` marker (`-m "not postgres"` deselects them): the
    # ones that request a Postgres fixture, and parametrized ones whose parameter is "postgres" (a fixture that
    # picks a store kind and calls request.getfixturevalue("postgres_url")).
    needs = {"postgres_url", "postgres_server_url", "postgres_template", "_postgres_clones"}
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if needs & set(getattr(item, "fixturenames", ())) or "postgres" in params.values():
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The test server's URL, checked reachable (skip, or fail under CI, when it is not)."""
    url = os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES_URL
    try:
        run_async(lambda: _admin(url, "SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        message = (
            f"PostgreSQL is not reachable at {url} ({exc or type(exc).__name__}): start it, or set {POSTGRES_ENV} "
            f"to a server where this user may create databases"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the PostgreSQL service is missing: {message}", pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def postgres_template(postgres_server_url: str) -> Iterator[str]:
    """A database migrated to the current schema, built once per session, to clone per test.

    Its name is unique to the session, so two test sessions on one server (two engineers, two CI jobs) never
    drop each other's template.
    """
    name = f"durable_template_{secrets.token_hex(4)}"
    run_async(lambda: _admin(postgres_server_url, f'CREATE DATABASE "{name}"'))

    async def migrate() -> None:
        store = history.open_store(with_database(postgres_server_url, name))
        await store.open()
        await store.close()

    try:
        run_async(migrate)
        yield name
    finally:
        run_async(lambda: _admin(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class _Clones:
    """Databases cloned from the template, one made ahead on a thread of its own: ``CREATE DATABASE … TEMPLATE``
    writes the whole template to the WAL (about 0.3 s on a small machine), so the next test's database is made
    while the current test runs."""

    def __init__(self, server_url: str, template: str) -> None:
        self._server_url = server_url
        self._template = template
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="postgres-clones")
        self._next = self._thread.submit(self._create)

    def _create(self) -> str:
        name = f"durable_t_{secrets.token_hex(6)}"
        asyncio.run(_admin(self._server_url, f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"'))
        return name

    def take(self) -> str:
        """A fresh clone's name (the caller drops it)."""
        name = self._next.result()
        self._next = self._thread.submit(self._create)
        return name

    def close(self) -> None:
        """Drop the clone made ahead and stop the thread."""
        try:
            spare = self._next.result()
            run_async(lambda: _admin(self._server_url, f'DROP DATABASE IF EXISTS "{spare}" WITH (FORCE)'))
        finally:
            self._thread.shutdown()


@pytest.fixture(scope="session")
def _postgres_clones(postgres_server_url: str, postgres_template: str) -> Iterator[_Clones]:
    clones = _Clones(postgres_server_url, postgres_template)
    try:
        yield clones
    finally:
        clones.close()


@pytest.fixture
def postgres_url(postgres_server_url: str, _postgres_clones: _Clones) -> Iterator[str]:
    """The URL of a fresh, migrated, empty database of this test's own (dropped afterwards)."""
    name = _postgres_clones.take()
    try:
        yield with_database(postgres_server_url, name)
    finally:
        run_async(lambda: _admin(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- stores --------------------------------------------------------------------------------------------------

STORE_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which store this test runs against: "memory", "sqlite" or "postgres"."""
    kind: str = request.param
    return kind


@pytest.fixture
def store_url(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of an empty database of ``store_kind`` for this test."""
    if store_kind == "memory":
        return "memory://"
    if store_kind == "sqlite":
        return f"sqlite:///{tmp_path / 'durable.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine_url(store_url: str) -> str:
    """The database URL an ``Engine`` test runs on: ``store_url`` under the name engine tests read best with."""
    return store_url


@pytest.fixture
async def new_store(store_url: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """A factory opening stores on this test's database, each closed at teardown. For "memory" every call gives
    a separate, empty store (there is no database to share)."""
    opened: list[history.Store] = []

    async def factory(url: str | None = None) -> history.Store:
        store = history.open_store(url or store_url)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(new_store: Callable[..., Awaitable[history.Store]]) -> history.Store:
    """An opened, empty store of each kind."""
    return await new_store()
