"""The PostgreSQL store: runs and histories in Postgres through asyncpg, wake-ups by LISTEN/NOTIFY.

The only module of the project that imports asyncpg. Every statement is in ``_pg_queries``; asyncpg prepares
each once per pooled connection. Round trips per call, the number the engine's speed hangs on:

* ``create_run``: 1 (the run row, its ``RunStarted`` event and, for an existing id or dedup key, the existing
  row);
* ``create_runs``: 1 per batch (the same for many runs, as arrays); a batch in which items share an id or a
  dedup key takes a transaction, one statement per layer of such duplicates;
* ``claim``: 1 (lease the runs and return them with their whole histories, as arrays); when runs of a queue with
  a global concurrency or a rate limit are ready, 4 more (a transaction: take the queues' advisory locks, claim
  within the limits, commit);
* ``append``: 1 per batch however many runs it covers (one statement, one commit), plus 1 to explain refusals;
  items that finish a run, consume messages, publish state or open/close inputs use a larger statement, still
  one;
* ``heartbeat``, ``get_run``, ``read_history``, ``list_runs``, ``next_wake_at``: 1;
* ``write_logs``, ``read_logs`` (``_pg_logs``): 1; log lines in an append cost none (they use its larger
  statement);
* ``send_message``, ``read_inbox``, ``list_pending_inputs``, ``list_children``: 1 (plus 1 to explain a refusal);
* ``provide_input``: 4 (a transaction: lock the run, answer, commit), at human rates;
* ``configure_queue``, ``list_queues``, ``queue_stats``: 1.

What happens when a run finishes (its inputs close; an unfinished parent gets a "child" message and is woken),
and the wake-up of a run released to sleep with unread messages, are done by the triggers
``durable_runs_finished`` and ``durable_runs_released`` (``migrations/postgres/0002_waiting.sql``) inside the
append statement, so an append stays one round trip.

NOTIFYs are sent by triggers (``migrations/postgres/0001_init.sql``, ``0002_waiting.sql``, ``0003_queues.sql``,
``0008_live.sql``: live events, relayed by the mixin ``_pg_live``)
in the committing transaction, so every writer, in any process, wakes every listener. The writing process also
wakes its own hub right after commit and ignores the echo of its own NOTIFYs (recognised by the sending backend's
pid).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from . import _pg_queries as q
from ._codec import decode_event, encode_event
from ._errors import DatabaseUnavailable, DurableError, SchemaError, StoreError
from ._events import RecordedEvent
from ._listing import ListsRuns, RunQuery, page_from, stored_step
from ._notify import Hub
from ._pg_append import append_args, full_args, is_full, refusal
from ._pg_guard import GuardedPool
from ._pg_listing import list_runs_args
from ._pg_live import LIVE_CHANNELS, PostgresLive
from ._pg_logs import PostgresLogs, log_args
from ._pg_metrics import PostgresMetrics
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
)
from ._sql import (
    check_finished_list,
    check_may_create,
    check_not_newer,
    decode_error,
    input_already_provided,
    input_not_pending,
    lease_lost,
    load_migrations,
    redact_url,
    run_already_finished,
    run_not_found,
)

log = logging.getLogger("durable.history")

_T = TypeVar("_T")
_RUN_WIDTH = len(RunRecord.__struct_fields__)
_DEADLOCK_RETRIES = 5
_CREATE_RETRIES = 3
_ERROR_COLUMN = RunRecord.__struct_fields__.index("error")
if tuple(q.RUN_COLUMNS.split(", ")) != RunRecord.__struct_fields__:  # rows are turned into records by position
    raise ImportError("history._pg_queries.RUN_COLUMNS is out of step with the fields of RunRecord")
check_finished_list(q.FINISHED, "history._pg_queries.FINISHED")

# Sent in the startup packet (no extra round trip). JIT off: every statement here is a short OLTP one, and a JIT
# compile triggered by a large cost estimate would add tens of milliseconds to a claim.
_SESSION = {"application_name": "durable", "jit": "off"}

CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable: the socket itself
    asyncpg.PostgresConnectionError,  # class 08, including "connection was closed in the middle of operation"
    asyncpg.CannotConnectNowError,  # the server is starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
"""What a lost (or refused) connection raises after ``open()``: ``_pg_guard.GuardedPool`` says so clearly."""

_HOW_TO_START = (
    "Start PostgreSQL (e.g. `sudo service postgresql start`, `brew services start postgresql`, or `docker run "
    "-d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres`), or set DURABLE_DATABASE_URL to a server "
    "that runs (or to sqlite:///durable.db to use an embedded database)."
)


def _run(values: Sequence[Any]) -> RunRecord:
    """A ``RunRecord`` from the ``RUN_COLUMNS`` of a row, by position (no per-row name lookups)."""
    fields = list(values[:_RUN_WIDTH])
    fields[_ERROR_COLUMN] = decode_error(fields[_ERROR_COLUMN])
    return RunRecord(*fields)


def _layers(news: Sequence[NewRun]) -> list[list[int]]:
    """The indices of ``news`` in layers, in order, such that no two items of a layer share an id or a dedup key
    and every item comes after the earlier items it shares one with (usually one layer: the whole batch)."""
    layers: list[list[int]] = []
    last: dict[tuple[bool, str], int] = {}  # (is a dedup key, the id or key) -> layer of its latest item
    for i, new in enumerate(news):
        keys = [(False, new.id)] if new.dedup_key is None else [(False, new.id), (True, new.dedup_key)]
        layer = max((last[k] + 1 for k in keys if k in last), default=0)
        if layer == len(layers):
            layers.append([])
        layers[layer].append(i)
        for k in keys:
            last[k] = layer
    return layers


def _events(seqs: Sequence[int] | None, ats: Sequence[datetime], datas: Sequence[bytes]) -> list[RecordedEvent]:
    """Recorded events from the parallel arrays that ``CLAIM`` aggregates."""
    if seqs is None:
        return []
    return [RecordedEvent(seq, at, decode_event(data)) for seq, at, data in zip(seqs, ats, datas, strict=True)]


class PostgresStore(ListsRuns, PostgresMetrics, PostgresLogs, PostgresLive):
    """Runs and histories in PostgreSQL. Obtain one with ``history.open_store("postgresql://…")``.

    Args:
        url: a libpq-style URL, ``postgresql://user:password@host:port/dbname``.
        min_size: connections the pool keeps open.
        max_size: connections the pool opens at most (plus one for LISTEN).
        connect_timeout: seconds to wait for a connection before reporting the database unavailable.
        listen: relay NOTIFYs from other processes into ``hub`` (off for one-shot commands such as
            ``durable db upgrade``).
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        listen: bool = True,
        create_schema: bool = True,
    ) -> None:
        self.url = redact_url(url)
        self.create_schema = create_schema
        self.hub = Hub()
        self._dsn = url
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._listen_enabled = listen
        self._pool: Any = None
        self._guarded: GuardedPool | None = None  # the pool, with lost connections said as such (_pg_guard)
        self._listener: Any = None
        self._relisten_task: asyncio.Task[None] | None = None
        self._closing = False
        self._own_pids: set[int] = set()
        self._migrations = load_migrations("postgres")
        self._live_init()

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, bring the schema up to date and start listening for other processes' wake-ups.

        Raises:
            DatabaseUnavailable: the server cannot be reached, the database does not exist, or login failed.
            SchemaError: the schema is newer than this code, or has Durable's table names without its history.
        """
        self._closing = False
        self._pool = await self._connecting(
            lambda: asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._connect_timeout,
                init=self._init_connection,
                reset=_keep_session,
                server_settings=_SESSION,
            )
        )
        self._guarded = GuardedPool(self._pool, self.url, CONNECTION_LOST)
        try:
            async with self._db.acquire() as conn:
                await self._migrate(conn)
            if self._listen_enabled:
                await self._listen()
                await self._learn_watch()
        except BaseException:
            await self.close()
            raise

    async def upgrade(self) -> list[int]:
        """Apply the migrations this database lacks (under an advisory lock); return the versions applied.

        Works on an opened store or on its own (one short connection), for ``durable db upgrade``.
        """
        if self._pool is not None:
            async with self._db.acquire() as conn:
                return await self._migrate(conn)
        conn = await self._connecting(
            lambda: asyncpg.connect(self._dsn, timeout=self._connect_timeout, server_settings=_SESSION)
        )
        try:
            return await self._migrate(conn)
        finally:
            await conn.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        self._closing = True
        await self._live_close()
        if self._relisten_task is not None:
            self._relisten_task.cancel()
            await asyncio.gather(self._relisten_task, return_exceptions=True)
            self._relisten_task = None
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        pool, self._pool, self._guarded = self._pool, None, None
        if pool is not None:
            await pool.close()

    @property
    def _db(self) -> Any:
        """The connection pool, or a clear error when the store is not open."""
        if self._guarded is None:
            raise DurableError(f"the PostgreSQL store {self.url} is not open: call `await store.open()` first")
        return self._guarded

    async def _connecting(self, connect: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``connect``, turning every way it can fail into a ``DatabaseUnavailable`` that says what to do."""
        try:
            return await connect()
        except asyncpg.InvalidCatalogNameError as exc:
            raise DatabaseUnavailable(
                f"cannot open the PostgreSQL database at {self.url}: {exc}. Create it (e.g. `createdb "
                f"<name>`) or point DURABLE_DATABASE_URL at an existing database."
            ) from None
        except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL at {self.url} refused the login: {exc}. Check the user and password in the URL."
            ) from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {self.url}: {reason}. {_HOW_TO_START}"
            ) from None

    async def _init_connection(self, conn: Any) -> None:
        """Remember each pooled connection's backend pid, to skip the echo of our own NOTIFYs."""
        pid = conn.get_server_pid()
        self._own_pids.add(pid)
        conn.add_termination_listener(lambda _conn: self._own_pids.discard(pid))

    # --- schema -----------------------------------------------------------------------------------------------

    async def _migrate(self, conn: Any) -> list[int]:
        """Apply missing migrations in one transaction, serialized across processes by an advisory lock."""
        latest = self._migrations[-1].version
        current = await self._schema_version(conn)
        check_not_newer(current, self._migrations, self.url)
        check_may_create(current, self.create_schema, self.url)
        if current == latest:  # the common case: one query, no lock
            return []
        applied = []
        async with conn.transaction():
            await conn.execute(q.LOCK_MIGRATIONS, q.MIGRATION_LOCK_KEY)
            await conn.execute(q.CREATE_VERSION_TABLE)
            current = await conn.fetchval(q.SCHEMA_VERSION) or 0  # another process may have upgraded meanwhile
            check_not_newer(current, self._migrations, self.url)
            for migration in self._migrations[current:]:
                try:
                    await conn.execute(migration.sql)
                except (
                    asyncpg.DuplicateTableError,
                    asyncpg.DuplicateObjectError,
                    asyncpg.DuplicateFunctionError,
                ) as exc:
                    raise SchemaError(
                        f"the database at {self.url} has objects named like Durable's ({exc}) that Durable's "
                        f"migrations did not create: use a database of its own for Durable"
                    ) from None
                await conn.execute(q.RECORD_VERSION, migration.version, migration.name)
                applied.append(migration.version)
        if applied:
            log.info("upgraded the Durable schema of %s to version %d", self.url, applied[-1])
        return applied

    @staticmethod
    async def _schema_version(conn: Any) -> int:
        try:
            return int(await conn.fetchval(q.SCHEMA_VERSION) or 0)
        except asyncpg.UndefinedTableError:
            return 0

    # --- notifications ----------------------------------------------------------------------------------------

    async def _open_connection(self, name: str) -> Any:
        """A connection of its own, outside the pool, named ``name`` in ``pg_stat_activity``."""
        server_settings = {**_SESSION, "application_name": name}
        return await self._connecting(
            lambda: asyncpg.connect(self._dsn, timeout=self._connect_timeout, server_settings=server_settings)
        )

    async def _listen(self) -> None:
        """Open the dedicated LISTEN connection (a pooled one would be handed to queries)."""
        conn = await self._open_connection("durable-listen")
        try:
            await conn.add_listener(q.WORK_CHANNEL, self._on_notify)
            await conn.add_listener(q.FINISHED_CHANNEL, self._on_notify)
            await conn.add_listener(q.MESSAGE_CHANNEL, self._on_notify)
            for channel in self._live_channels():
                await conn.add_listener(channel, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn

    def _on_notify(self, _conn: Any, pid: int, channel: str, payload: str) -> None:
        if pid in self._own_pids:  # our own commit: the hub was woken right after it
            return
        if channel in LIVE_CHANNELS:
            self._on_live_notify(channel, payload)
        elif channel == q.FINISHED_CHANNEL:
            self.hub.notify_finished(payload)
        elif channel == q.MESSAGE_CHANNEL:
            self.hub.notify_message(payload)
        else:
            self.hub.notify_work()

    def _on_listener_lost(self, _conn: Any) -> None:
        if self._closing:
            return
        log.warning("lost the LISTEN connection to %s; reconnecting (waiters poll meanwhile)", self.url)
        self._listener = None
        self._relisten_task = asyncio.get_running_loop().create_task(self._relisten())

    async def _relisten(self) -> None:
        """Reconnect the LISTEN connection with backoff, then wake everyone: notifies may have been missed."""
        delay = 0.1
        while not self._closing:
            try:
                await self._listen()
            except Exception as exc:  # whatever went wrong, try again later: waiters poll meanwhile
                log.warning("cannot listen on %s yet, retrying in %.1f s: %s", self.url, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            log.info("listening on %s again", self.url)
            self.hub.notify_work()
            return

    # --- runs -------------------------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Create the run with ``RunStarted`` as event 1, or return the existing run with that id (or the
        unfinished run with its dedup key)."""
        started = encode_event(new.started_event())
        for _ in range(_CREATE_RETRIES):
            row = await self._db.fetchrow(
                q.CREATE_RUN, new.id, new.workflow, bytes(new.input), new.queue, new.priority, new.parent_id,
                new.wake_at, started, new.continued_from, new.dedup_key, new.trace_context,
            )  # fmt: skip
            if row is not None:
                run = _run(row[1:])
                if row[0]:
                    self.hub.notify_work()
                    self._created([(run, True)])
                return run, row[0]
            # A concurrent create of this id or key committed after our statement's snapshot: read it now.
            existing = await self._db.fetchrow(q.GET_EXISTING, new.id, new.dedup_key)
            if existing is not None:
                return _run(existing), False
            # It rolled back, or (for a key) finished already: the id or key is free again; create once more.
        raise StoreError(f"run {new.id!r} kept conflicting with concurrent creates that vanished; retry")

    async def create_runs(self, news: Sequence[NewRun]) -> list[tuple[RunRecord, bool]]:
        """``create_run`` for each, in order: one statement for the batch, in one transaction. Items that share
        an id or a dedup key with an earlier item go to a later statement (of the same transaction), which
        finds that item's run, as ``create_run`` called in order would. An item whose id or key a concurrent
        create took after the statement began is asked for again by a further statement (as ``create_run``
        does)."""
        news = list(news)
        if not news:
            return []
        layers = _layers(news)
        if len(layers) == 1:
            results = await self._create_layers(self._db, news, layers)
        else:
            for attempt in range(_DEADLOCK_RETRIES):  # a deadlock rolls the whole transaction back: do it again
                try:
                    async with self._db.acquire() as conn, conn.transaction():
                        results = await self._create_layers(conn, news, layers, in_transaction=True)
                    break
                except asyncpg.DeadlockDetectedError:
                    if attempt == _DEADLOCK_RETRIES - 1:
                        raise
                    log.info("a batch of creates deadlocked with another; retrying it")
        if any(created for _, created in results):
            self.hub.notify_work()
            self._created(results)
        return results

    @staticmethod
    async def _create_layers(
        db: Any, news: list[NewRun], layers: list[list[int]], in_transaction: bool = False
    ) -> list[tuple[RunRecord, bool]]:
        """Run ``CREATE_RUNS`` for each layer in turn. Two batches that create the same ids or keys at once
        may deadlock (each waits on a row the other inserted; rows go in id order, which makes it rare): out of
        a transaction the failed statement changed nothing and is sent again."""
        results: list[tuple[RunRecord, bool] | None] = [None] * len(news)
        for pending in layers:
            for _ in range(_CREATE_RETRIES + _DEADLOCK_RETRIES):
                batch = [news[i] for i in pending]
                try:
                    rows = await db.fetch(
                        q.CREATE_RUNS, [n.id for n in batch], [n.workflow for n in batch],
                        [bytes(n.input) for n in batch], [n.queue for n in batch], [n.priority for n in batch],
                        [n.parent_id for n in batch], [n.wake_at for n in batch],
                        [encode_event(n.started_event()) for n in batch], [n.continued_from for n in batch],
                        [n.dedup_key for n in batch], [n.trace_context for n in batch],
                    )  # fmt: skip
                except asyncpg.DeadlockDetectedError:
                    if in_transaction:
                        raise
                    log.info("a batch of creates deadlocked with another; retrying it")
                    continue
                for row in rows:
                    results[pending[row[0] - 1]] = (_run(row[2:]), row[1])
                # Missing: a concurrent create of its id or key committed after the statement's snapshot.
                pending = [i for i in pending if results[i] is None]
                if not pending:
                    break
            else:
                raise StoreError(f"run {news[pending[0]].id!r} kept conflicting with concurrent creates; retry")
        assert all(result is not None for result in results), "every layer is answered in full"
        return cast(list[tuple[RunRecord, bool]], results)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's row, or ``None``."""
        row = await self._db.fetchrow(q.GET_RUN, run_id)
        return None if row is None else _run(row)

    async def _list_page(self, query: RunQuery) -> RunPage:
        """One page of runs, in one round trip."""
        sql, args = list_runs_args(query)
        return page_from(query, [_run(row) for row in await self._db.fetch(sql, *args)])

    async def read_history(self, run_id: str, after_seq: int = 0) -> list[RecordedEvent]:
        """The run's events with ``seq > after_seq``, in order."""
        rows = await self._db.fetch(q.READ_HISTORY, run_id, after_seq)
        return [RecordedEvent(seq, at, decode_event(data)) for seq, at, data in rows]

    async def claim(
        self,
        worker_id: str,
        workflows: Sequence[str],
        limit: int,
        lease_seconds: float,
        queue: str | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` ready runs (highest priority, then earliest) with their histories, within the
        queues' limits; of ``queue`` only, when given. Runs of paused queues are never claimed.

        Claims that meet no ready run of a limited queue are one statement (``_pg_queries.claim``). When runs of
        a queue with a global concurrency or a rate limit are ready, that statement claims nothing and the claim
        is made again in a transaction that first takes those queues' advisory locks, so that two claimers
        never exceed a limit together (``_claim_limited``).
        """
        if limit <= 0 or not workflows:
            return []
        args: list[Any] = [worker_id, list(workflows), limit, float(lease_seconds)]
        rows = await self._db.fetch(q.claim(queue is not None), *args, *([] if queue is None else [queue]))
        if rows and rows[0][0]:  # runs of limited queues are ready
            rows = await self._claim_limited(args, queue)
        claims = []
        for row in rows:
            if row[1] is None:  # the row of a claim that took nothing
                continue
            run = _run(row[1:])
            history = _events(row[-3], row[-2], row[-1])
            if len(history) != run.next_seq - 1:
                # The statement's snapshot predates an append that committed just before our lock (by the worker
                # whose lease we took over): read the history again, now that nobody else can extend it.
                history = await self.read_history(run.id)
            claims.append(Claim(run=run, history=history, due_at=row[1 + _RUN_WIDTH]))
        return claims

    async def _claim_limited(self, args: list[Any], queue: str | None) -> list[Any]:
        """Claim within the queues' limits: lock the limited queues with ready runs (in one order), then claim with
        a snapshot taken after the locks, in the same transaction (4 round trips: BEGIN, lock, claim, COMMIT)."""
        by_queue = queue is not None
        async with self._db.acquire() as conn, conn.transaction():
            locked = await conn.fetch(q.lock_queues(by_queue), args[1], *([queue] if by_queue else []))
            names = [row[0] for row in locked]
            return list(await conn.fetch(q.claim_limited(by_queue), *args, names, *([queue] if by_queue else [])))

    async def append(self, batch: Sequence[Append]) -> list[Exception | None]:
        """Apply each append if its writer holds the lease and starts at the next sequence number.

        One statement per round of distinct run ids (normally a single round), so concurrent runs share one
        round trip and one commit; a refused item changes nothing and does not affect the others.
        """
        outcomes: list[Exception | None] = [None] * len(batch)
        pending = list(range(len(batch)))
        while pending:
            seen: set[str] = set()
            now: list[int] = []
            later: list[int] = []
            for index in pending:  # two appends to one run in a batch go in order, in separate statements
                run_id = batch[index].run_id
                (later if run_id in seen else now).append(index)
                seen.add(run_id)
            await self._append_round(batch, now, outcomes)
            pending = later
        return outcomes

    async def _append_round(
        self, batch: Sequence[Append], indexes: list[int], outcomes: list[Exception | None]
    ) -> None:
        items = [batch[i] for i in indexes]
        args = append_args(items)
        full = any(is_full(item) for item in items)
        if full:
            args += full_args(items) + log_args(items)
        args.append([stored_step(item.current_step) for item in items])  # the last array of both statements
        async with self._db.acquire() as conn:
            # run id -> the parent that got a "child" message (None: none)
            applied = await self._apply_appends(conn, q.APPEND_FULL if full else q.APPEND, args)
            refused = [item for item in items if item.run_id not in applied]
            fences = {}
            if refused:
                fences = {row[0]: row for row in await conn.fetch(q.FENCES, [i.run_id for i in refused])}
        wake = False
        for index, item in zip(indexes, items, strict=True):
            if item.run_id not in applied:
                outcomes[index] = refusal(item, fences.get(item.run_id))
                continue
            if item.events:
                self.hub.notify_appended(item.run_id, item.first_seq + len(item.events) - 1, item.first_seq)
            if item.status in FINISHED_STATUSES:
                self.hub.notify_finished(item.run_id)
                parent_id = applied[item.run_id]
                if parent_id is not None:
                    self.hub.notify_message(parent_id)
            elif item.release:
                wake = True
        if wake:
            self.hub.notify_work()

    @staticmethod
    async def _apply_appends(conn: Any, sql: str, args: list[list[Any]]) -> dict[str, str | None]:
        """Run ``APPEND``/``APPEND_FULL``; return the applied run ids, each with the parent it messaged.

        A deadlock is retried: the statement rolled back whole. Finishing appends lock the parents they message
        (in id order) after their own runs, so two batches whose runs are each other's children's parents can
        deadlock; PostgreSQL breaks it after ``deadlock_timeout`` by failing one of them.
        """
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                rows = await conn.fetch(sql, *args)
            except asyncpg.DeadlockDetectedError:
                if attempt == _DEADLOCK_RETRIES - 1:
                    raise
                log.info("an append batch deadlocked with another (parents and children); retrying it")
                continue
            return {row[0]: row[1] if len(row) > 1 else None for row in rows}
        raise AssertionError("unreachable")

    async def heartbeat(self, worker_id: str, leases: dict[str, int], lease_seconds: float) -> Heartbeat:
        """Extend the leases still held; report lost ones, requested cancellations and held runs with messages."""
        if not leases:
            return Heartbeat(lost=frozenset(), cancels={})
        rows = await self._db.fetch(q.HEARTBEAT, worker_id, list(leases), list(leases.values()), float(lease_seconds))
        held = {run_id: reason for run_id, reason, _ in rows}
        cancels = {run_id: reason for run_id, reason in held.items() if reason is not None}
        messages = frozenset(run_id for run_id, _, has_messages in rows if has_messages)
        return Heartbeat(lost=frozenset(leases.keys() - held.keys()), cancels=cancels, messages=messages)

    async def request_cancel(self, run_id: str, reason: str) -> RunRecord:
        """Record a cancellation request; a sleeping run becomes ready now. A finished run is returned as is."""
        row = await self._db.fetchrow(q.REQUEST_CANCEL, run_id, reason)
        if row is None:
            run = await self.get_run(run_id)
            if run is None:
                raise run_not_found(run_id)
            return run
        self.hub.notify_message(run_id)  # also wakes workers (notify_work)
        return _run(row)

    async def note_current_step(self, run_id: str, worker_id: str, epoch: int, current_step: str | None) -> None:
        """Set the held run's ``current_step`` (see ``Store.note_current_step``); one round trip."""
        await self._db.execute(q.NOTE_CURRENT_STEP, run_id, worker_id, epoch, current_step)

    async def mark_blocked(self, run_id: str, worker_id: str, epoch: int, report: str, retry_at: datetime) -> None:
        """Flag a diverged run with ``report`` and release it until ``retry_at``.

        Raises:
            LeaseLost: this worker no longer holds the run's lease.
        """
        if await self._db.fetchval(q.MARK_BLOCKED, run_id, worker_id, epoch, report, retry_at) is None:
            raise lease_lost(run_id)

    async def next_wake_at(self, workflows: Sequence[str]) -> datetime | None:
        """The earliest time a run of these workflows may become claimable (a wake time or a lease expiry)."""
        if not workflows:
            return None
        wake_at: datetime | None = await self._db.fetchval(q.NEXT_WAKE_AT, list(workflows))
        return wake_at

    async def register_workflows(self, worker_id: str, names: Sequence[str]) -> None:
        """Record the names this worker serves (replacing what it registered before)."""
        await self._db.execute(q.REGISTER_WORKFLOWS, worker_id, list(names))

    async def known_workflows(self) -> set[str]:
        """Every name any worker registered."""
        return {row[0] for row in await self._db.fetch(q.KNOWN_WORKFLOWS)}

    # --- waiting on the world ---------------------------------------------------------------------------------

    async def send_message(self, run_id: str, kind: str, name: str, payload: bytes) -> Message:
        """Put a message in the run's inbox and wake the run (an unleased run becomes ready at once).

        Raises:
            RunNotFound: no run has this id.
            RunAlreadyFinished: the run has finished.
        """
        row = await self._db.fetchrow(q.SEND_MESSAGE, run_id, kind, name, payload)
        if row is None:
            run = await self.get_run(run_id)
            if run is None:
                raise run_not_found(run_id)
            if run.finished:
                raise run_already_finished(run_id, run.status)
            return await self.send_message(run_id, kind, name, payload)  # created since: send again
        self.hub.notify_message(run_id)
        return Message(*row)

    async def read_inbox(self, run_id: str) -> list[Message]:
        """The run's unconsumed messages, oldest first."""
        return [Message(*row) for row in await self._db.fetch(q.READ_INBOX, run_id)]

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
        return [PendingInput(*row) for row in await self._db.fetch(sql, *args)]

    async def provide_input(self, run_id: str, key: str, payload: bytes) -> Message:
        """Answer an open input: mark it provided and put the answer in the run's inbox, in one transaction.

        Raises:
            RunNotFound: no run has this id.
            RunAlreadyFinished: the run has finished.
            InputAlreadyProvided: the input was answered already (of two concurrent answers, one wins).
            InputNotPending: the run does not wait for an input with this key.
        """
        async with self._db.acquire() as conn, conn.transaction():
            status = await conn.fetchval(q.LOCK_RUN, run_id)
            if status is None:
                raise run_not_found(run_id)
            if status in FINISHED_STATUSES:
                raise run_already_finished(run_id, status)
            row = await conn.fetchrow(q.PROVIDE_INPUT, run_id, key, payload)
            if row is None:
                if await conn.fetchval(q.INPUT_PROVIDED, run_id, key):
                    raise input_already_provided(run_id, key)
                raise input_not_pending(run_id, key)
        self.hub.notify_message(run_id)
        return Message(*row)

    async def list_children(self, parent_id: str) -> list[RunRecord]:
        """Runs whose ``parent_id`` is ``parent_id``, oldest first."""
        return [_run(row) for row in await self._db.fetch(q.LIST_CHILDREN, parent_id)]

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
        Leaving the queue unpaused wakes every worker (the trigger ``durable_queues_changed``, and this hub)."""
        args: list[Any] = [name, paused]
        for value in (global_concurrency, rate_limit, rate_period):
            args += [False, None] if isinstance(value, Unset) else [True, value]
        config = QueueConfig(*await self._db.fetchrow(q.CONFIGURE_QUEUE, *args))
        if not config.paused:
            self.hub.notify_work()
        return config

    async def list_queues(self) -> list[QueueConfig]:
        """Every queue that has runs or settings, by name (defaults for those never configured)."""
        return [QueueConfig(*row) for row in await self._db.fetch(q.LIST_QUEUES)]

    async def queue_stats(self, name: str) -> QueueStats:
        """Counts of the queue's unfinished runs by state, its oldest pending age, and its settings (one
        statement)."""
        running, pending, scheduled, waiting, age, *config = await self._db.fetchrow(q.QUEUE_STATS, name)
        return QueueStats(name, running, pending, scheduled, waiting, age, QueueConfig(name, *config))


async def _keep_session(_conn: Any) -> None:
    """Skip asyncpg's default reset on release (``RESET ALL; UNLISTEN *; …``): one more round trip per query,
    and nothing to undo, since pooled connections never change session state (no SET, no LISTEN, advisory locks
    only transaction-scoped). asyncpg still rolls back a transaction left open."""
