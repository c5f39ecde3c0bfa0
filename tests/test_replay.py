"""Replay: a recorded history re-executes to the same commands; changed code gets a precise divergence report."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

import durable
from history import MemoryStore, RecordedEvent, StepCompleted
from replay import NonDeterminismError, WorkflowInstance

from . import wf_samples as wf  # noqa: F401 - registers the workflows the golden histories name

GOLDEN = Path(__file__).parent / "golden"


async def record(workflow: durable.Workflow, *args: object) -> list[RecordedEvent]:
    """Run ``workflow`` to completion on an in-memory engine and return its history."""
    async with durable.Engine(store=MemoryStore(), workflows=[workflow], horizon=1.0) as engine:
        run = await engine.start(workflow, *args)
        await run.result(timeout=10)
        return await engine.get_history(run.id)


def replay(workflow: durable.Workflow, history: list[RecordedEvent]) -> WorkflowInstance:
    instance = WorkflowInstance(workflow, history[0], step_failed=durable.StepFailed)
    instance.replay(history)
    return instance


def variant(fn, name: str) -> durable.Workflow:
    """Another version of a workflow's code under the same persisted name (not registered globally)."""
    return durable.Workflow(fn, name=name)


@durable.step
async def fetch(item: str) -> str:
    return f"<{item}>"


@durable.step
async def fetch_renamed(item: str) -> str:
    return f"<{item}>"


@durable.step
async def slow_fetch(item: str, delay: float) -> str:
    await asyncio.sleep(delay)
    return f"<{item}>"


async def v1(ctx: durable.WorkflowContext, items: list[str]) -> list[str]:
    out = [await fetch(items[0])]
    await ctx.sleep(0.01)
    out.append(await fetch(items[1]))
    return out


async def test_same_code_replays_to_the_same_result_without_running_steps() -> None:
    history = await record(variant(v1, "v"), ["a", "b"])
    calls: list[str] = []

    async def spy_v1(ctx: durable.WorkflowContext, items: list[str]) -> list[str]:
        calls.append("run")
        return await v1(ctx, items)

    instance = replay(variant(spy_v1, "v"), history)
    assert instance.outcome is not None and instance.outcome.result is not None
    assert msgspec.json.decode(instance.outcome.result) == ["<a>", "<b>"]
    assert instance.take_new_steps() == [] and instance.take_new_events() == []
    assert calls == ["run"]


async def test_parallel_steps_are_numbered_in_argument_order_whatever_finishes_first() -> None:
    async def racing(ctx: durable.WorkflowContext) -> list[str]:
        return list(await asyncio.gather(slow_fetch("slow", 0.05), slow_fetch("fast", 0.0)))

    history = await record(variant(racing, "racing"))
    completed = [r.event for r in history if isinstance(r.event, StepCompleted)]
    assert [(e.command_id, msgspec.json.decode(e.result)) for e in completed] == [(2, "<fast>"), (1, "<slow>")]
    instance = replay(variant(racing, "racing"), history)
    assert msgspec.json.decode(instance.outcome.result) == ["<slow>", "<fast>"]


def _diverge(code, history: list[RecordedEvent]) -> NonDeterminismError:
    with pytest.raises(NonDeterminismError) as info:
        replay(variant(code, "v"), history)
    return info.value


async def test_renamed_step_is_reported_with_event_number_both_sides_location_and_hint() -> None:
    history = await record(variant(v1, "v"), ["a", "b"])

    async def renamed(ctx: durable.WorkflowContext, items: list[str]) -> list[str]:
        out = [await fetch_renamed(items[0])]  # the changed line
        return out

    error = _diverge(renamed, history)
    assert error.seq == 2
    assert error.recorded == "step 'fetch' with arguments [\"a\"]"
    assert error.issued == "step 'fetch_renamed' with arguments [\"a\"]"
    assert error.location is not None and error.location.startswith(__file__)
    assert "renamed" in error.hint
    assert "run '" in str(error) and "at event 2" in str(error)


async def test_changed_arguments_are_reported() -> None:
    history = await record(variant(v1, "v"), ["a", "b"])

    async def changed(ctx: durable.WorkflowContext, items: list[str]) -> list[str]:
        return [await fetch(items[0].upper())]

    error = _diverge(changed, history)
    assert error.recorded == "step 'fetch' with arguments [\"a\"]"
    assert error.issued == "step 'fetch' with arguments [\"A\"]"
    assert "arguments changed" in error.hint


async def test_removed_step_is_reported() -> None:
    history = await record(variant(v1, "v"), ["a", "b"])

    async def removed(ctx: durable.WorkflowContext, items: list[str]) -> list[str]:
        out = [await fetch(items[0])]
        await ctx.sleep(0.01)
        return out

    error = _diverge(removed, history)
    assert error.recorded == "step 'fetch' with arguments [\"b\"]"
    assert error.issued.startswith("nothing: the code no longer issues this command")
    assert "removed" in error.hint


async def test_added_step_before_recorded_ones_is_reported() -> None:
    history = await record(variant(v1, "v"), ["a", "b"])

    async def added(ctx: durable.WorkflowContext, items: list[str]) -> list[str]:
        out = [await fetch(items[0])]
        out.append(await fetch_renamed("new"))
        await ctx.sleep(0.01)
        out.append(await fetch(items[1]))
        return out

    error = _diverge(added, history)
    assert error.recorded == "timer of 0.01s"
    assert error.issued == "step 'fetch_renamed' with arguments [\"new\"]"


