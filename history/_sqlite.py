"""The SQLite store: the embedded default, runs and histories in one file, no server.

URLs: ``sqlite:///relative/path.db`` (relative to the current directory), ``sqlite:////absolute/path.db``, and
``sqlite:///:memory:`` (a private in-memory database that lives as long as the store).

``sqlite3`` blocks, so each store owns one background thread with its own connection; every call is a function
submitted to that thread and awaited, and the event loop never waits on the disk. The file is in WAL mode with
a busy timeout, so several processes can share it: writes take the lock up front (``BEGIN IMMEDIATE``) and are
serialized, reads run beside them. Wake-ups (work, finished runs, inbox messages) reach this process's hub only;
other processes see changes when they poll, which workers and waiters do anyway.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

from . import _sqlite_queries as q
from ._codec import decode_event, encode_event, event_type
from ._errors import DatabaseUnavailable, DurableError, SchemaError
from ._events import RecordedEvent
from ._listing import ListsRuns, RunQuery, page_from, stored_step
from ._notify import Hub
from ._records import (
    FINISHED_STATUSES,
    UNSET,
    Append,
    Claim,
    Heartbeat,
    Message,
    NewRun,
    PendingInput,
    QueueConfig,
    QueueStats,
    RunPage,
    RunRecord,
    Unset,
    child_outcome,
)
from ._sql import (
    Migration,
    check_finished_list,
    check_may_create,
    check_not_newer,
    decode_error,
    encode_error,
    history_conflict,
    input_already_provided,
    input_not_pending,
    lease_lost,
    load_migrations,
    run_already_finished,
    run_not_found,
    side_inputs,
)
from ._sqlite_claims import by_queue, choose
from ._sqlite_listing import list_runs_args
from ._sqlite_live import SqliteLive
from ._sqlite_logs import SqliteLogs, insert_logs
from ._sqlite_metrics import SqliteMetrics

_T = TypeVar("_T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_FIELDS = RunRecord.__struct_fields__
_ERROR_COLUMN = _FIELDS.index("error")
_TIME_COLUMNS = tuple(
    _FIELDS.index(name)
    for name in ("created_at", "updated_at", "started_at", "finished_at", "wake_at", "lease_expires_at")
)
_json = msgspec.json.Encoder()
if tuple(q.RUN_COLUMNS.split(", ")) != _FIELDS:  # rows are turned into records by position
    raise ImportError("history._sqlite_queries.RUN_COLUMNS is out of step with the fields of RunRecord")
check_finished_list(q.FINISHED, "history._sqlite_queries.FINISHED")


def sqlite_path(url: str) -> str:
    """The file path (or ``:memory:``) of a ``sqlite:///…`` URL.

    Raises:
        DurableError: the URL is not of one of the documented forms.
    """
    prefix = "sqlite:///"
    path = url[len(prefix) :].split("?", 1)[0] if url.lower().startswith(prefix) else ""
    if not path:
        raise DurableError(
            f"invalid SQLite URL {url!r}: use sqlite:///relative/path.db, sqlite:////absolute/path.db or "
            f"sqlite:///:memory:"
        )
    return path


def _us(moment: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch (exact, unlike a float)."""
    return (moment - _EPOCH) // _MICROSECOND


def _us_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else _us(moment)


