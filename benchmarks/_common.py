"""Helpers shared by the side-by-side benchmark: fresh databases, worker subprocesses, statistics, JSON results.

Every measurement of ``compare_peers`` runs in a fresh Python process (``python -m benchmarks.peer_X METRIC
--url ... --params JSON``) that prints one JSON line, so peers never share a process, an event loop or a global
registry (DBOS and Temporal both keep process-wide state). Worker processes are started from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASE_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULT_PREFIX = "BENCH-RESULT "


# -- statistics ----------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank, 0 <= q <= 1)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def now() -> float:
    """Seconds on CLOCK_MONOTONIC: system-wide on Linux, so comparable between processes of one machine."""
    return time.perf_counter()


# -- databases -----------------------------------------------------------------------------------------------


def db_url(name: str, base: str = BASE_URL) -> str:
    return base.rsplit("/", 1)[0] + "/" + name


async def create_database(prefix: str, base: str = BASE_URL) -> str:
    import asyncpg

    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return db_url(name, base)


async def drop_database(url: str, base: str = BASE_URL) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    if not name.startswith("bench_"):  # never drop anything this benchmark did not create
        raise ValueError(f"refusing to drop {name!r}")
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(prefix: str) -> AsyncIterator[str]:
    url = await create_database(prefix)
    try:
        yield url
    finally:
        await drop_database(url)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


async def scalar(url: str, sql: str, *args: Any) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


class Poller:
    """One connection that evaluates a count query, for "until all are complete" timings."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None

    async def __aenter__(self) -> Poller:
        import asyncpg

        self.conn = await asyncpg.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def value(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)

    async def until(self, sql: str, target: int, timeout: float, every: float = 0.02) -> float:
        """Poll ``sql`` (a count) until it reaches ``target``; return the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while True:
            got = await self.conn.fetchval(sql)
            if got >= target:
                return now()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{got}/{target} after {timeout}s: {sql}")
            await asyncio.sleep(every)


async def wait_no_backends(url: str, timeout: float = 15.0) -> None:
    """Wait until no session but ours is connected to ``url``'s database (their statistics are then flushed)."""
    name = url.rsplit("/", 1)[1]
    sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
    base = BASE_URL
    await wait_until(lambda: _no_backends(base, sql, name), timeout, f"sessions of {name} to end", every=0.05)


async def _no_backends(base: str, sql: str, name: str) -> bool:
    return (await scalar(base, sql, name)) == 0


# -- subprocesses --------------------------------------------------------------------------------------------


def python() -> str:
    return sys.executable


def spawn(args: Sequence[str], *, env: dict[str, str] | None = None, log: str | None = None) -> subprocess.Popen[bytes]:
    """Start a process in the repository root, its output to ``log`` (or discarded)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    # Same process group as the measurement process: if it is killed on a timeout, its workers go with it.
    return subprocess.Popen(list(args), cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop a process we started (by its pid only); SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)


@contextlib.contextmanager
def processes() -> Any:
    """A list to put started processes in; all are stopped on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            stop(proc, timeout=5.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_path(name: str) -> str:
    directory = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/durable-bench-logs"))
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:4]}.log")


# -- the measurement protocol ----------------------------------------------------------------------------------


def emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def measurement_main(metrics: dict[str, Callable[..., Awaitable[dict[str, Any]]]]) -> None:
    """``python -m benchmarks.peer_X METRIC --url URL --params JSON``: run one measurement, print its JSON."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("metric", choices=sorted(metrics))
    parser.add_argument("--url", default="")
    parser.add_argument("--params", default="{}")
    args = parser.parse_args()
    result = asyncio.run(metrics[args.metric](args.url, **json.loads(args.params)))
    emit(result)


_ACTIVE: set[subprocess.Popen[bytes]] = set()
"""Measurement processes running now (each leads its own process group, with its workers)."""


def kill_active_measurements() -> None:
    """Kill every running measurement with its workers (when the benchmark itself is interrupted)."""
    for proc in list(_ACTIVE):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def run_measurement(module: str, metric: str, url: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh process of this interpreter; its JSON result (or {'error': ...})."""
    log = log_path(f"{module.rsplit('.', 1)[-1]}-{metric}")
    cmd = [python(), "-m", module, metric, "--url", url, "--params", json.dumps(params)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # Its own process group (session), which holds the workers it starts: on a timeout the whole group goes.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    _ACTIVE.add(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        Path(log).write_bytes(out + err)
        return {"error": f"timed out after {timeout:.0f}s (log: {log})"}
    finally:
        _ACTIVE.discard(proc)
    with contextlib.suppress(ProcessLookupError):  # workers left behind by a failed measurement
        os.killpg(proc.pid, signal.SIGKILL)
    Path(log).write_bytes(out + err)
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith(RESULT_PREFIX):
            return dict(json.loads(line[len(RESULT_PREFIX):]))
    tail = (err or out).decode(errors="replace").strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: {' | '.join(tail)} (log: {log})"}