async def test_reordered_parallel_steps_are_reported() -> None:
    async def ordered(ctx: durable.WorkflowContext) -> list[str]:
        return list(await asyncio.gather(fetch("x"), fetch_renamed("y")))

    async def reordered(ctx: durable.WorkflowContext) -> list[str]:
        return list(await asyncio.gather(fetch_renamed("y"), fetch("x")))

    history = await record(variant(ordered, "v"))
    error = _diverge(reordered, history)
    assert error.recorded == "step 'fetch' with arguments [\"x\"]"
    assert error.issued == "step 'fetch_renamed' with arguments [\"y\"]"
    assert "reordered" in error.hint


async def test_changed_sleep_duration_is_reported() -> None:
    history = await record(variant(v1, "v"), ["a", "b"])

    async def longer(ctx: durable.WorkflowContext, items: list[str]) -> list[str]:
        out = [await fetch(items[0])]
        await ctx.sleep(5)
        return out

    error = _diverge(longer, history)
    assert (error.recorded, error.issued) == ("timer of 0.01s", "timer of 5s")
    assert "sleep duration changed" in error.hint


async def test_step_added_after_the_end_of_a_finished_run_is_reported() -> None:
    history = await record(variant(v1, "v"), ["a", "b"])

    async def extended(ctx: durable.WorkflowContext, items: list[str]) -> list[str]:
        out = await v1(ctx, items)
        out.append(await fetch("c"))
        return out

    error = _diverge(extended, history)
    assert error.recorded == "run_completed"
    assert "still waiting" in error.issued


async def test_user_code_catching_everything_cannot_swallow_a_divergence() -> None:
    history = await record(variant(v1, "v"), ["a", "b"])

    async def greedy(ctx: durable.WorkflowContext, items: list[str]) -> list[str]:
        try:
            return [await fetch_renamed(items[0])]
        except Exception:
            return ["swallowed"]

    error = _diverge(greedy, history)
    assert error.issued == "step 'fetch_renamed' with arguments [\"a\"]"


# -- golden histories: recorded once, checked in, replayed by every CI run --------------------------------------


@pytest.mark.parametrize("path", durable.replay.history_files(GOLDEN), ids=lambda p: p.stem)
def test_golden_histories_replay(path: Path) -> None:
    history = durable.replay.load_history(path).events  # the documented file format (docs/history-format.md)
    definition = durable.registered_workflows()[history[0].event.workflow]
    if path.stem.startswith("broken_"):
        with pytest.raises(NonDeterminismError):
            replay(definition, history)
        return
    instance = replay(definition, history)
    recorded = history[-1].event
    assert instance.outcome is not None
    assert msgspec.json.decode(instance.outcome.result) == msgspec.json.decode(recorded.result)


def test_golden_set_has_a_deliberately_broken_history() -> None:
    names = [p.stem for p in GOLDEN.glob("*.json")]
    assert any(n.startswith("broken_") for n in names) and len(names) >= 3


# -- versioning with ctx.patched ---------------------------------------------------------------------------------


async def old_tax(ctx: durable.WorkflowContext, amount: int) -> str:
    return await fetch(f"old-tax:{amount}")


async def new_tax(ctx: durable.WorkflowContext, amount: int) -> str:
    if ctx.patched("use-new-tax-api"):
        return await fetch_renamed(f"new-tax:{amount}")
    return await fetch(f"old-tax:{amount}")


async def test_patched_keeps_old_runs_on_the_old_path_and_new_runs_on_the_new() -> None:
    old_history = await record(variant(old_tax, "tax"), 10)
    replayed_old = replay(variant(new_tax, "tax"), old_history)
    assert msgspec.json.decode(replayed_old.outcome.result) == "<old-tax:10>"

    new_history = await record(variant(new_tax, "tax"), 10)
    assert [type(r.event).__name__ for r in new_history][:3] == ["RunStarted", "PatchMarked", "StepScheduled"]
    replayed_new = replay(variant(new_tax, "tax"), new_history)
    assert msgspec.json.decode(replayed_new.outcome.result) == "<new-tax:10>"


async def test_patched_takes_the_new_path_once_an_old_run_is_past_its_history() -> None:
    async def old(ctx: durable.WorkflowContext) -> list[str]:
        first = await fetch("a")
        return [first, await fetch("b")]

    async def patched(ctx: durable.WorkflowContext) -> list[str]:
        first = await fetch("a")
        second = await fetch_renamed("b2") if ctx.patched("p1") else await fetch("b")
        return [first, second]

    full = await record(variant(old, "p"))
    # The old code had run only its first step when the new code was deployed.
    cut = [r for r in full if r.seq <= 3]
    instance = WorkflowInstance(variant(patched, "p"), cut[0], step_failed=durable.StepFailed)
    instance.replay(cut)
    (pending,) = instance.take_new_steps()
    assert pending.name == "fetch_renamed"
    assert [type(e).__name__ for e in instance.take_new_events()] == ["PatchMarked"]
