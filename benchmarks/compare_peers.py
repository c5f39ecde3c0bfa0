# ruff: noqa: RUF001 -- the report prints multiplication signs and dashes on purpose
"""Durable beside its peers — DBOS Transact, Absurd and Temporal — and PostgreSQL's own floor, in one invocation.

    bash benchmarks/setup_peers.sh                      # once: benchmarks/.venv-peers with the peers + Durable
    benchmarks/.venv-peers/bin/python -m benchmarks.compare_peers [--quick] [--peers dbos,absurd,temporal]
        [--metrics floor,sequential,throughput,start,recovery,statements] [--repeat N] [--out FILE.md]
        [--durable-ref HEAD]    # measure the engine as committed (git archive), not the live work tree

Every measurement runs in a fresh process on a fresh PostgreSQL database (created and dropped here; Temporal gets
a fresh dev server with its own SQLite file instead), one peer at a time, so peers never share a process or a
database. Prints one Markdown table per metric with Durable's figure, each peer's, and the ratio Durable/peer,
then Durable's figures as multiples of PostgreSQL's floor and against the targets of issue #5.
With ``--repeat N`` each figure is the median of N fresh runs. Logs of every process: /tmp/durable-bench-logs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from ._common import create_database, drop_database, run_measurement, scalar

ALL_PEERS = ["dbos", "absurd", "temporal"]
ALL_METRICS = ["floor", "sequential", "throughput", "start", "recovery", "statements"]
MODULES = {"durable": "benchmarks.peer_durable", "dbos": "benchmarks.peer_dbos",
           "absurd": "benchmarks.peer_absurd", "temporal": "benchmarks.peer_temporal"}
LABELS = {"durable": "Durable", "dbos": "DBOS", "absurd": "Absurd", "temporal": "Temporal"}
LEASE = 5.0  # lease / claim timeout / activity timeout used by the recovery runs


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"seq": {"runs": 50, "steps": 100, "step_runs": 2, "budget": 15},
                "tp_count": 300, "tp_count_temporal": 30, "start": {"runs": 50, "budget": 6},
                "rec": 200, "rec_temporal": 5, "stmt": 10, "floor_n": 300, "floor_s": 1.5,
                "seq_temporal": {"runs": 20, "steps": 20, "step_runs": 1, "budget": 10}}
    return {"seq": {"runs": 200, "steps": 100, "step_runs": 5, "budget": 40},
            "tp_count": 2000, "tp_count_temporal": 150, "start": {"runs": 200, "budget": 30},
            "rec": 1000, "rec_temporal": 100, "stmt": 50, "floor_n": 1000, "floor_s": 3.0,
            "seq_temporal": {"runs": 100, "steps": 50, "step_runs": 2, "budget": 30}}


# -- running ------------------------------------------------------------------------------------------------------


async def measure(peer: str, metric: str, params: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """One measurement of one peer on a fresh database."""
    module = MODULES.get(peer, peer)
    url = await create_database(peer.rsplit(".", 1)[-1])
    try:
        return await asyncio.to_thread(run_measurement, module, metric, url, params, timeout)
    finally:
        await drop_database(url)


def combine(results: list[dict[str, Any]], top: bool = True) -> dict[str, Any]:
    """The median of each numeric field over repeated runs (nested dicts too); an error if every run failed."""
    good = [r for r in results if "error" not in r]
    if not good:
        return results[0]
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for r in good for k in r))
    for key in keys:
        values = [r[key] for r in good if r.get(key) is not None]
        value = values[0] if values else None
        if isinstance(value, dict):
            out[key] = combine(values, top=False)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(values)
        else:
            out[key] = value
    if not top:
        return out
    out["repeats"] = len(good)
    if len(good) < len(results):
        out["failed_runs"] = len(results) - len(good)
    return out


async def repeated(peer: str, metric: str, params: dict[str, Any], repeat: int) -> dict[str, Any]:
    results = []
    for _ in range(repeat):
        started = time.monotonic()
        result = await measure(peer, metric, params)
        note = result.get("error", "ok")
        print(f"  {LABELS.get(peer, peer):<8} {metric:<13} {params} {time.monotonic() - started:5.1f}s {note}",
              file=sys.stderr, flush=True)
        results.append(result)
    return combine(results)


def peer_available(peer: str) -> str | None:
    """None, or why the peer cannot run here."""
    try:
        module = importlib.import_module(MODULES[peer])
    except Exception as exc:  # the peer's package is missing
        return f"cannot import {MODULES[peer]}: {type(exc).__name__}: {exc} (run benchmarks/setup_peers.sh)"
    check: Callable[[], str | None] | None = getattr(module, "available", None)
    return check() if check else None


def peer_version(peer: str) -> str:
    try:
        return str(importlib.import_module(MODULES[peer]).version())
    except Exception:
        return "?"


# -- formatting ---------------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6 and digits == 2 and abs(value) >= 10:
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b or math.isnan(a) or math.isnan(b):
        return "–"
    r = a / b
    if r < 0.1:
        return f"{r:.3f}×"
    return f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


def table(title: str, rows: list[tuple[str, Callable[[dict[str, Any]], Any]]], results: dict[str, dict[str, Any]],
          peers: list[str], note: str = "") -> str:
    """A Markdown table: one row per figure, Durable's column, then each peer's value and Durable/peer."""
    head = ["figure", "Durable"]
    for p in peers:
        head += [LABELS[p], f"Durable/{LABELS[p]}"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, get in rows:
        cells = [label]
        mine = _get(get, results.get("durable"))
        cells.append(fmt(mine))
        for p in peers:
            theirs = _get(get, results.get(p))
            cells += [fmt(theirs), ratio(mine, theirs)]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"{LABELS[p]}: {r['error']}" for p, r in results.items() if isinstance(r, dict) and "error" in r]
    if errors:
        lines.append("")
        lines += [f"- failed: {e}" for e in errors]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _get(get: Callable[[dict[str, Any]], Any], result: dict[str, Any] | None) -> Any:
    if not result or "error" in result or result.get("skipped"):
        return None
    try:
        return get(result)
    except (KeyError, TypeError):
        return None


# -- the run ------------------------------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default=",".join(ALL_PEERS), help="comma-separated: dbos,absurd,temporal")
    parser.add_argument("--metrics", default=",".join(ALL_METRICS), help="comma-separated: " + ",".join(ALL_METRICS))
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run of ~2 minutes")
    parser.add_argument("--repeat", type=int, default=1, help="median of N fresh runs of every figure")
    parser.add_argument("--out", help="also write the report (Markdown) to this file")
    parser.add_argument("--durable-ref", metavar="REF",
                        help="benchmark Durable as committed at REF (e.g. HEAD), or `worktree` for a copy of the "
                             "work tree taken now: the run uses that frozen copy, so edits in progress elsewhere "
                             "neither break nor skew it")
    args = parser.parse_args()
    if args.durable_ref:
        snapshot_and_reexec(args.durable_ref)
    peers = [p for p in args.peers.split(",") if p]
    metrics = [m for m in args.metrics.split(",") if m]
    for name in peers:
        if name not in ALL_PEERS:
            parser.error(f"unknown peer {name!r}: choose from {', '.join(ALL_PEERS)}")
    for name in metrics:
        if name not in ALL_METRICS:
            parser.error(f"unknown metric {name!r}: choose from {', '.join(ALL_METRICS)}")
    s = settings(args.quick)
    started = time.monotonic()

    skipped: dict[str, str] = {}
    for p in list(peers):
        why = peer_available(p)
        if why:
            skipped[p] = why
            peers.remove(p)
    everyone = ["durable", *peers]
    pg_version = await scalar(os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                              "SHOW server_version")
    out: list[str] = []
    out.append(f"## Run of {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}"
               f"{' (--quick)' if args.quick else ''}, --repeat {args.repeat}\n")
    out.append(f"Machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
               f"PostgreSQL {pg_version} on 127.0.0.1. Versions: "
               + ", ".join(f"{LABELS[p]} {peer_version(p)}" for p in everyone) + "."
               + (f" Durable: {os.environ['BENCH_DURABLE_COMMIT']}."
                  if os.environ.get("BENCH_DURABLE_COMMIT") else " Durable from the work tree."))
    for p, why in skipped.items():
        out.append(f"\n**{LABELS[p]} skipped**: {why}")
    out.append("")
    R: dict[str, dict[str, dict[str, Any]]] = {}

    def rep(metric: str, params: dict[str, Any], peer: str) -> Any:
        return repeated(peer, metric, params, args.repeat)

    if "floor" in metrics:
        print("PostgreSQL floor", file=sys.stderr)
        R["floor"] = {
            "latency": await repeated("benchmarks.pg_floor", "latency", {"n": s["floor_n"]}, args.repeat),
            "rate1": await repeated("benchmarks.pg_floor", "rate", {"connections": 1, "seconds": s["floor_s"]},
                                    args.repeat),
            "rate4": await repeated("benchmarks.pg_floor", "rate", {"connections": 4, "seconds": s["floor_s"]},
                                    args.repeat),
        }
    for metric in metrics:
        if metric == "floor":
            continue
        print(metric, file=sys.stderr)
        R[metric] = {}
        for p in everyone:
            if metric == "sequential":
                R[metric][p] = await rep("sequential", s["seq_temporal"] if p == "temporal" else s["seq"], p)
            elif metric == "throughput":
                count = s["tp_count_temporal"] if p == "temporal" else s["tp_count"]
                R[metric][p] = {
                    f"{mode[0]}{workers}": await rep("throughput", {"count": count, "workers": workers,
                                                                    "mode": mode}, p)
                    for mode in ("start", "due") for workers in (1, 4)
                }
            elif metric == "start":
                R[metric][p] = await rep("start_latency", s["start"], p)
            elif metric == "recovery":
                n = s["rec_temporal"] if p == "temporal" else s["rec"]
                R[metric][p] = await rep("recovery", {"inflight": n, "lease": LEASE}, p)
            elif metric == "statements":
                if p == "temporal":
                    R[metric][p] = {"skipped": True}
                else:
                    R[metric][p] = await rep("statements", {"n": s["stmt"]}, p)

    out.append(report(R, peers, s))
    out.append(f"\n_Total time of this run: {time.monotonic() - started:.0f} s._\n")
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


def snapshot_and_reexec(ref: str) -> None:
    """Extract durable/, history/ and replay/ at ``ref`` plus this benchmarks/ directory into a temporary
    directory and run this same command from there (the repository itself is not touched)."""
    import shutil
    import subprocess
    import tempfile

    from ._common import ROOT

    packages = ["durable", "history", "replay"]
    if ref == "worktree":  # a copy of the work tree as it is now, frozen for the whole run
        commit = "work tree copied at " + datetime.datetime.now().strftime("%H:%M")
        target = tempfile.mkdtemp(prefix="durable-bench-worktree-")
        for package in packages:
            shutil.copytree(ROOT / package, f"{target}/{package}", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True,
                                text=True).stdout.strip()
        target = tempfile.mkdtemp(prefix=f"durable-bench-{commit}-")
        archive = subprocess.run(["git", "archive", commit, *packages], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    shutil.copytree(ROOT / "benchmarks", f"{target}/benchmarks",
                    ignore=shutil.ignore_patterns(".venv*", "__pycache__"))
    argv = [a for a in sys.argv[1:]]
    i = next(i for i, a in enumerate(argv) if a.startswith("--durable-ref"))
    del argv[i:i + (1 if "=" in argv[i] else 2)]
    env = dict(os.environ, BENCH_DURABLE_COMMIT=(commit if ref == "worktree" else f"as committed at {commit}"),
               PYTHONPATH=target)
    print(f"benchmarking Durable at {ref} ({commit}) from {target}", file=sys.stderr, flush=True)
    os.chdir(target)
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.compare_peers", *argv], env)


def report(R: dict[str, Any], peers: list[str], s: dict[str, Any]) -> str:
    parts: list[str] = []
    floor = R.get("floor", {})
    f_lat = _get(lambda r: r["median_ms"], floor.get("latency"))
    f_r1 = _get(lambda r: r["tx_per_s"], floor.get("rate1"))
    f_r4 = _get(lambda r: r["tx_per_s"], floor.get("rate4"))
    if floor:
        parts.append("### PostgreSQL's floor (asyncpg, single-row INSERT, one transaction each)\n\n"
                     "| figure | value |\n|---|---|\n"
                     f"| INSERT+COMMIT latency, median ms | {fmt(f_lat, 3)} |\n"
                     f"| INSERT+COMMIT latency, p95 ms | {fmt(_get(lambda r: r['p95_ms'], floor['latency']), 3)} |\n"
                     f"| `SELECT 1` round trip, median ms | "
                     f"{fmt(_get(lambda r: r['select1_ms'], floor['latency']), 3)} |\n"
                     f"| transactions/s, 1 connection | {fmt(f_r1)} |\n"
                     f"| transactions/s, 4 connections (4 processes) | {fmt(f_r4)} |\n")

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> tuple[str, Callable[[dict[str, Any]], Any]]:
        return (label, get)

    seq = R.get("sequential")
    if seq:
        d = seq["durable"]
        note = (f"One process (client and worker), one run at a time: DBOS `start_workflow_async` + `get_result`; "
                f"Absurd `spawn` + `work_batch()` (no polling); Temporal `execute_workflow`, steps are activities. "
                f"Runs: Durable {fmt(d.get('n'))} (per step: {d.get('step_runs')} × {d.get('steps')}-step workflow)")
        if "temporal" in seq:
            t = seq["temporal"]
            note += (f"; Temporal {fmt(t.get('n'))} runs and {t.get('step_runs')} × {t.get('steps')}-step "
                     f"(it is ~40× slower; fewer runs keep the benchmark short)")
        parts.append(table("1. Sequential latency (ms; lower is better)", [
            row("3-step workflow, median", lambda r: r["median_ms"]),
            row("3-step workflow, p95", lambda r: r["p95_ms"]),
            row("per step (long workflow), median", lambda r: r["per_step_ms"]),
            row("process CPU per 3-step workflow", lambda r: r["cpu_per_workflow_ms"]),
            row("process CPU per step (long workflow)", lambda r: r["cpu_per_step_ms"]),
        ], seq, peers, note + ". Process CPU: `time.process_time()` of the measuring process (client, worker "
                           "and, for DBOS, its threads; Temporal's server is another process and not counted)."))
    tp = R.get("throughput")
    if tp:
        note = (f"{s['tp_count']} 3-step workflows started at once by a client process, executed by 1 or 4 worker "
                f"processes (per-process concurrency 500), timed until all are complete (a count query every 20–50 ms)."
                f" DBOS: client `enqueue`, workers dequeue from a queue (1 s polling). Absurd: 4 spawning connections;"
                f" workers `start_worker(concurrency=500)`, one connection each.")
        if "temporal" in tp:
            note += (f" Temporal: {s['tp_count_temporal']} workflows only (at ~10–15 workflows/s, 2,000 would take "
                     f"minutes).")
        note += (" **Started at once**: the clock starts with the client's first start, so the client's start rate "
                 "is part of the figure. **Due at once**: the runs are created beforehand with one common due time "
                 "(Durable `start(delay=)`, DBOS `delay_seconds`, Temporal `start_delay`; Absurd has no delayed "
                 "spawn, so its tasks are spawned before its workers start and the clock starts when they report "
                 "ready) and the clock starts at that time: the workers' own rate.")
        parts.append(table("2. Throughput (higher is better)", [
            row("started at once, 1 worker: workflows/s", lambda r: r["s1"]["wf_per_s"]),
            row("started at once, 1 worker: steps/s", lambda r: r["s1"]["steps_per_s"]),
            row("started at once, 4 workers: workflows/s", lambda r: r["s4"]["wf_per_s"]),
            row("started at once, 4 workers: steps/s", lambda r: r["s4"]["steps_per_s"]),
            row("due at once, 1 worker: workflows/s", lambda r: r["d1"]["wf_per_s"]),
            row("due at once, 1 worker: steps/s", lambda r: r["d1"]["steps_per_s"]),
            row("due at once, 4 workers: workflows/s", lambda r: r["d4"]["wf_per_s"]),
            row("due at once, 4 workers: steps/s", lambda r: r["d4"]["steps_per_s"]),
            row("client: seconds to start (enqueue) them all", lambda r: r["s1"]["start_seconds"]),
        ], tp, peers, note))
        late = [f"{LABELS[p]} {k}" for p, r in tp.items() for k, v in r.items()
                if isinstance(v, dict) and v.get("late")]
        if late:
            parts.append(f"Warning: starts outlasted the common due time in: {', '.join(late)}.\n")
    st = R.get("start")
    if st:
        n = _get(lambda r: r["n"], st.get("durable"))
        parts.append(table("3. Start latency: `start()` returned → first step body runs in a worker process "
                           "(ms; lower is better)", [
                               row("median", lambda r: r["median_ms"]),
                               row("p99", lambda r: r["p99_ms"]),
                               row("runs", lambda r: r["n"]),
                           ], st, peers,
                           f"One idle worker process; the client starts one run, waits for it, starts the next "
                           f"({fmt(n)} runs for Durable, fewer for a peer that polls, within a time budget). "
                           f"Durable is woken by NOTIFY; DBOS's queue and Absurd's worker poll (1 s, 0.25 s); "
                           f"Temporal's workers long-poll the server."))
    rc = R.get("recovery")
    if rc:
        parts.append(table("4. Recovery: kill -9 a worker with runs in flight → all complete on a second worker "
                           "(s; lower is better)", [
                               row("runs in flight", lambda r: r["inflight"]),
                               row("lease / claim / activity timeout, s", lambda r: r["lease_seconds"]),
                               row("first run completed after kill, s", lambda r: r["first_seconds"]),
                               row("all runs completed after kill, s", lambda r: r["seconds"]),
                           ], rc, peers,
                           "Worker A runs every workflow into its second step, which hangs in A only; A is killed "
                           "with SIGKILL and worker B is started at the same moment (its start-up time counts). "
                           "Durable and Absurd take over once A's leases (claims) expire; DBOS has no lease: a "
                           "process launched with the dead one's executor id recovers its PENDING workflows at once "
                           "(another executor id never would, without DBOS Conductor); Temporal retries the "
                           f"activities after their start-to-close timeout. Temporal: {s['rec_temporal']} runs."))
    sm = R.get("statements")
    if sm:
        keys = [("round trips", "round_trips"), ("statements", "statements"),
                ("transactions (proxy)", "transactions"), ("commits (xact_commit)", "xact_commit"),
                ("rows written", "rows_written")]
        rows = [row(f"per step: {label}", lambda r, k=k: r["per_step"][k]) for label, k in keys]
        rows += [row(f"per 3-step workflow: {label}", lambda r, k=k: r["per_workflow"][k]) for label, k in keys]
        parts.append(table("5. PostgreSQL work per step and per workflow (lower is better)", rows,
                           {k: v for k, v in sm.items() if k != "temporal"}, [p for p in peers if p != "temporal"],
                           "pg_stat_statements is not loaded on this server (loading it needs a restart), so: a "
                           "wire-protocol proxy counts round trips (ReadyForQuery after a statement), statements "
                           "(Execute + Query) and transactions; the fresh database's `pg_stat_database.xact_commit` "
                           "and `pg_stat_user_tables` give commits (read-only ones included) and rows inserted + "
                           "updated + deleted. Per step = the difference between runs of 13-step and 3-step "
                           f"workflows ({s['stmt']} each, one at a time, in one process), divided by 10 × "
                           f"{s['stmt']}; per workflow = a run of 3-step workflows minus a run that starts and "
                           f"stops the peer only. Temporal: n/a (gRPC to its server, SQLite)."))
        for p, r in sm.items():
            if not isinstance(r, dict) or "by_statement_workflow" not in r:
                continue
            lines = [f"Statements executed per 3-step workflow, {LABELS[p]} (first words of each):", "",
                     "| per workflow | per extra step | statement |", "|---|---|---|"]
            per_step = r.get("by_statement_step", {})
            for text, count in sorted(r["by_statement_workflow"].items(), key=lambda kv: -kv[1]):
                lines.append(f"| {fmt(count)} | {fmt(per_step.get(text, 0.0))} | `{text}…` |")
            parts.append("\n".join(lines) + "\n")
    parts.append(targets(R, f_lat, f_r1, f_r4))
    return "\n".join(parts)


def targets(R: dict[str, Any], f_lat: Any, f_r1: Any, f_r4: Any) -> str:
    lines = ["### Durable vs PostgreSQL's floor and the targets of issue #5", "",
             "| figure | Durable | × floor | target | met? |", "|---|---|---|---|---|"]

    def add(label: str, value: Any, floor_multiple: str, target: str, met: bool | None) -> None:
        verdict = "–" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {label} | {fmt(value)} | {floor_multiple} | {target} | {verdict} |")

    seq = R.get("sequential", {}).get("durable")
    per_step = _get(lambda r: r["per_step_ms"], seq)
    med = _get(lambda r: r["median_ms"], seq)
    if seq:
        add("ms per step (long workflow)", per_step, ratio(per_step, f_lat) + " one commit", "≤ 1 ms",
            None if per_step is None else per_step <= 1.0)
        add("3-step workflow, median ms", med, ratio(med, f_lat) + " one commit", "–", None)
    tp = R.get("throughput", {})
    for mode, label in (("s", "started at once"), ("d", "due at once")):
        for workers in (1, 4):
            key = f"{mode}{workers}"
            mine = _get(lambda r, k=key: r[k]["wf_per_s"], tp.get("durable"))
            theirs = _get(lambda r, k=key: r[k]["wf_per_s"], tp.get("dbos"))
            steps = _get(lambda r, k=key: r[k]["steps_per_s"], tp.get("durable"))
            if mine is None:
                continue
            w = f"{workers} worker{'s' if workers > 1 else ''}"
            add(f"{label}, {w}: workflows/s", mine, "–", "≥ 20× DBOS: " + ratio(mine, theirs),
                None if theirs is None else mine >= 20 * theirs)
            floor = f_r4 if workers == 4 else f_r1
            add(f"{label}, {w}: steps/s", steps, ratio(steps, floor) + f" tx/s ({workers} conn)",
                "≥ floor tx/s at 4 connections" if workers == 4 else "–",
                None if workers != 4 or f_r4 is None else steps >= f_r4)
    st = R.get("start", {}).get("durable")
    sm = _get(lambda r: r["median_ms"], st)
    if sm is not None:
        add("start latency, median ms", sm, ratio(sm, f_lat) + " one commit", "≤ 5 ms", sm <= 5.0)
        add("start latency, p99 ms", _get(lambda r: r["p99_ms"], st), "–", "–", None)
    rc = R.get("recovery", {}).get("durable")
    secs = _get(lambda r: r["seconds"], rc)
    if secs is not None:
        lease = rc["lease_seconds"]
        add(f"recovery of {fmt(rc['inflight'])} runs, s", secs, "–", f"≤ lease ({lease:g} s) + a few (3) s",
            secs <= lease + 3)
    stm = R.get("statements", {}).get("durable")
    if stm and "error" not in stm:
        add("round trips per step", stm["per_step"]["round_trips"], "–", "1", stm["per_step"]["round_trips"] <= 1.05)
        add("commits per step", stm["per_step"]["transactions"], "–", "1", stm["per_step"]["transactions"] <= 1.05)
    return "\n".join(lines) + "\n"


def run() -> None:
    """``main()``, killing the measurement in progress (and its workers) if interrupted or terminated."""
    import signal

    from ._common import kill_active_measurements

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        asyncio.run(main())
    finally:
        kill_active_measurements()


if __name__ == "__main__":
    run()
