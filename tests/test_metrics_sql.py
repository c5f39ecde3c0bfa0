"""Run metrics computed by the database (``Store.run_metrics``, ``engine.get_metrics``, ``durable stats``): every
store gives exactly the numbers of a plain Python reference, for a known set of runs and for any set hypothesis
makes up; the durations of real runs on a virtual clock come out exactly; periods are parsed strictly."""

from __future__ import annotations

import itertools
import json
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable
from durable import Engine, RunMetrics
from durable._cli import main
from durable._durations import parse_duration
from durable.testing import TestEngine
from history import FINISHED_STATUSES, STATUSES, NewRun, RunStats, Store
from tests.run_rows import RunRows
from tests.test_store_contract import raw

BASE = datetime(2030, 1, 1, tzinfo=UTC)
S = 1_000_000  # microseconds in a second


@pytest.fixture
async def rows(store_kind: str, store_url: str, store: Store) -> AsyncIterator[RunRows]:
    opened = await RunRows(store_kind, store_url, store).open()
    yield opened
    await opened.close()


# --- the reference -------------------------------------------------------------------------------------------


class Spec:
    """A run to make: its workflow, status, creation time, and (microseconds after creation) start and finish."""

    def __init__(self, workflow: str, status: str, created: datetime, start_us: int | None, run_us: int) -> None:
        self.workflow, self.status, self.created = workflow, status, created
        self.started = None if start_us is None else created + timedelta(microseconds=start_us)
        finished = status in FINISHED_STATUSES
        self.finished = (self.started or created) + timedelta(microseconds=run_us) if finished else None

    @property
    def duration_us(self) -> int | None:
        if self.finished is None:
            return None
        return (self.finished - (self.started or self.created)) // timedelta(microseconds=1)


def reference_percentile(values: list[int], p: float) -> float | None:
    """Linear interpolation between the two nearest ranks (the definition of PostgreSQL's percentile_cont)."""
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p
    f, c = math.floor(k), math.ceil(k)
    return float(values[f]) if f == c else values[f] + (values[c] - values[f]) * (k - f)


def reference(specs: list[Spec], workflow: str | None, since: datetime) -> RunStats:
    chosen = [s for s in specs if s.created >= since and (workflow is None or s.workflow == workflow)]
    durations = [d for s in chosen if (d := s.duration_us) is not None]
    return RunStats(
        workflow=workflow,
        total=len(chosen),
        completed=sum(s.status in ("completed", "continued") for s in chosen),
        failed=sum(s.status == "failed" for s in chosen),
        cancelled=sum(s.status == "cancelled" for s in chosen),
        running=sum(s.status not in FINISHED_STATUSES for s in chosen),
        duration_sum_us=sum(durations),
        p50_us=reference_percentile(durations, 0.5),
        p95_us=reference_percentile(durations, 0.95),
        p99_us=reference_percentile(durations, 0.99),
    )


async def make_runs(store: Store, rows: RunRows, specs: list[Spec]) -> None:
    for spec in specs:
        run_id = uuid.uuid4().hex
        await store.create_run(NewRun(id=run_id, workflow=spec.workflow, input=raw(1), random_seed=1))
        await rows.set(run_id, status=spec.status, created_at=spec.created, started_at=spec.started,
                       finished_at=spec.finished)


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


