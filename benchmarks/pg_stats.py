"""Counting what a peer asks of PostgreSQL, without pg_stat_statements (not preloaded on the shared server, and
loading it needs a server restart, which this benchmark may not do).

Two independent counts:

* ``CountingProxy``: a TCP proxy on 127.0.0.1 between the peer and the server that reads the wire protocol.
  It refuses SSL/GSS (so the stream stays readable; clients with the default ``sslmode=prefer`` go on in
  plain text) and counts, over every connection of the peer:
    - round trips: ReadyForQuery messages after at least one statement (each is a wait for the server);
    - statements: Execute messages plus simple Query messages;
    - transactions: ReadyForQuery back to idle ('I') that ended a transaction which ran at least one statement
      (an autocommit statement, or COMMIT/ROLLBACK of an explicit block) — read-only ones included.
* ``db_counters``: the fresh database's own statistics: ``pg_stat_database.xact_commit`` and the rows
  inserted/updated/deleted summed over ``pg_stat_user_tables`` — read after the peer's sessions have ended
  (a backend flushes its statistics when it exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field
from typing import Any

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
CANCEL_REQUEST = 80877102


@dataclass
class Counts:
    round_trips: int = 0
    statements: int = 0
    transactions: int = 0
    connections: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    by_statement: dict[str, int] = field(default_factory=dict)  # executions per statement text (abridged)

    def minus(self, other: Counts) -> Counts:
        return Counts(self.round_trips - other.round_trips, self.statements - other.statements,
                      self.transactions - other.transactions, self.connections - other.connections)


class CountingProxy:
    """``async with CountingProxy(upstream_host, upstream_port) as proxy:`` then connect to ``proxy.port``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5432) -> None:
        self.upstream = (host, port)
        self.counts = Counts()
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, url: str) -> str:
        """``url`` (postgresql://user@host:port/db) pointed at the proxy."""
        scheme, rest = url.split("://", 1)
        auth_host, db = rest.split("/", 1)
        auth = auth_host.rsplit("@", 1)[0] + "@" if "@" in auth_host else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{db}"

    def snapshot(self) -> Counts:
        c = self.counts
        return Counts(c.round_trips, c.statements, c.transactions, c.connections, dict(c.by_type),
                      dict(c.by_statement))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer = None
        try:
            # Startup: answer SSL/GSS requests with 'N', forward the real startup packet.
            while True:
                head = await reader.readexactly(8)
                length, code = struct.unpack("!ii", head)
                body = await reader.readexactly(length - 8)
                if code in (SSL_REQUEST, GSS_REQUEST):
                    writer.write(b"N")
                    await writer.drain()
                    continue
                break
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            up_writer.write(head + body)
            if code == CANCEL_REQUEST:
                await up_writer.drain()
                return
            self.counts.connections += 1
            state: dict[str, Any] = {"statements_since_ready": 0, "in_tx_statements": 0, "prepared": {},
                                     "bound": ""}
            await asyncio.gather(self._client_to_server(reader, up_writer, state),
                                 self._server_to_client(up_reader, writer, state))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()
            self._tasks.discard(task)

    async def _client_to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                state: dict[str, Any]) -> None:
        buffer = b""
        while True:
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            writer.write(data)
            buffer += data
            buffer = self._scan(buffer, state, frontend=True)
            await writer.drain()

    async def _server_to_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                state: dict[str, Any]) -> None:
        buffer = b""
        while True:
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            writer.write(data)
            buffer += data
            buffer = self._scan(buffer, state, frontend=False)
            await writer.drain()

    def _scan(self, buffer: bytes, state: dict[str, Any], *, frontend: bool) -> bytes:
        """Count the complete messages at the front of ``buffer``; return the incomplete rest."""
        pos = 0
        counts = self.counts
        while len(buffer) - pos >= 5:
            kind = buffer[pos:pos + 1]
            (length,) = struct.unpack_from("!i", buffer, pos + 1)
            end = pos + 1 + length
            if end > len(buffer):
                break
            if frontend:
                if kind == b"P":  # Parse: statement name, query text
                    name, _, rest = buffer[pos + 5:end].partition(b"\0")
                    state["prepared"][name] = _abridge(rest.partition(b"\0")[0])
                elif kind == b"B":  # Bind: portal name, statement name
                    state["bound"] = buffer[pos + 5:end].split(b"\0", 2)[1]
                elif kind in (b"E", b"Q"):
                    counts.statements += 1
                    state["statements_since_ready"] += 1
                    if kind == b"Q":
                        text = _abridge(buffer[pos + 5:end].rstrip(b"\0"))
                    else:
                        text = state["prepared"].get(state["bound"], "?")
                    counts.by_statement[text] = counts.by_statement.get(text, 0) + 1
                key = "fe_" + kind.decode("latin-1")
                counts.by_type[key] = counts.by_type.get(key, 0) + 1
            elif kind == b"Z":
                status = buffer[pos + 5:pos + 6]
                ran = state["statements_since_ready"]
                state["statements_since_ready"] = 0
                if ran:
                    counts.round_trips += 1
                    state["in_tx_statements"] += ran
                if status == b"I":
                    if state["in_tx_statements"]:
                        counts.transactions += 1
                    state["in_tx_statements"] = 0
            pos = end
        return buffer[pos:]


