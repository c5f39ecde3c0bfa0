"""Where Durable's time goes: py-spy samples of (a) the sequential benchmark (one process, one run at a time)
and (b) one worker process during the throughput benchmark; prints the top functions by inclusive and self time.

    benchmarks/.venv-peers/bin/python -m benchmarks.profile_durable [--seconds 20]

Needs py-spy (installed by setup_peers.sh) and ptrace permission (root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from ._common import ROOT, Poller, create_database, drop_database, log_path, python, spawn, stop


def py_spy() -> str:
    return shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")


IDLE = ("EpollSelector.select", "select (selectors.py)")


def summarize(raw: str, top: int = 30) -> str:
    """Collapsed stacks -> the hottest functions, inclusive and self (percent of samples)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    with open(raw) as f:
        for line in f:
            stack, _, count_text = line.rstrip().rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            total += count
            frames = [_short(fr) for fr in stack.split(";")]
            if frames[-1].startswith(IDLE):  # the event loop waiting for I/O: not CPU
                continue
            for name in set(frames):
                inclusive[name] += count
            own[frames[-1]] += count
    out = [f"{total} samples on CPU (event-loop waits excluded)", "", "inclusive %  function"]
    out += [f"{100 * c / total:10.1f}  {name}" for name, c in inclusive.most_common(top)]
    out += ["", "self %       function"]
    out += [f"{100 * c / total:10.1f}  {name}" for name, c in own.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    # "fn (path/to/file.py:123)" -> "fn (file.py)"; groups all lines of a function
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    for anchor in ("durable", "history", "replay", "asyncpg", "asyncio", "anyio", "msgspec"):
        if anchor in parts:
            path = "/".join(parts[parts.index(anchor):])
            break
    else:
        path = parts[-1]
    return f"{name} ({path})"


def record(target: list[str] | int, raw: str, seconds: float | None = None) -> None:
    cmd = [py_spy(), "record", "--rate", "250", "--format", "raw", "--output", raw, "--nonblocking"]
    if isinstance(target, int):
        cmd += ["--pid", str(target), "--duration", str(int(seconds or 10))]
    else:
        cmd += ["--", *target]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=4000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="durable-profile-")
    url = await create_database("profile")
    try:
        raw = f"{tmp}/sequential.txt"
        params = json.dumps({"runs": args.runs, "step_runs": 40, "budget": 120})
        record([python(), "-m", "benchmarks.peer_durable", "sequential", "--url", url, "--params", params], raw)
        print("## (a) sequential: 3-step workflows one at a time, then 100-step workflows (one process)\n")
        print(summarize(raw))
    finally:
        await drop_database(url)
    url = await create_database("profile")
    try:
        import durable

        from .bench_workflows import three_steps
        from .peer_durable import _wait_workers, worker_cmd

        async with durable.Engine(url, worker=False) as engine:
            proc = spawn(worker_cmd(url, 500), log=log_path("durable-profile-worker"))
            try:
                await _wait_workers(url, 1)
                raw = f"{tmp}/worker.txt"
                client_raw = f"{tmp}/client.txt"
                spy_client = asyncio.create_task(asyncio.to_thread(record, os.getpid(), client_raw, 4))
                await asyncio.sleep(0.5)  # py-spy attaches
                starts = asyncio.gather(*(engine.start(three_steps, i) for i in range(args.burst)))
                await asyncio.sleep(0.3)
                spy = asyncio.create_task(asyncio.to_thread(record, proc.pid, raw, 6))
                t_start = time.monotonic()
                await starts
                print(f"(client: {args.burst} starts took {time.monotonic() - t_start + 0.3:.1f}s)")
                await spy_client
                async with Poller(url) as poll:
                    t0 = time.monotonic()
                    await poll.until("SELECT count(*) FROM durable_runs WHERE status = 'completed'", args.burst, 600)
                    print(f"\n(burst of {args.burst} done {time.monotonic() - t0:.1f}s after the last start)")
                await spy
            finally:
                stop(proc)
        print(f"\n## (b) one worker process during a burst of {args.burst} 3-step workflows\n")
        print(summarize(raw))
        print("\n## (c) the client process while it starts the burst (Engine(worker=False).start, gathered)\n")
        print(summarize(client_raw))
    finally:
        await drop_database(url)
    print(f"\nraw stacks (for flame graphs): {tmp}")


if __name__ == "__main__":
    asyncio.run(main())