KNOWN = [
    # checkout: finished durations 0.5, 1, 2, 3, 4, 5, 10 s; one still running; one created before the period
    Spec("checkout", "completed", at(10), 1 * S, 1 * S),
    Spec("checkout", "completed", at(20), 0, 2 * S),
    Spec("checkout", "completed", at(30), 5 * S, 3 * S),
    Spec("checkout", "completed", at(40), 0, 10 * S),
    Spec("checkout", "continued", at(50), 0, 4 * S),
    Spec("checkout", "failed", at(60), 0, 5 * S),
    Spec("checkout", "cancelled", at(70), None, S // 2),  # cancelled before it started: from its creation
    Spec("checkout", "running", at(80), 0, 0),
    Spec("checkout", "completed", at(-10), 0, 99 * S),  # created before the period: not counted
    # email: 100 ms and 300 ms; a pending run
    Spec("email", "completed", at(5), 0, S // 10),
    Spec("email", "completed", at(6), 0, 3 * S // 10),
    Spec("email", "pending", at(7), None, 0),
]


async def test_a_known_set_of_runs_gives_exactly_the_expected_numbers(store: Store, rows: RunRows) -> None:
    await make_runs(store, rows, KNOWN)
    total, checkout, email = await store.run_metrics(None, BASE)
    # By hand: 7 sorted durations; p50 is the 4th (3 s); p95 sits 0.7 of the way from 5 s to 10 s.
    assert checkout.p50_us == 3_000_000.0
    assert checkout.p95_us == pytest.approx(8_500_000.0)
    assert checkout.p99_us == pytest.approx(5_000_000 + 0.94 * 5_000_000)
    counts = (checkout.total, checkout.completed, checkout.failed, checkout.cancelled, checkout.running)
    assert counts == (8, 5, 1, 1, 1)
    assert checkout.duration_sum_us == 25_500_000
    assert email == RunStats("email", 3, 2, 0, 0, 1, 400_000, 200_000.0, 290_000.0, 298_000.0)
    assert total.workflow is None and (total.total, total.completed, total.running) == (11, 7, 2)
    for got, workflow in ((total, None), (checkout, "checkout"), (email, "email")):
        assert got == reference(KNOWN, workflow, BASE)  # exactly, to the last bit of every float
    assert await store.run_metrics("checkout", BASE) == [checkout]
    assert await store.run_metrics("nothing", BASE) == [RunStats("nothing")]
    assert await store.run_metrics(None, at(1000)) == [RunStats(None)]


_examples = itertools.count()
_specs = st.lists(
    st.builds(
        lambda workflow, status, created_us, start_us, run_us: (workflow, status, created_us, start_us, run_us),
        st.sampled_from(["a", "b", "ü"]),
        st.sampled_from(STATUSES),
        st.integers(-10 * S, 10**4 * S),
        st.none() | st.integers(0, 60 * S),
        st.integers(0, 10**5 * S),
    ),
    max_size=15,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw_specs=_specs, workflow=st.none() | st.sampled_from(["a", "ü", "missing"]))
async def test_every_store_computes_what_the_reference_does(
    store: Store, rows: RunRows, raw_specs: list[tuple[str, str, int, int | None, int]], workflow: str | None
) -> None:
    # Each example lives in a window of its own, later than every earlier example's runs, so the shared database
    # holds nothing else created since its start.
    since = BASE + timedelta(days=365 * (1 + next(_examples)))
    specs = [Spec(w, status, since + timedelta(microseconds=c), start, run) for w, status, c, start, run in raw_specs]
    await make_runs(store, rows, specs)
    got = await store.run_metrics(workflow, since)
    if workflow is not None:
        assert got == [reference(specs, workflow, since)]
        return
    names = sorted({s.workflow for s in specs if s.created >= since})
    assert got == [reference(specs, None, since), *(reference(specs, name, since) for name in names)]


# --- engine.get_metrics ----------------------------------------------------------------------------------------


@durable.workflow(name="metrics.sleeper")
async def sleeper(ctx: durable.WorkflowContext, seconds: int) -> int:
    await ctx.sleep(timedelta(seconds=seconds))
    if seconds == 5:
        raise ValueError("five is a bad number")
    return seconds


async def test_get_metrics_of_real_runs_on_a_virtual_clock_is_exact() -> None:
    async with TestEngine(workflows=[sleeper], start=BASE) as engine:
        for seconds in (1, 2, 3, 10):
            await engine.wait_completed(await engine.start(sleeper, seconds))
        await engine.wait_failed(await engine.start(sleeper, 5))
        metrics = await engine.engine.get_metrics(period="1h")
        only = await engine.engine.get_metrics("metrics.sleeper", period=timedelta(hours=1))
    assert isinstance(metrics, RunMetrics)
    assert (metrics.total, metrics.completed, metrics.failed, metrics.cancelled, metrics.running) == (5, 4, 1, 0, 0)
    assert metrics.success_rate == 0.8
    assert metrics.avg_ms == 4200.0  # (1 + 2 + 3 + 10 + 5) s / 5
    assert (metrics.p50_ms, metrics.p95_ms) == (3000.0, pytest.approx(9000.0))  # 0.8 of the way from 5 s to 10 s
    assert metrics.period == 3600.0 and metrics.since == engine.now() - timedelta(hours=1)
    assert list(metrics.by_workflow) == ["metrics.sleeper"]
    assert metrics.by_workflow["metrics.sleeper"] == msgspec_replace(metrics, workflow="metrics.sleeper")
    assert only == msgspec_replace(metrics, workflow="metrics.sleeper")


def msgspec_replace(metrics: RunMetrics, **changes: object) -> RunMetrics:
    import msgspec

    return msgspec.structs.replace(metrics, by_workflow={}, **changes)


@durable.workflow(name="metrics.quick")
async def quick(ctx: durable.WorkflowContext, fail: bool) -> str:
    if fail:
        raise RuntimeError("asked to fail")
    return "ok"


async def test_get_metrics_agrees_with_the_runs_recorded_on_every_store(engine_url: str) -> None:
    async with Engine(engine_url, workflows=[quick]) as engine:
        handles = [await engine.start(quick, i == 2) for i in range(4)]
        for handle in handles:
            with pytest.raises(durable.WorkflowFailed) if handle is handles[2] else _nothing():
                await handle.result(timeout=30)
        metrics = await engine.get_metrics()
        runs = (await engine.store.list_runs(limit=10)).runs
    durations = sorted((r.finished_at - r.started_at) // timedelta(microseconds=1) for r in runs)  # type: ignore[operator]
    assert (metrics.total, metrics.completed, metrics.failed, metrics.running) == (4, 3, 1, 0)
    assert metrics.success_rate == 0.75
    assert metrics.avg_ms == sum(durations) / 4 / 1000
    assert metrics.p50_ms == reference_percentile(durations, 0.5) / 1000  # type: ignore[operator]
    assert metrics.p99_ms == reference_percentile(durations, 0.99) / 1000  # type: ignore[operator]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def test_get_metrics_of_nothing_is_zeros_and_none() -> None:
    async with TestEngine(workflows=[]) as engine:
        metrics = await engine.engine.get_metrics(period="15m")
    assert (metrics.total, metrics.success_rate, metrics.avg_ms, metrics.p50_ms, metrics.by_workflow) == (
        0, None, None, None, {}
    )


@pytest.mark.parametrize("period", ["3x", "", "24", "h", "-1h", "0s", "1.5h", "24 hours", 24, timedelta(0)])
async def test_a_bad_period_is_refused_naming_the_accepted_forms(period: object) -> None:
    async with TestEngine(workflows=[]) as engine:
        with pytest.raises(ValueError, match="period") as caught:
            await engine.engine.get_metrics(period=period)  # type: ignore[arg-type]
    assert "30s, 15m, 24h, 7d, 2w" in str(caught.value) or "positive" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("15m", timedelta(minutes=15)), ("24h", timedelta(hours=24)),
     ("7d", timedelta(days=7)), ("2w", timedelta(weeks=2)), (" 7D ", timedelta(days=7)),
     (timedelta(minutes=3), timedelta(minutes=3))],
)  # fmt: skip
def test_parse_duration_accepts_the_documented_forms(text: str | timedelta, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_parse_duration_refuses_a_duration_too_long_for_python() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("99999999999999w")


# --- durable stats ---------------------------------------------------------------------------------------------


async def test_durable_stats_prints_a_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'stats.db'}"
    async with Engine(url, workflows=[quick]) as engine:
        for fail in (False, False, True):
            handle = await engine.start(quick, fail)
            with pytest.raises(durable.WorkflowFailed) if fail else _nothing():
                await handle.result(timeout=30)
    capsys.readouterr()
    assert await _cli("stats", "--database-url", url) == 0
    out = capsys.readouterr().out
    assert "Runs created in the last 24h" in out
    [line] = [line for line in out.splitlines() if "metrics.quick" in line]
    assert line.split()[:7] == ["metrics.quick", "3", "2", "1", "0", "0", "66.7%"]
    assert await _cli("stats", "--database-url", url, "--json", "--workflow", "metrics.quick", "--period", "2w") == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["workflow"], document["total"], document["failed"], document["period"]) == (
        "metrics.quick", 3, 1, 14 * 86400.0
    )
    assert await _cli("stats", "--database-url", url, "--workflow", "other") == 0
    assert "no runs of other created in the last 24h" in capsys.readouterr().out


async def test_durable_stats_refuses_a_bad_period(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _cli("stats", "--database-url", f"sqlite:///{tmp_path / 's.db'}", "--period", "3x") == 2
    err = capsys.readouterr().err
    assert "invalid duration '3x'" in err and "30s, 15m, 24h, 7d, 2w" in err and "timedelta" not in err


async def _cli(*argv: str) -> int:
    """``durable ARGV`` on a thread (``main`` runs its own event loop)."""
    import asyncio

    return await asyncio.to_thread(main, list(argv))
