"""``Store.append`` latency for the common case, a plain step (StepScheduled + StepCompleted, lease kept), per
store: median and p95 microseconds of one append awaited at a time, and of a batch of 16 runs' appends (what the
worker's append batcher sends when many runs step at once). Also the appends that do more since schema 2: a
release to sleep (checks for unread messages) and a finish (closes inputs, may message a parent).

    python benchmarks/bench_store_append.py [--n 2000] [--url postgresql://…/server_db] [--sqlite]

Each Postgres measurement runs in a fresh database (created and dropped on the server of ``--url``). Only
``history`` is imported, so the figure is the store's own cost. No figure here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import msgspec

import history
from history import Append, Claim, NewRun, RunCompleted, StepCompleted, StepScheduled, Store

BATCH = 16


def _raw(value: object) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(value))


def _step(command_id: int) -> list[history.Event]:
    return [
        StepScheduled(command_id=command_id, name="charge", args=_raw([command_id]), digest="d"),
        StepCompleted(command_id=command_id, name="charge", attempt=1, result=_raw(command_id), duration_ms=0.5),
    ]


async def _claims(store: Store, count: int) -> list[Claim]:
    workflow = uuid.uuid4().hex
    for _ in range(count):
        await store.create_run(NewRun(id=uuid.uuid4().hex, workflow=workflow, input=_raw(1), random_seed=1))
    return await store.claim("bench", [workflow], count, 3600)


def _figures(name: str, micros: list[float]) -> None:
    micros.sort()
    p95 = micros[int(len(micros) * 0.95)]
    print(f"  {name:<34} median {statistics.median(micros):8.1f} µs   p95 {p95:8.1f} µs   (n={len(micros)})")


async def measure(url: str, n: int) -> None:
    store = history.open_store(url)
    await store.open()
    try:
        [claim] = await _claims(store, 1)
        seq, single = claim.run.next_seq, []
        for i in range(n + 100):  # the first 100 warm up statement caches
            item = Append(claim.run.id, "bench", claim.run.lease_epoch, seq, _step(i), datetime.now(UTC))
            started = time.perf_counter()
            assert await store.append([item]) == [None]
            if i >= 100:
                single.append((time.perf_counter() - started) * 1e6)
            seq += 2
        _figures("append 1 step", single)

        claims = await _claims(store, BATCH)
        seqs = {c.run.id: c.run.next_seq for c in claims}
        batched = []
        for i in range(n // 4 + 25):
            items = [
                Append(c.run.id, "bench", c.run.lease_epoch, seqs[c.run.id], _step(i), datetime.now(UTC))
                for c in claims
            ]
            started = time.perf_counter()
            assert await store.append(items) == [None] * BATCH
            if i >= 25:
                batched.append((time.perf_counter() - started) * 1e6)
            for c in claims:
                seqs[c.run.id] += 2
        _figures(f"append {BATCH} runs x 1 step (batch)", batched)

        parking = []
        [claim] = await _claims(store, 1)
        workflow = claim.run.workflow
        for _ in range(min(n // 4, 500)):
            past = datetime.now(UTC) - timedelta(seconds=1)  # asleep until a time that has come: claimed again
            item = Append(claim.run.id, "bench", claim.run.lease_epoch, claim.run.next_seq, [], datetime.now(UTC),
                          status="waiting", wake_at=past, release=True)  # fmt: skip
            started = time.perf_counter()
            assert await store.append([item]) == [None]
            parking.append((time.perf_counter() - started) * 1e6)
            [claim] = await store.claim("bench", [workflow], 1, 3600)
        _figures("append releasing a run to sleep", parking)

        finishing = []
        for claim in await _claims(store, min(n // 4, 500)):
            item = Append(claim.run.id, "bench", claim.run.lease_epoch, claim.run.next_seq,
                          [RunCompleted(result=_raw(1))], datetime.now(UTC), status="completed",
                          result=b"1")  # fmt: skip
            started = time.perf_counter()
            assert await store.append([item]) == [None]
            finishing.append((time.perf_counter() - started) * 1e6)
        _figures("append finishing a run", finishing)
    finally:
        await store.close()


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument(
        "--url", default=os.environ.get("DURABLE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")
    )
    parser.add_argument("--sqlite", action="store_true", help="also measure a SQLite file (synchronous=full)")
    args = parser.parse_args()

    name = f"durable_bench_{uuid.uuid4().hex[:8]}"
    await _admin(args.url, f'CREATE DATABASE "{name}"')
    try:
        print(f"PostgreSQL ({args.url}, fresh database {name}):")
        await measure(urlunsplit(urlsplit(args.url)._replace(path=f"/{name}")), args.n)
    finally:
        await _admin(args.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if args.sqlite:
        with tempfile.TemporaryDirectory() as folder:
            print("SQLite (a file in a temporary directory):")
            await measure(f"sqlite:///{folder}/bench.db", args.n)


if __name__ == "__main__":
    asyncio.run(main())
