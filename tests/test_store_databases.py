"""What only the database stores promise, beyond the shared contract of ``test_store_contract.py``: the database
itself refuses to change events (invariant 1), several processes share one database (claims, wake-ups,
migrations), and a database that is down, missing, or not a database is reported with what to do.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

import history
from history import COMPLETED, DatabaseUnavailable, DurableError, RunCompleted, SchemaError, Store
from history._sql import load_migrations

from .conftest import with_database
from .test_store_contract import append, claim_one, new_run, raw, start, step

VERSIONS = [m.version for m in load_migrations("postgres")]
"""Every schema version shipped (``history/migrations/<dialect>/NNNN_*.sql``), the same for both databases."""
assert [m.version for m in load_migrations("sqlite")] == VERSIONS


class opened:
    """``async with opened(url) as store``: a store opened for the block (another "process" on a database)."""

    def __init__(self, url: str) -> None:
        self.store = history.open_store(url)

    async def __aenter__(self) -> Store:
        await self.store.open()
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()


async def finished_and_running_runs(store: Store) -> tuple[str, str]:
    """A finished run and a running one, each with three events."""
    done = await start(store)
    assert await store.append([append(done, [RunCompleted(result=raw(1)), *step(1)[:1]], status=COMPLETED)]) == [None]
    going = await start(store)
    assert await store.append([append(going, step(1))]) == [None]
    return done.run.id, going.run.id


async def test_postgres_itself_refuses_to_update_or_delete_events(postgres_url: str) -> None:
    async with opened(postgres_url) as store:
        done, going = await finished_and_running_runs(store)
    conn = await asyncpg.connect(postgres_url)
    try:
        for sql in (
            "UPDATE durable_events SET data = '{}'::bytea WHERE run_id = $1",
            "UPDATE durable_events SET seq = seq + 10 WHERE run_id = $1",
            "DELETE FROM durable_events WHERE run_id = $1",
        ):
            for run_id in (done, going):
                with pytest.raises(asyncpg.PostgresError, match="append-only"):
                    await conn.execute(sql, run_id)
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("TRUNCATE durable_events")
        async with conn.transaction():  # a retention job: only the events of finished runs, and never UPDATE
            await conn.execute("SET LOCAL durable.allow_retention = on")
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                async with conn.transaction():
                    await conn.execute("DELETE FROM durable_events WHERE run_id = $1", going)
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                async with conn.transaction():
                    await conn.execute("UPDATE durable_events SET at = now() WHERE run_id = $1", done)
            assert await conn.execute("DELETE FROM durable_events WHERE run_id = $1", done) == "DELETE 3"
        assert await conn.fetchval("SELECT count(*) FROM durable_events WHERE run_id = $1", going) == 3
        with pytest.raises(asyncpg.PostgresError, match="append-only"):  # SET LOCAL ended with its transaction
            await conn.execute("DELETE FROM durable_events WHERE run_id = $1", going)
    finally:
        await conn.close()


async def test_sqlite_itself_refuses_to_update_or_delete_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    async with opened(url) as store:
        done, going = await finished_and_running_runs(store)
    db = sqlite3.connect(tmp_path / "d.db", isolation_level=None)
    try:
        for sql in (
            "UPDATE durable_events SET data = x'7b7d' WHERE run_id = ?",
            "DELETE FROM durable_events WHERE run_id = ?",
        ):
            for run_id in (done, going):
                with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                    db.execute(sql, (run_id,))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM durable_events")
        db.execute("BEGIN IMMEDIATE")  # a retention job: only the events of finished runs, and never UPDATE
        db.execute("UPDATE durable_settings SET allow_retention = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM durable_events WHERE run_id = ?", (going,))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE durable_events SET at = 0 WHERE run_id = ?", (done,))
        assert db.execute("DELETE FROM durable_events WHERE run_id = ?", (done,)).rowcount == 3
        db.execute("UPDATE durable_settings SET allow_retention = 0")
        db.execute("COMMIT")
        assert db.execute("SELECT count(*) FROM durable_events WHERE run_id = ?", (going,)).fetchone() == (3,)
    finally:
        db.close()


async def test_postgres_wakeups_reach_other_processes_and_not_their_own_echo(postgres_url: str) -> None:
    async with opened(postgres_url) as first, opened(postgres_url) as second:
        signal = first.hub.subscribe_work()
        try:
            await second.create_run(new_run("x"))
            assert await signal.wait(5)  # a NOTIFY from the other store
            claim = await claim_one(second)
            waiter = asyncio.create_task(first.hub.wait_finished("x", 5))
            await asyncio.sleep(0.05)
            assert await second.append([append(claim, [RunCompleted(result=raw(1))], status=COMPLETED)]) == [None]
            assert await waiter
            await first.create_run(new_run("y"))
            assert await signal.wait(1)  # woken locally, right after the commit
            assert not await signal.wait(0.3)  # and not once more by the echo of its own NOTIFY
        finally:
            signal.close()


async def test_postgres_listener_reconnects_after_losing_its_connection(postgres_url: str) -> None:
    listeners = """SELECT pid FROM pg_stat_activity
                   WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"""
    admin = await asyncpg.connect(postgres_url)
    try:
        async with opened(postgres_url) as first, opened(postgres_url) as second:
            signal = first.hub.subscribe_work()
            old = {row[0] for row in await admin.fetch(listeners)}
            assert len(old) == 2
            await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", list(old))
            for _ in range(100):
                new = {row[0] for row in await admin.fetch(listeners)}
                if len(new) == 2 and not new & old:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the stores did not listen again within 5 s")
            await signal.wait(0)  # forget the wake-up sent on reconnecting
            await second.create_run(new_run())
            assert await signal.wait(5)
            signal.close()
    finally:
        await admin.close()


async def test_a_down_postgres_is_reported_with_its_url_and_what_to_do() -> None:
    store = history.open_store("postgresql://durable:s3cret@127.0.0.1:1/nodb")
    with pytest.raises(DatabaseUnavailable) as info:
        await store.open()
    message = str(info.value)
    assert "postgresql://durable:***@127.0.0.1:1/nodb" in message
    assert "s3cret" not in message and "DURABLE_DATABASE_URL" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


class CuttableLink:
    """A TCP relay to the real PostgreSQL that the test can cut (every connection reset, new ones refused) and
    mend on the same port: a server or network going away under an open store, without stopping the server."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.port = 0

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._links.append((writer, up_writer))
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for down, up in self._links:
            down.transport.abort()
            up.transport.abort()
        self._links.clear()
        await asyncio.sleep(0.05)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def test_a_connection_lost_after_open_is_reported_and_a_retry_works_once_it_is_back(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    link = CuttableLink(parts.hostname or "127.0.0.1", parts.port or 5432)
    await link.open()
    url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{link.port}"))
    store = history.open_store(url)
    await store.open()
    try:
        await store.create_run(new_run("before"))
        await link.cut()
        for call in (lambda: store.get_run("before"), lambda: store.create_run(new_run("during"))):
            with pytest.raises(DatabaseUnavailable) as info:
                await call()
            assert f"lost the connection to PostgreSQL at {store.url}" in str(info.value)
            assert "retry" in str(info.value) and isinstance(info.value.__cause__, OSError | asyncpg.PostgresError)
        await link.open()  # the server is reachable again, on the same port
        before = await store.get_run("before")
        assert before is not None and before.id == "before"  # the same store goes on, with new connections
        assert await store.get_run("during") is None  # the failed create left nothing behind
    finally:
        await store.close()
        await link.cut()


async def test_a_missing_postgres_database_says_to_create_it(postgres_server_url: str) -> None:
    store = history.open_store(with_database(postgres_server_url, "durable_no_such_database"))
    with pytest.raises(DatabaseUnavailable, match="createdb"):
        await store.open()


@pytest.mark.parametrize("content", [b"this is not a database, just some text\n" * 50, bytes(range(256)) * 8])
async def test_a_file_that_is_not_sqlite_is_reported(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(content)
    with pytest.raises(DatabaseUnavailable, match="is not a SQLite database") as info:
        await history.open_store(f"sqlite:///{path}").open()
    assert str(path) in str(info.value)


async def test_a_sqlite_file_in_a_missing_directory_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "d.db"
    with pytest.raises(DatabaseUnavailable, match="does not exist") as info:
        await history.open_store(f"sqlite:///{path}").open()
    assert str(path.parent) in str(info.value)


async def test_sqlite_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:///relative.db", f"sqlite:///{tmp_path / 'absolute.db'}", "sqlite:///:memory:"):
        async with opened(url) as store:
            await start(store)
    assert (tmp_path / "relative.db").exists() and (tmp_path / "absolute.db").exists()
    for bad in ("sqlite://relative.db", "sqlite:///"):
        with pytest.raises(DurableError, match=r"sqlite:////absolute/path\.db"):
            history.open_store(bad)


async def test_postgres_migrations_run_once_however_many_processes_open_at_once(postgres_server_url: str) -> None:
    from history._postgres import PostgresStore

    name = f"durable_m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_server_url, name)
    stores = [history.open_store(url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert await PostgresStore(url).upgrade() == []
        conn = await asyncpg.connect(url)
        try:
            assert [r[0] for r in await conn.fetch("SELECT version FROM durable_schema_version")] == VERSIONS
            await conn.execute("INSERT INTO durable_schema_version (version, name) VALUES (99, 'future')")
        finally:
            await conn.close()
        with pytest.raises(SchemaError, match="newer than this version of Durable"):
            await history.open_store(url).open()
    finally:
        await asyncio.gather(*(s.close() for s in stores))
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_postgres_upgrade_applies_and_reports_versions(postgres_server_url: str) -> None:
    from history._postgres import PostgresStore

    name = f"durable_m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(postgres_server_url, name)
        assert await PostgresStore(url).upgrade() == VERSIONS
        assert await PostgresStore(url).upgrade() == []
        foreign = with_database(postgres_server_url, name + "_x")
        await admin.execute(f'CREATE DATABASE "{name}_x"')
        conn = await asyncpg.connect(foreign)
        await conn.execute("CREATE TABLE durable_runs (id int)")
        await conn.close()
        with pytest.raises(SchemaError, match="not create"):
            await PostgresStore(foreign).upgrade()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}_x" WITH (FORCE)')
        await admin.close()


async def test_sqlite_migrations_are_safe_to_race_and_refuse_a_newer_schema(tmp_path: Path) -> None:
    from history._sqlite import SqliteStore

    url = f"sqlite:///{tmp_path / 'd.db'}"
    stores = [history.open_store(url) for _ in range(5)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert await SqliteStore(url).upgrade() == []
    assert await SqliteStore(f"sqlite:///{tmp_path / 'fresh.db'}").upgrade() == VERSIONS
    db = sqlite3.connect(tmp_path / "d.db")
    with db:
        assert db.execute("SELECT version FROM durable_schema_version").fetchall() == [(v,) for v in VERSIONS]
        db.execute("INSERT INTO durable_schema_version VALUES (99, 'future', 0)")
    db.close()
    with pytest.raises(SchemaError, match="newer than this version of Durable"):
        await history.open_store(url).open()


async def test_a_sqlite_write_that_waits_too_long_for_the_lock_is_reported(tmp_path: Path) -> None:
    from history._sqlite import SqliteStore

    store = SqliteStore(f"sqlite:///{tmp_path / 'd.db'}", busy_timeout=0.1)
    await store.open()
    other = sqlite3.connect(tmp_path / "d.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(DatabaseUnavailable, match="stayed locked by another writer"):
            await store.create_run(new_run())
        assert await store.get_run("x") is None  # reads go on meanwhile (WAL)
        other.execute("ROLLBACK")
        await store.create_run(new_run("x"))
    finally:
        other.close()
        await store.close()