def _time(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _time_or_none(us: int | None) -> datetime | None:
    return None if us is None else _time(us)


def _now_us() -> int:
    return time.time_ns() // 1000


def _run(row: Sequence[Any]) -> RunRecord:
    """A ``RunRecord`` from the ``RUN_COLUMNS`` of a row, by position."""
    fields = list(row)
    for index in _TIME_COLUMNS:
        if fields[index] is not None:
            fields[index] = _time(fields[index])
    fields[_ERROR_COLUMN] = decode_error(fields[_ERROR_COLUMN])
    return RunRecord(*fields)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would commit the enclosing transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    leftover = [line for line in current.splitlines() if line.strip() and not line.lstrip().startswith("--")]
    if leftover:
        raise SchemaError(f"unterminated statement at the end of a SQLite migration: {current.strip()[:80]!r}")
    return statements


class SqliteStore(ListsRuns, SqliteLive, SqliteMetrics, SqliteLogs):
    """Runs and histories in a SQLite file. Obtain one with ``history.open_store("sqlite:///durable.db")``.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``.
        busy_timeout: seconds a write waits for another process's write to finish before failing.
        synchronous: SQLite's ``synchronous`` setting. ``"full"`` (the default) makes every commit survive a
            power cut; ``"normal"`` survives a crash of the process but not of the machine, and is faster.
    """

    def __init__(
        self, url: str, *, busy_timeout: float = 10.0, synchronous: str = "full", create_schema: bool = True
    ) -> None:
        self.url = url
        self.create_schema = create_schema
        self.hub = Hub()
        self.path = sqlite_path(url)
        if synchronous.lower() not in ("off", "normal", "full", "extra"):
            raise ValueError(f"synchronous must be 'full', 'normal', 'extra' or 'off', not {synchronous!r}")
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # used only on the executor's thread
        self._applied: list[int] = []  # the migrations the last open() applied
        self._migrations = load_migrations("sqlite")

    # --- plumbing ---------------------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the store's thread and await its result."""
        if self._executor is None:
            raise DurableError(f"the SQLite store {self.url} is not open: call `await store.open()` first")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _write(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(db, now_us, *args)`` in a write transaction on the store's thread."""
        return await self._call(self._transaction, fn, *args)

    def _transaction(self, fn: Callable[..., _T], *args: Any) -> _T:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")  # take the write lock now: a deferred upgrade could fail with SQLITE_BUSY
        except sqlite3.OperationalError as exc:  # the busy timeout ran out
            raise DatabaseUnavailable(
                f"the SQLite database {self.path} stayed locked by another writer for {self._busy_timeout:g} s "
                f"({exc}); retry, or use PostgreSQL for many concurrent workers"
            ) from None
        try:
            # "now" is read once the lock is held, so lease checks are not stale after waiting for it.
            result = fn(db, _now_us(), *args)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    def _connection(self) -> sqlite3.Connection:
        assert self._db is not None, "the store's thread has no connection"
        return self._db

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the file, switch it to WAL mode and bring the schema up to date.

        Raises:
            DatabaseUnavailable: the file cannot be created or opened, or is not a SQLite database.
            SchemaError: the schema is newer than this code, or has Durable's table names without its history.
        """
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="durable-sqlite")
        try:
            await self._call(self._open_sync)
        except BaseException:
            await self.close()
            raise

    async def upgrade(self) -> list[int]:
        """Apply the migrations this database lacks; return the versions applied (for ``durable db upgrade``)."""
        if self._executor is not None:
            return await self._call(self._migrate_sync)
        await self.open()  # open() upgrades; report what it did
        try:
            return self._applied
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the connection and stop the store's thread."""
        self._stop_tail()
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        finally:
            executor.shutdown(wait=True)  # the thread is idle by now: this returns at once

    def _open_sync(self) -> None:
        try:
            if self.path != ":memory:" and not self.create_schema and not os.path.exists(self.path):
                raise DatabaseUnavailable(
                    f"there is no SQLite database {os.path.abspath(self.path)}: run this where your workers run, or "
                    f"point --database-url or DURABLE_DATABASE_URL at their database"
                )
            if self.path != ":memory:":
                folder = os.path.dirname(os.path.abspath(self.path))
                if not os.path.isdir(folder):
                    raise DatabaseUnavailable(
                        f"cannot create the SQLite database {self.path}: the directory {folder} does not exist. "
                        f"Create it, or set DURABLE_DATABASE_URL to sqlite:///<a path in an existing directory>."
                    )
            self._db = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, cached_statements=256
            )
            self._enable_wal(self._db)
            self._db.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            self._applied = self._migrate_sync()
        except sqlite3.DatabaseError as exc:
            self._close_sync()
            raise DatabaseUnavailable(self._explain(exc)) from None
        except BaseException:
            self._close_sync()
            raise

    def _enable_wal(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL mode (persistent; also the first read of the file, so garbage fails here).

        Switching returns "database is locked" at once, without waiting for the busy timeout, when other
        processes are opening the same new file at that moment: retry until the busy timeout runs out.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.005)

    def _explain(self, exc: sqlite3.DatabaseError) -> str:
        """A message for an error opening the file, naming it and what to do."""
        where = os.path.abspath(self.path) if self.path != ":memory:" else self.path
        text = str(exc)
        if "not a database" in text:
            return (
                f"{where} exists but is not a SQLite database ({text}). Point DURABLE_DATABASE_URL at another "
                f"file, or move this one away if it is not needed."
            )
        if "unable to open" in text or "readonly" in text:
            return (
                f"cannot create or write the SQLite database {where} ({text}). Check that its directory exists "
                f"and is writable by this user, or set DURABLE_DATABASE_URL to a writable location."
            )
        if "locked" in text:
            return f"the SQLite database {where} stayed locked by another process ({text}); retry."
        return f"cannot open the SQLite database {where}: {text}."

    def _close_sync(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _migrate_sync(self) -> list[int]:
        """Apply missing migrations in one transaction; ``BEGIN IMMEDIATE`` keeps other processes out."""
        db = self._connection()
        latest = self._migrations[-1].version
        try:
            current = db.execute(q.SCHEMA_VERSION).fetchone()[0] or 0
        except sqlite3.OperationalError:  # no version table yet
            current = 0
        check_not_newer(current, self._migrations, self.path)
        check_may_create(current, self.create_schema, self.path)
        if current == latest:
            return []
        return self._transaction(self._apply_migrations)

    def _apply_migrations(self, db: sqlite3.Connection, now: int) -> list[int]:
        db.execute(q.CREATE_VERSION_TABLE)
        current = db.execute(q.SCHEMA_VERSION).fetchone()[0] or 0  # another process may have upgraded meanwhile
        check_not_newer(current, self._migrations, self.path)
        applied = []
        for migration in self._migrations[current:]:
            self._apply_migration(db, migration)
            db.execute(q.RECORD_VERSION, (migration.version, migration.name, now))
            applied.append(migration.version)
        return applied

    def _apply_migration(self, db: sqlite3.Connection, migration: Migration) -> None:
        for statement in _statements(migration.sql):
            try:
                db.execute(statement)
            except sqlite3.OperationalError as exc:
                if "already exists" not in str(exc):
                    raise
                raise SchemaError(
                    f"the SQLite database {self.path} has objects named like Durable's ({exc}) that Durable's "
                    f"migrations did not create: use a file of its own for Durable"
                ) from None

    # --- runs -------------------------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Create the run with ``RunStarted`` as event 1, or return the existing run with that id (or the
        unfinished run with its dedup key)."""
        run, created = await self._write(self._create_run, new)
        if created:
            self.hub.notify_work()
            self.hub.notify_appended(run.id, 1, 1)
        return run, created

    async def create_runs(self, news: Sequence[NewRun]) -> list[tuple[RunRecord, bool]]:
        """``create_run`` for each, in order, in one transaction; one wake-up for the batch."""
        if not news:
            return []
        results = await self._write(self._create_runs, list(news))
        if any(created for _, created in results):
            self.hub.notify_work()
            for run, created in results:
                if created:
                    self.hub.notify_appended(run.id, 1, 1)
        return results

    @classmethod
    def _create_runs(cls, db: sqlite3.Connection, now: int, news: list[NewRun]) -> list[tuple[RunRecord, bool]]:
        return [cls._create_run(db, now, new) for new in news]

    @staticmethod
    def _create_run(db: sqlite3.Connection, now: int, new: NewRun) -> tuple[RunRecord, bool]:
        row = db.execute(
            q.CREATE_RUN,
            (new.id, new.workflow, bytes(new.input), new.queue, new.priority, new.parent_id,
             _us_or_none(new.wake_at), now, new.continued_from, new.dedup_key, new.trace_context),
        ).fetchone()  # fmt: skip
        if row is None:
            return _run(db.execute(q.GET_EXISTING, (new.id, new.dedup_key)).fetchone()), False
        started = new.started_event()
        db.execute(q.INSERT_EVENT, (new.id, 1, now, "run_started", encode_event(started)))
        return _run(row), True

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's row, or ``None``."""
        return await self._call(self._get_run, run_id)

    def _get_run(self, run_id: str) -> RunRecord | None:
        row = self._connection().execute(q.GET_RUN, (run_id,)).fetchone()
        return None if row is None else _run(row)

    async def _list_page(self, query: RunQuery) -> RunPage:
        """One page of runs."""
        sql, args = list_runs_args(query)
        return page_from(query, await self._call(self._list_runs, sql, args))

    def _list_runs(self, sql: str, args: list[Any]) -> list[RunRecord]:
        return [_run(row) for row in self._connection().execute(sql, args)]

    async def read_history(self, run_id: str, after_seq: int = 0) -> list[RecordedEvent]:
        """The run's events with ``seq > after_seq``, in order."""
        return await self._call(self._read_history, run_id, after_seq)

    def _read_history(self, run_id: str, after_seq: int) -> list[RecordedEvent]:
        rows = self._connection().execute(q.READ_HISTORY, (run_id, after_seq))
        return [RecordedEvent(seq, _time(at), decode_event(data)) for seq, at, data in rows]

    async def claim(
        self,
        worker_id: str,
        workflows: Sequence[str],
        limit: int,
        lease_seconds: float,
        queue: str | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` ready runs (highest priority, then earliest) with their histories, within the
        queues' limits; of ``queue`` only, when given. Runs of paused queues are never claimed. Claims are
        serialized by the write lock, so two claimers (or processes) never exceed a limit together."""
        if limit <= 0 or not workflows:
            return []
        names = _json.encode(list(workflows))
        return await self._call(self._claim, worker_id, names, limit, round(lease_seconds * 1e6), queue)

    def _claim(self, worker_id: str, names: bytes, limit: int, lease_us: int, queue: str | None) -> list[Claim]:
        # Look without the write lock first: an idle worker's poll then never blocks another process's writes.
        probe = q.claim_probe(queue is not None)
        if self._connection().execute(probe, by_queue((names, _now_us()), queue)).fetchone() is None:
            return []
        return self._transaction(self._lease, worker_id, names, limit, lease_us, queue)

    @staticmethod
    def _lease(
        db: sqlite3.Connection, now: int, worker_id: str, names: bytes, limit: int, lease_us: int, queue: str | None
    ) -> list[Claim]:
        due = choose(db, now, names, limit, queue)
        ids = list(due)
        runs = [_run(db.execute(q.LEASE, (worker_id, now + lease_us, now, run_id)).fetchone()) for run_id in ids]
        histories: dict[str, list[RecordedEvent]] = {run_id: [] for run_id in ids}
        for run_id, seq, at, data in db.execute(q.READ_HISTORIES, (_json.encode(ids),)):
            histories[run_id].append(RecordedEvent(seq, _time(at), decode_event(data)))
        return [Claim(run=run, history=histories[run.id], due_at=_time(due[run.id])) for run in runs]

    async def append(self, batch: Sequence[Append]) -> list[Exception | None]:
        """Apply each append if its writer holds the lease and starts at the next sequence number.

        The whole batch is one transaction (one commit, one fsync); a refused item changes nothing and does not
        affect the others.
        """
        if not batch:
            return []
        outcomes, messaged = await self._write(self._append, batch)
        wake = False
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome is not None:
                continue
            if item.events:
                self.hub.notify_appended(item.run_id, item.first_seq + len(item.events) - 1, item.first_seq)
            if item.status in FINISHED_STATUSES:
                self.hub.notify_finished(item.run_id)
            elif item.release:
                wake = True
        for parent_id in messaged:
            self.hub.notify_message(parent_id)
        if wake:
            self.hub.notify_work()
        return outcomes

    @staticmethod
    def _append(db: sqlite3.Connection, now: int, batch: Sequence[Append]) -> tuple[list[Exception | None], list[str]]:
        """Apply the batch; return the outcomes and the parents that got a "child" message."""
        outcomes: list[Exception | None] = []
        messaged: list[str] = []
        for item in batch:
            finished = item.status in FINISHED_STATUSES
            updated = db.execute(
                q.APPEND_RUN,
                (item.status, len(item.events), now, item.result, encode_error(item.error), finished,
                 _us_or_none(item.wake_at), finished or item.release, item.run_id, item.worker_id, item.epoch,
                 item.first_seq, item.state, stored_step(item.current_step)),
            ).rowcount  # fmt: skip
            if updated != 1:
                outcomes.append(_refusal(db, now, item))
                continue
            at = _us(item.at)
            db.executemany(
                q.INSERT_EVENT,
                [(item.run_id, item.first_seq + offset, at, event_type(event), encode_event(event))
                 for offset, event in enumerate(item.events)],
            )  # fmt: skip
            if item.consumed or item.open_inputs or item.close_inputs:
                _apply_side_tables(db, now, item)
            if item.logs:
                insert_logs(db, item.logs)
            if item.release and item.wake_at is not None and not finished:
                db.execute(q.WAKE_IF_MESSAGES, (item.run_id,))  # messages came while it was held: no sleep
            if finished:
                parent_id = _finish(db, now, item.run_id)
                if parent_id is not None:
                    messaged.append(parent_id)
            outcomes.append(None)
        return outcomes, messaged

    async def heartbeat(self, worker_id: str, leases: dict[str, int], lease_seconds: float) -> Heartbeat:
        """Extend the leases still held; report lost ones, requested cancellations and held runs with messages."""
        if not leases:
            return Heartbeat(lost=frozenset(), cancels={})
        return await self._write(self._heartbeat, worker_id, leases, round(lease_seconds * 1e6))

    @staticmethod
    def _heartbeat(
        db: sqlite3.Connection, now: int, worker_id: str, leases: dict[str, int], lease_us: int
    ) -> Heartbeat:
        lost: set[str] = set()
        cancels: dict[str, str] = {}
        messages: set[str] = set()
        for run_id, epoch in leases.items():
            row = db.execute(q.HEARTBEAT, (worker_id, run_id, epoch, now + lease_us, now)).fetchone()
            if row is None:
                lost.add(run_id)
                continue
            cancel_reason, has_messages = row
            if cancel_reason is not None:
                cancels[run_id] = cancel_reason
            if has_messages:
                messages.add(run_id)
        return Heartbeat(lost=frozenset(lost), cancels=cancels, messages=frozenset(messages))

    async def request_cancel(self, run_id: str, reason: str) -> RunRecord:
        """Record a cancellation request; a sleeping run becomes ready now. A finished run is returned as is."""
        run, changed = await self._write(self._request_cancel, run_id, reason)
        if changed:
            self.hub.notify_message(run_id)  # the driver of the run re-reads it; also wakes workers
        return run

    @staticmethod
    def _request_cancel(db: sqlite3.Connection, now: int, run_id: str, reason: str) -> tuple[RunRecord, bool]:
        row = db.execute(q.REQUEST_CANCEL, (run_id, reason, now)).fetchone()
        if row is not None:
            return _run(row), True
        row = db.execute(q.GET_RUN, (run_id,)).fetchone()
        if row is None:
            raise run_not_found(run_id)
        return _run(row), False

    async def note_current_step(self, run_id: str, worker_id: str, epoch: int, current_step: str | None) -> None:
        """Set the held run's ``current_step`` (see ``Store.note_current_step``)."""
        await self._write(self._note_current_step, run_id, worker_id, epoch, current_step)

    @staticmethod
    def _note_current_step(db: sqlite3.Connection, now: int, run_id: str, worker_id: str, epoch: int,
                           current_step: str | None) -> None:
        db.execute(q.NOTE_CURRENT_STEP, (run_id, worker_id, epoch, current_step, now))

    async def mark_blocked(self, run_id: str, worker_id: str, epoch: int, report: str, retry_at: datetime) -> None:
        """Flag a diverged run with ``report`` and release it until ``retry_at``.

        Raises:
            LeaseLost: this worker no longer holds the run's lease.
        """
        await self._write(self._mark_blocked, run_id, worker_id, epoch, report, _us(retry_at))

    @staticmethod
    def _mark_blocked(
        db: sqlite3.Connection, now: int, run_id: str, worker_id: str, epoch: int, report: str, retry_at: int
    ) -> None:
        if db.execute(q.MARK_BLOCKED, (run_id, worker_id, epoch, report, retry_at, now)).rowcount != 1:
            raise lease_lost(run_id)

    async def next_wake_at(self, workflows: Sequence[str]) -> datetime | None:
        """The earliest time a run of these workflows may become claimable (a wake time or a lease expiry)."""
        if not workflows:
            return None
        us = await self._call(self._scalar, q.NEXT_WAKE_AT, (_json.encode(list(workflows)),))
        return None if us is None else _time(us)

    def _scalar(self, sql: str, args: tuple[Any, ...]) -> Any:
        row = self._connection().execute(sql, args).fetchone()
        return None if row is None else row[0]

    async def register_workflows(self, worker_id: str, names: Sequence[str]) -> None:
        """Record the names this worker serves (replacing what it registered before)."""
        await self._write(self._register, worker_id, list(names))

    @staticmethod
    def _register(db: sqlite3.Connection, now: int, worker_id: str, names: list[str]) -> None:
        db.execute(q.UNREGISTER_WORKER, (worker_id,))
        db.executemany(q.REGISTER_WORKFLOW, [(worker_id, name, now) for name in names])

    async def known_workflows(self) -> set[str]:
        """Every name any worker registered."""
        return await self._call(self._known_workflows)

    def _known_workflows(self) -> set[str]:
        return {row[0] for row in self._connection().execute(q.KNOWN_WORKFLOWS)}

    # --- waiting on the world ---------------------------------------------------------------------------------

    async def send_message(self, run_id: str, kind: str, name: str, payload: bytes) -> Message:
        """Put a message in the run's inbox and wake the run (an unleased run becomes ready at once).

        Raises:
            RunNotFound: no run has this id.
            RunAlreadyFinished: the run has finished.
        """
        message = await self._write(self._send_message, run_id, kind, name, payload)
        self.hub.notify_message(run_id)
        return message

    @staticmethod
    def _send_message(db: sqlite3.Connection, now: int, run_id: str, kind: str, name: str, payload: bytes) -> Message:
        _check_open(db, run_id)
        return _put_message(db, now, run_id, kind, name, payload)

    async def read_inbox(self, run_id: str) -> list[Message]:
        """The run's unconsumed messages, oldest first."""
        return await self._call(self._read_inbox, run_id)

    def _read_inbox(self, run_id: str) -> list[Message]:
        rows = self._connection().execute(q.READ_INBOX, (run_id,))
        return [
            Message(id_, run, kind, name, payload, _time(sent_at)) for id_, run, kind, name, payload, sent_at in rows
        ]

    async def list_pending_inputs(
        self, *, run_id: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[PendingInput]:
        """Open inputs of unfinished runs (asked, not provided, not closed), oldest first."""
        args: list[Any] = [max(limit, 0)]
        if run_id is not None:
            args.append(run_id)
        if workflow is not None:
            args.append(workflow)
        sql = q.list_pending_inputs(run_id is not None, workflow is not None)
        return await self._call(self._list_pending_inputs, sql, args)

    def _list_pending_inputs(self, sql: str, args: list[Any]) -> list[PendingInput]:
        return [
            PendingInput(run_id, key, prompt, spec, _time(created_at), workflow, _time_or_none(timeout_at))
            for run_id, key, prompt, spec, created_at, workflow, timeout_at in self._connection().execute(sql, args)
        ]

    async def provide_input(self, run_id: str, key: str, payload: bytes) -> Message:
        """Answer an open input: mark it provided and put the answer in the run's inbox, in one transaction.

        Raises:
            RunNotFound: no run has this id.
            RunAlreadyFinished: the run has finished.
            InputAlreadyProvided: the input was answered already (of two concurrent answers, one wins).
            InputNotPending: the run does not wait for an input with this key.
        """
        message = await self._write(self._provide_input, run_id, key, payload)
        self.hub.notify_message(run_id)
        return message

    @staticmethod
    def _provide_input(db: sqlite3.Connection, now: int, run_id: str, key: str, payload: bytes) -> Message:
        _check_open(db, run_id)
        if db.execute(q.PROVIDE_INPUT, (run_id, key, now)).rowcount != 1:
            provided = db.execute(q.INPUT_PROVIDED, (run_id, key)).fetchone()
            if provided is not None and provided[0]:
                raise input_already_provided(run_id, key)
            raise input_not_pending(run_id, key)
        return _put_message(db, now, run_id, "input", key, payload)

    async def list_children(self, parent_id: str) -> list[RunRecord]:
        """Runs whose ``parent_id`` is ``parent_id``, oldest first."""
        return await self._call(self._list_children, parent_id)

    def _list_children(self, parent_id: str) -> list[RunRecord]:
        return [_run(row) for row in self._connection().execute(q.LIST_CHILDREN, (parent_id,))]

    # --- queues -----------------------------------------------------------------------------------------------

    async def configure_queue(
        self,
        name: str,
        *,
        paused: bool | None = None,
        global_concurrency: int | Unset | None = UNSET,
        rate_limit: int | Unset | None = UNSET,
        rate_period: float | Unset | None = UNSET,
    ) -> QueueConfig:
        """Change a queue's settings (``UNSET`` leaves one as it is, ``None`` removes a limit); return them.
        Leaving the queue unpaused wakes this process's workers (others see it at their next poll)."""
        args: list[Any] = [name, paused]
        for value in (global_concurrency, rate_limit, rate_period):
            args += [False, None] if isinstance(value, Unset) else [True, value]
        config = await self._write(self._configure_queue, args)
        if not config.paused:
            self.hub.notify_work()
        return config

    @staticmethod
    def _configure_queue(db: sqlite3.Connection, now: int, args: list[Any]) -> QueueConfig:
        return _queue_config(db.execute(q.CONFIGURE_QUEUE, (*args, now)).fetchone())

    async def list_queues(self) -> list[QueueConfig]:
        """Every queue that has runs or settings, by name (defaults for those never configured)."""
        return await self._call(self._list_queues)

    def _list_queues(self) -> list[QueueConfig]:
        return [_queue_config(row) for row in self._connection().execute(q.LIST_QUEUES)]

    async def queue_stats(self, name: str) -> QueueStats:
        """Counts of the queue's unfinished runs by state, its oldest pending age, and its settings."""
        return await self._call(self._queue_stats, name)

    def _queue_stats(self, name: str) -> QueueStats:
        now = _now_us()
        running, pending, scheduled, waiting, oldest, *config = (
            self._connection().execute(q.QUEUE_STATS, (name, now)).fetchone()
        )
        age = None if oldest is None else max(0.0, (now - oldest) / 1e6)
        return QueueStats(name, running, pending, scheduled, waiting, age, _queue_config((name, *config)))


def _queue_config(row: Sequence[Any]) -> QueueConfig:
    """A ``QueueConfig`` from a row of ``durable_queues`` (``paused`` is stored as 0 or 1)."""
    name, paused, concurrency, rate, period = row
    return QueueConfig(name, bool(paused), concurrency, rate, period)


def _check_open(db: sqlite3.Connection, run_id: str) -> None:
    """Refuse a message or an input to a missing or finished run (inside the write transaction)."""
    row = db.execute(q.RUN_STATUS, (run_id,)).fetchone()
    if row is None:
        raise run_not_found(run_id)
    if row[0] in FINISHED_STATUSES:
        raise run_already_finished(run_id, row[0])


def _put_message(db: sqlite3.Connection, now: int, run_id: str, kind: str, name: str, payload: bytes) -> Message:
    """Add a message to an unfinished run's inbox and make the run ready now if it is unleased."""
    message_id = db.execute(q.PUT_MESSAGE, (run_id, kind, name, payload, now)).fetchone()[0]
    db.execute(q.WAKE_FOR_MESSAGE, (run_id, now))
    return Message(message_id, run_id, kind, name, payload, _time(now))


def _apply_side_tables(db: sqlite3.Connection, now: int, item: Append) -> None:
    """An applied append's inbox and input changes, in ``MemoryStore._apply_side_tables``' order."""
    db.executemany(q.CONSUME_MESSAGE, [(item.run_id, message_id, now) for message_id in item.consumed])
    opened, closed = side_inputs(item)
    db.executemany(
        q.OPEN_INPUT,
        [(item.run_id, p.key, p.prompt, p.spec, _us(p.created_at), p.workflow, _us_or_none(p.timeout_at))
         for p in opened],
    )  # fmt: skip
    db.executemany(q.CLOSE_INPUT, [(item.run_id, key) for key in closed])


def _finish(db: sqlite3.Connection, now: int, run_id: str) -> str | None:
    """Close a finished run's inputs; give its unfinished parent a "child" message. Returns that parent's id."""
    db.execute(q.CLOSE_ALL_INPUTS, (run_id,))
    run = _run(db.execute(q.GET_RUN, (run_id,)).fetchone())
    if run.parent_id is None:
        return None
    parent = db.execute(q.RUN_STATUS, (run.parent_id,)).fetchone()
    if parent is None or parent[0] in FINISHED_STATUSES:
        return None
    _put_message(db, now, run.parent_id, "child", run.id, child_outcome(run))
    return run.parent_id


def _refusal(db: sqlite3.Connection, now: int, item: Append) -> Exception:
    """Why ``item`` was refused: the lease first (like the memory store), then the sequence number."""
    row = db.execute(q.FENCE, (item.run_id,)).fetchone()
    if row is None:
        return lease_lost(item.run_id)
    owner, epoch, expires_at, next_seq = row
    if owner != item.worker_id or epoch != item.epoch or expires_at is None or expires_at <= now:
        return lease_lost(item.run_id)
    return history_conflict(item.run_id, item.first_seq, next_seq)