def _abridge(sql: bytes) -> str:
    """The first words of a statement, whitespace collapsed: enough to tell statements apart in a report."""
    return " ".join(sql.decode(errors="replace").split())[:70]


async def db_counters(url: str) -> dict[str, int]:
    """The fresh database's commit and row-write counters (after its sessions ended, so they are flushed)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        commits = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        rows = await conn.fetchrow(
            "SELECT coalesce(sum(n_tup_ins), 0) AS ins, coalesce(sum(n_tup_upd), 0) AS upd, "
            "coalesce(sum(n_tup_del), 0) AS del FROM pg_stat_user_tables")
    finally:
        await conn.close()
    # This connection's own transactions (3) are counted by the next reading, not this one: subtract them there.
    return {"xact_commit": int(commits), "rows_written": int(rows["ins"] + rows["upd"] + rows["del"])}


OWN_COMMITS = 3
"""Transactions ``db_counters`` itself commits (seen by the next reading)."""


def per_unit(after: dict[str, Any], before: dict[str, Any], units: float) -> dict[str, float]:
    return {k: (after[k] - before[k]) / units for k in after if isinstance(after[k], (int, float))}


async def run_session(module: str, url: str, params: dict[str, Any], timeout: float = 300.0) -> None:
    """Run ``python -m MODULE session`` (one peer process: open, run workflows, close) and wait for it."""
    import json
    import os
    import sys

    from ._common import ROOT, log_path

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    log = log_path(f"{module.rsplit('.', 1)[-1]}-session")
    with open(log, "ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, "session", "--url", url, "--params", json.dumps(params),
            cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    if code != 0:
        raise RuntimeError(f"{module} session exited {code} (log: {log})")


async def statements(module: str, url: str, n: int = 50, small: int = 3, big: int = 13) -> dict[str, Any]:
    """Per 3-step workflow and per marginal step: round trips, statements, transactions (proxy) and commits,
    rows written (the database's statistics). Each figure comes from separate peer processes (sessions) run
    through the proxy: an empty one (launch and shutdown cost, subtracted), ``n`` workflows of ``small`` steps,
    and ``n`` of ``big`` steps (the difference, divided by ``n * (big - small)``, is the cost of one step)."""
    from ._common import wait_no_backends

    async with CountingProxy() as proxy:
        via = proxy.url(url)
        await run_session(module, via, {"steps": small, "n": 3})  # schema, warm-up; not counted
        readings = []
        for steps, count in ((small, 0), (small, n), (big, n)):
            await wait_no_backends(url)
            readings.append((proxy.snapshot(), await db_counters(url)))
            await run_session(module, via, {"steps": steps, "n": count})
        await wait_no_backends(url)
        readings.append((proxy.snapshot(), await db_counters(url)))

    def delta(i: int) -> dict[str, float]:
        (p0, d0), (p1, d1) = readings[i], readings[i + 1]
        return {"round_trips": p1.round_trips - p0.round_trips, "statements": p1.statements - p0.statements,
                "transactions": p1.transactions - p0.transactions,
                "xact_commit": d1["xact_commit"] - d0["xact_commit"] - OWN_COMMITS,
                "rows_written": d1["rows_written"] - d0["rows_written"]}

    def texts(i: int) -> dict[str, int]:
        before, after = readings[i][0].by_statement, readings[i + 1][0].by_statement
        return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}

    empty, small_run, big_run = delta(0), delta(1), delta(2)
    per_workflow = {k: (small_run[k] - empty[k]) / n for k in empty}
    per_step = {k: (big_run[k] - small_run[k]) / (n * (big - small)) for k in empty}
    t_empty, t_small, t_big = texts(0), texts(1), texts(2)
    by_statement_workflow = {k: round((v - t_empty.get(k, 0)) / n, 2) for k, v in t_small.items()}
    by_statement_step = {k: round((v - t_small.get(k, 0)) / (n * (big - small)), 2) for k, v in t_big.items()}
    return {"per_workflow": per_workflow, "per_step": per_step, "launch": empty, "n": n,
            "small": small, "big": big,
            "by_statement_workflow": {k: v for k, v in by_statement_workflow.items() if abs(v) >= 0.05},
            "by_statement_step": {k: v for k, v in by_statement_step.items() if abs(v) >= 0.05}}
