"""OpenTelemetry traces and metrics of runs, read back with the SDK's in-memory exporter and metric reader.

Each test passes its own providers to the engine (the global ones are set once per process); one test runs in a
subprocess to use the global providers. Span trees are asserted whole: names, kinds, parentage, attributes,
status and events.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

import durable
import history
from durable._telemetry import derived_origin, extract, inject

ROOT = Path(__file__).resolve().parent.parent


# -- workflows ----------------------------------------------------------------------------------------------------


@durable.step
async def tel_add(x: int, y: int) -> int:
    return x + y


@durable.step(retry=durable.Retry(max_attempts=3, backoff="constant", base=0.3))
async def tel_flaky(x: int) -> int:
    info = durable.current_step()
    if info is not None and info.attempt == 1:
        raise ConnectionError("the service hiccuped")
    return x * 10


@durable.step
async def tel_broken(x: int) -> int:
    raise durable.NonRetryableError(f"cannot handle {x}")


@durable.workflow(name="tel_two_steps")
async def two_steps(ctx: durable.WorkflowContext, x: int) -> int:
    y = await tel_add(x, 1)
    return await tel_add(y, 2)


@durable.workflow(name="tel_retries")
async def retries(ctx: durable.WorkflowContext, x: int) -> int:
    return await tel_flaky(x)


@durable.workflow(name="tel_fails")
async def fails(ctx: durable.WorkflowContext, x: int) -> int:
    return await tel_broken(x)


@durable.workflow(name="tel_sleeps")
async def sleeps(ctx: durable.WorkflowContext, seconds: float) -> int:
    x = await tel_add(1, 1)
    await ctx.sleep(seconds)
    return await tel_add(x, 1)


@durable.workflow(name="tel_child")
async def child(ctx: durable.WorkflowContext, x: int) -> int:
    await ctx.wait_for_event("go")
    return await tel_add(x, 100)


@durable.workflow(name="tel_parent")
async def parent(ctx: durable.WorkflowContext, x: int) -> int:
    y = await tel_add(x, 1)
    return int(await ctx.call_workflow(child, y))


@durable.workflow(name="tel_asks")
async def asks(ctx: durable.WorkflowContext) -> str:
    answer = await ctx.wait_for_input("approval", prompt="Ship it?")
    await ctx.wait_for_event("never")  # cancelled while it waits
    return str(answer)


WORKFLOWS = [two_steps, retries, fails, sleeps, child, parent, asks]


# -- reading spans and metrics --------------------------------------------------------------------------------------


@dataclass
class Otel:
    """An SDK tracer provider and meter provider of one test, with what they recorded."""

    tracer_provider: TracerProvider = field(default_factory=TracerProvider)
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    meter_provider: MeterProvider = field(init=False)

    def __post_init__(self) -> None:
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def engine(self, url: str, **options: Any) -> durable.Engine:
        return durable.Engine(
            url, workflows=WORKFLOWS, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider,
            **options,
        )  # fmt: skip

    def spans(self) -> list[ReadableSpan]:
        return sorted(self.exporter.get_finished_spans(), key=lambda s: (s.start_time or 0, s.name))

    def metrics(self) -> dict[str, dict[frozenset[tuple[str, Any]], Any]]:
        """Metric name -> attributes -> value (a sum or gauge's value; a histogram's count)."""
        found: dict[str, dict[frozenset[tuple[str, Any]], Any]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "durable"
                for metric in scope.metrics:
                    points = found.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        if isinstance(point, HistogramDataPoint):
                            points[key] = point.count
                        else:
                            assert isinstance(point, NumberDataPoint)
                            points[key] = point.value
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    telemetry = Otel()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


def shape(spans: list[ReadableSpan]) -> list[Any]:
    """The spans as nested ``(name, [children])`` in start order; roots are spans without a parent among them."""
    ids = {span.context.span_id for span in spans}

    def below(parent: int | None) -> list[Any]:
        out = []
        for span in spans:
            own_parent = span.parent.span_id if span.parent is not None else None
            if (parent is None and own_parent not in ids) or (parent is not None and own_parent == parent):
                out.append((span.name, below(span.context.span_id)))
        return out

    return below(None)


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(event.name, dict(event.attributes or {})) for event in span.events]


def step_attributes(
    run_id: str, workflow: str, step: str, attempt: int, command_id: int, outcome: str
) -> dict[str, Any]:
    return {
        "durable.run_id": run_id,
        "durable.workflow": workflow,
        "durable.step": step,
        "durable.attempt": attempt,
        "durable.queue": "default",
        "durable.command_id": command_id,
        "durable.outcome": outcome,
    }


# -- spans ---------------------------------------------------------------------------------------------------------


async def test_a_two_step_run_is_one_trace_with_a_span_per_step(otel: Otel, engine_url: str) -> None:
    async with otel.engine(engine_url) as engine:
        run = await engine.start(two_steps, 1)
        assert await run.result(timeout=30) == 4
    spans = otel.spans()
    assert shape(spans) == [
        ("durable.start tel_two_steps", [
            ("durable.run tel_two_steps", [("durable.step tel_add", []), ("durable.step tel_add", [])]),
        ]),
    ]  # fmt: skip
    start, activation = only(spans, "durable.start tel_two_steps"), only(spans, "durable.run tel_two_steps")
    first, second = named(spans, "durable.step tel_add")
    assert {span.context.trace_id for span in spans} == {start.context.trace_id}
    assert start.kind == SpanKind.PRODUCER and start.parent is None
    assert dict(start.attributes or {}) == {
        "durable.run_id": run.id, "durable.workflow": "tel_two_steps", "durable.queue": "default",
    }  # fmt: skip
    assert activation.kind == SpanKind.CONSUMER
    assert dict(activation.attributes or {}) == {
        "durable.run_id": run.id, "durable.workflow": "tel_two_steps", "durable.queue": "default",
        "durable.activation": 1, "durable.outcome": "completed",
    }  # fmt: skip
    assert activation.links == () or list(activation.links) == []
    assert activation.status.status_code == StatusCode.UNSET and events(activation) == []
    assert dict(first.attributes or {}) == step_attributes(run.id, "tel_two_steps", "tel_add", 1, 1, "completed")
    assert dict(second.attributes or {}) == step_attributes(run.id, "tel_two_steps", "tel_add", 1, 2, "completed")
    for step in (first, second):
        assert step.kind == SpanKind.INTERNAL and step.status.status_code == StatusCode.UNSET
        assert events(step) == []
        assert activation.start_time <= step.start_time <= step.end_time <= activation.end_time  # type: ignore[operator]
    assert first.end_time <= second.start_time  # type: ignore[operator]


async def test_a_failed_attempt_is_an_error_span_with_its_exception_and_a_retry_event(
    otel: Otel, engine_url: str
) -> None:
    async with otel.engine(engine_url) as engine:
        run = await engine.start(retries, 4)
        assert await run.result(timeout=30) == 40
        recorded = [e.event for e in await engine.get_history(run.id) if type(e.event).__name__ == "StepFailed"]
    spans = otel.spans()
    assert shape(spans) == [
        ("durable.start tel_retries", [
            ("durable.run tel_retries", [("durable.step tel_flaky", []), ("durable.step tel_flaky", [])]),
        ]),
    ]  # fmt: skip
    failed, succeeded = named(spans, "durable.step tel_flaky")
    assert dict(failed.attributes or {}) == step_attributes(run.id, "tel_retries", "tel_flaky", 1, 1, "retrying")
    assert dict(succeeded.attributes or {}) == step_attributes(run.id, "tel_retries", "tel_flaky", 2, 1, "completed")
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "ConnectionError: the service hiccuped"
    (exception, exception_attributes), (retry, retry_attributes) = events(failed)
    assert exception == "exception"
    assert exception_attributes["exception.type"] == "ConnectionError"
    assert exception_attributes["exception.message"] == "the service hiccuped"
    assert "tel_flaky" in exception_attributes["exception.stacktrace"]
    assert retry == "retry scheduled" and retry_attributes["durable.attempt"] == 2
    retry_at = datetime.fromisoformat(retry_attributes["durable.retry_at"])
    assert [event.retry_at for event in recorded] == [retry_at]  # type: ignore[attr-defined]
    assert succeeded.status.status_code == StatusCode.UNSET and events(succeeded) == []
    assert dict(only(spans, "durable.run tel_retries").attributes or {})["durable.outcome"] == "completed"


async def test_a_failed_run_is_an_error_activation_span(otel: Otel, engine_url: str) -> None:
    async with otel.engine(engine_url) as engine:
        run = await engine.start(fails, 7)
        with pytest.raises(durable.WorkflowFailed):
            await run.result(timeout=30)
    spans = otel.spans()
    assert shape(spans) == [
        ("durable.start tel_fails", [("durable.run tel_fails", [("durable.step tel_broken", [])])]),
    ]
    step, activation = only(spans, "durable.step tel_broken"), only(spans, "durable.run tel_fails")
    assert dict(step.attributes or {}) == step_attributes(run.id, "tel_fails", "tel_broken", 1, 1, "failed")
    assert step.status.status_code == StatusCode.ERROR
    assert [name for name, _ in events(step)] == ["exception"]
    assert events(step)[0][1]["exception.type"] == "durable.NonRetryableError"
    assert dict(activation.attributes or {})["durable.outcome"] == "failed"
    assert activation.status.status_code == StatusCode.ERROR
    assert activation.status.description is not None and "cannot handle 7" in activation.status.description
    (name, attributes), = events(activation)
    assert name == "exception" and "cannot handle 7" in attributes["exception.message"]


async def test_a_timer_within_the_horizon_is_two_events_of_one_activation(otel: Otel, engine_url: str) -> None:
    async with otel.engine(engine_url, horizon=60.0) as engine:
        run = await engine.start(sleeps, 0.05)
        assert await run.result(timeout=30) == 3
        recorded = {type(e.event).__name__: e.event for e in await engine.get_history(run.id)}
    spans = otel.spans()
    activation = only(spans, "durable.run tel_sleeps")
    assert shape(spans) == [
        ("durable.start tel_sleeps", [
            ("durable.run tel_sleeps", [("durable.step tel_add", []), ("durable.step tel_add", [])]),
        ]),
    ]  # fmt: skip
    started = recorded["TimerStarted"]
    assert events(activation) == [
        ("timer started", {"durable.command_id": 2, "durable.fire_at": started.fire_at.isoformat()}),  # type: ignore[attr-defined]
        ("timer fired", {"durable.command_id": 2}),
    ]


async def test_a_released_run_is_activations_of_one_trace_without_duplicate_step_spans(
    otel: Otel, engine_url: str
) -> None:
    # Horizon 0: the sleep releases the run; the next claim replays the history (the first step is answered from
    # it, not run again) and goes on. Each activation is a span; replay adds none. (The sleep is long enough for
    # the driver to see it still ahead when it decides to release: milliseconds.)
    async with otel.engine(engine_url, horizon=0.0, poll_interval=0.05) as engine:
        run = await engine.start(sleeps, 0.3)
        assert await run.result(timeout=30) == 3
    spans = otel.spans()
    assert shape(spans) == [
        ("durable.start tel_sleeps", [
            ("durable.run tel_sleeps", [("durable.step tel_add", [])]),
            ("durable.run tel_sleeps", [("durable.step tel_add", [])]),
        ]),
    ]  # fmt: skip
    start = only(spans, "durable.start tel_sleeps")
    first, second = named(spans, "durable.run tel_sleeps")
    assert {span.context.trace_id for span in spans} == {start.context.trace_id}
    assert dict(first.attributes or {}) == {
        "durable.run_id": run.id, "durable.workflow": "tel_sleeps", "durable.queue": "default",
        "durable.activation": 1, "durable.released": "waiting",
    }  # fmt: skip
    assert dict(second.attributes or {}) == {
        "durable.run_id": run.id, "durable.workflow": "tel_sleeps", "durable.queue": "default",
        "durable.activation": 2, "durable.outcome": "completed",
    }  # fmt: skip
    assert list(first.links) == []
    (link,) = second.links
    assert link.context.span_id == start.context.span_id and link.context.trace_id == start.context.trace_id
    assert [name for name, _ in events(first)] == ["timer started"]
    assert [name for name, _ in events(second)] == ["timer fired"]
    steps = named(spans, "durable.step tel_add")
    assert [dict(s.attributes or {})["durable.command_id"] for s in steps] == [1, 3]


async def wait_until_waiting(engine: durable.Engine, *run_ids: str) -> None:
    """Poll until every run is released, waiting (bounded: the test's own timeout)."""
    while True:
        states = [(await engine.get_execution(run_id)).status for run_id in run_ids]
        if all(state == "waiting" for state in states):
            return
        await asyncio.sleep(0.02)


async def test_a_child_run_is_in_its_parents_trace_under_the_activation_that_started_it(
    otel: Otel, engine_url: str
) -> None:
    async with otel.engine(engine_url, poll_interval=0.05) as engine:
        run = await engine.start(parent, 1)
        while not (children := await engine.store.list_children(run.id)):
            await asyncio.sleep(0.02)
        (child_record,) = children
        # Both wait with nothing due, so both are released; the event resumes the child, whose end resumes the
        # parent: two activations each, in this order.
        await wait_until_waiting(engine, run.id, child_record.id)
        await engine.send_event(child_record.id, "go")
        assert await run.result(timeout=30) == 102
    spans = otel.spans()
    assert shape(spans) == [
        ("durable.start tel_parent", [
            ("durable.run tel_parent", [
                ("durable.step tel_add", []),
                ("durable.run tel_child", []),
                ("durable.run tel_child", [("durable.step tel_add", [])]),
            ]),
            ("durable.run tel_parent", []),
        ]),
    ]  # fmt: skip
    assert {span.context.trace_id for span in spans} == {spans[0].context.trace_id}
    first, second = named(spans, "durable.run tel_parent")
    child_first, child_second = named(spans, "durable.run tel_child")
    for span in (child_first, child_second):
        assert span.parent is not None and span.parent.span_id == first.context.span_id
        assert dict(span.attributes or {})["durable.run_id"] == child_record.id
    assert [link.context.span_id for link in child_second.links] == [first.context.span_id]
    started = [attributes for name, attributes in events(first) if name == "child started"]
    assert started == [{"durable.command_id": 2, "durable.child_id": child_record.id,
                        "durable.child_workflow": "tel_child"}]  # fmt: skip
    assert events(child_first) == [("event wait started", {"durable.command_id": 1, "durable.event": "go"})]
    received = {"durable.message_kind": "event", "durable.message_name": "go"}
    assert events(child_second) == [("message received", received)]
    finished = {"durable.command_id": 2, "durable.child_id": child_record.id, "durable.status": "completed"}
    assert events(second) == [("child finished", finished)]
    assert dict(child_second.attributes or {})["durable.outcome"] == "completed"
    assert dict(first.attributes or {})["durable.released"] == "waiting"


async def test_inputs_and_cancellations_are_events_of_the_activations(otel: Otel, engine_url: str) -> None:
    async with otel.engine(engine_url, poll_interval=0.05) as engine:
        run = await engine.start(asks)
        await wait_until_waiting(engine, run.id)
        await engine.provide_input(run.id, "approval", "yes")
        while not [e for e in await engine.get_history(run.id) if type(e.event).__name__ == "EventWaitStarted"]:
            await asyncio.sleep(0.02)  # resumed by the answer: it waits again, and is released again
        await wait_until_waiting(engine, run.id)
        await engine.cancel(run.id, reason="changed my mind")
        with pytest.raises(durable.WorkflowCancelled):
            await run.result(timeout=30)
    spans = otel.spans()
    first, second, third = named(spans, "durable.run tel_asks")
    assert events(first) == [("input requested", {"durable.command_id": 1, "durable.input_key": "approval"})]
    assert events(second) == [
        ("message received", {"durable.message_kind": "input", "durable.message_name": "approval"}),
        ("event wait started", {"durable.command_id": 2, "durable.event": "never"}),
    ]
    assert events(third) == [("cancel requested", {"durable.reason": "changed my mind"})]
    assert [dict(s.attributes or {}).get("durable.released") for s in (first, second)] == ["waiting", "waiting"]
    assert dict(third.attributes or {})["durable.outcome"] == "cancelled"
    assert third.status.status_code == StatusCode.UNSET  # a cancellation is not an error


async def test_the_callers_span_around_start_is_the_parent_of_the_run(otel: Otel, engine_url: str) -> None:
    tracer = otel.tracer_provider.get_tracer("the application")
    async with otel.engine(engine_url) as engine:
        with tracer.start_as_current_span("handle request") as caller:
            run = await engine.start(two_steps, 1)
            many = await engine.start_many(two_steps, [(2,), (3,)])
        for handle in (run, *many):
            await handle.result(timeout=30)
        stored = [(await engine.store.get_run(h.id)).trace_context for h in (run, *many)]  # type: ignore[union-attr]
    spans = otel.spans()
    assert not [span for span in spans if span.name.startswith("durable.start")]
    trace_id = caller.get_span_context().trace_id
    assert {span.context.trace_id for span in spans} == {trace_id}
    activations = named(spans, "durable.run tel_two_steps")
    assert len(activations) == 3
    assert {a.parent.span_id for a in activations if a.parent} == {caller.get_span_context().span_id}
    assert shape(spans)[0][0] == "handle request"
    assert len(named(spans, "durable.step tel_add")) == 6
    caller_context = caller.get_span_context()
    assert stored == [f"00-{trace_id:032x}-{caller_context.span_id:016x}-{caller_context.trace_flags:02x}"] * 3


async def test_spans_made_in_a_step_body_are_children_of_its_step_span(otel: Otel, engine_url: str) -> None:
    tracer = otel.tracer_provider.get_tracer("the application")

    @durable.step(name="tel_calls_out")
    def calls_out(x: int) -> int:  # a sync step: runs in a worker thread, with the step's context
        with tracer.start_as_current_span("HTTP GET"):
            return x

    @durable.workflow(name="tel_calls")
    async def calls(ctx: durable.WorkflowContext, x: int) -> int:
        return int(await calls_out(x))

    async with durable.Engine(engine_url, workflows=[calls], tracer_provider=otel.tracer_provider) as engine:
        assert await (await engine.start(calls, 5)).result(timeout=30) == 5
    assert shape(otel.spans()) == [
        ("durable.start tel_calls", [("durable.run tel_calls", [("durable.step tel_calls_out", [("HTTP GET", [])])])]),
    ]


# -- what is stored ------------------------------------------------------------------------------------------------


async def test_every_store_keeps_a_runs_trace_context(store: history.Store) -> None:
    context = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nvendor=value"

    def new(run_id: str, trace_context: str | None) -> history.NewRun:
        return history.NewRun(id=run_id, workflow="wf", input=msgspec.Raw(b"[]"), random_seed=1,
                              trace_context=trace_context)  # fmt: skip

    created, fresh = await store.create_run(new("one", context))
    assert fresh and created.trace_context == context
    batch = await store.create_runs([new("two", None), new("three", context)])
    assert [run.trace_context for run, _ in batch] == [None, context]
    assert (await store.get_run("one")).trace_context == context  # type: ignore[union-attr]
    again, fresh = await store.create_run(new("one", None))
    assert not fresh and again.trace_context == context  # the first create's context stays
    claims = await store.claim("w", ["wf"], 10, 30.0)
    assert sorted((c.run.id, c.run.trace_context) for c in claims) == [
        ("one", context), ("three", context), ("two", None),
    ]  # fmt: skip
    for claim in claims:  # ready at once: the claim orders them by their creation time
        assert claim.due_at == claim.run.created_at
    page = await store.list_runs()
    assert {run.id: run.trace_context for run in page.runs} == {"one": context, "two": None, "three": context}


def test_a_stored_context_reads_back_and_a_missing_one_derives_a_stable_trace() -> None:
    span = extract("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nvendor=value")
    assert span is not None and span.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.span_id == 0xB7AD6B7169203331 and span.trace_state.get("vendor") == "value"
    assert extract(None) is None and extract("not a traceparent") is None
    at = datetime(2026, 1, 1, tzinfo=UTC)
    run = history.RunRecord(id="r", workflow="wf", status="pending", input=b"[]", created_at=at, updated_at=at,
                            next_seq=2)  # fmt: skip
    assert derived_origin(run) == derived_origin(run)
    assert derived_origin(run).trace_id != derived_origin(history.RunRecord(
        id="r", workflow="wf", status="pending", input=b"[]", created_at=at + timedelta(seconds=1), updated_at=at,
        next_seq=2)).trace_id  # fmt: skip


_KEY = st.from_regex(r"[a-z][a-z0-9_\-*/]{0,15}", fullmatch=True)
_VALUE = st.from_regex(r"[!-+\--<>-~]{1,16}", fullmatch=True)  # printable ASCII but ',' and '='


@given(
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    sampled=st.booleans(),
    state=st.lists(st.tuples(_KEY, _VALUE), max_size=4, unique_by=lambda kv: kv[0]),
)
def test_a_span_context_survives_the_stored_form(
    trace_id: int, span_id: int, sampled: bool, state: list[tuple[str, str]]
) -> None:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    original = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags, trace_state=TraceState(state))
    stored = inject(set_span_in_context(NonRecordingSpan(original)))
    assert stored is not None and stored.startswith(f"00-{trace_id:032x}-{span_id:016x}-")
    read = extract(stored)
    assert read is not None
    assert (read.trace_id, read.span_id, read.trace_flags.sampled) == (trace_id, span_id, sampled)
    assert list(read.trace_state.items()) == state


# -- metrics ------------------------------------------------------------------------------------------------------


async def test_metrics_count_a_known_set_of_runs_exactly(otel: Otel, engine_url: str) -> None:
    # Horizon 0: the retry's delay and the sleep (0.3 s each, long enough to be ahead when the driver decides)
    # each release their run, whose next claim replays its history.
    # A worker of named queues reads their depth as it starts (then every 5 s).
    async with otel.engine(engine_url, horizon=0.0, poll_interval=0.05, queues={"default": 100}) as engine:
        handles = [await engine.start(two_steps, 1), await engine.start(two_steps, 2)]
        handles += await engine.start_many(retries, [(1,)])
        handles.append(await engine.start(fails, 1))
        handles.append(await engine.start(sleeps, 0.3))
        for handle in handles:
            try:
                await handle.result(timeout=30)
            except durable.WorkflowFailed:
                pass
        assert engine.worker is not None
        worker_id = engine.worker.worker_id
        while engine.worker.active_runs:  # a result is visible as soon as it commits: let the drivers end
            await asyncio.sleep(0.01)
        measured = otel.metrics()

    def by(**attributes: Any) -> frozenset[tuple[str, Any]]:
        return frozenset((f"durable.{key}", value) for key, value in attributes.items())

    assert measured["durable.runs.started"] == {
        by(workflow="tel_two_steps"): 2, by(workflow="tel_retries"): 1, by(workflow="tel_fails"): 1,
        by(workflow="tel_sleeps"): 1,
    }  # fmt: skip
    assert measured["durable.runs.finished"] == {
        by(workflow="tel_two_steps", status="completed"): 2, by(workflow="tel_retries", status="completed"): 1,
        by(workflow="tel_fails", status="failed"): 1, by(workflow="tel_sleeps", status="completed"): 1,
    }  # fmt: skip
    assert measured["durable.run.duration"] == measured["durable.runs.finished"]  # one duration per finished run
    assert measured["durable.step.attempts"] == {
        by(workflow="tel_two_steps", step="tel_add", outcome="completed"): 4,
        by(workflow="tel_retries", step="tel_flaky", outcome="retrying"): 1,
        by(workflow="tel_retries", step="tel_flaky", outcome="completed"): 1,
        by(workflow="tel_fails", step="tel_broken", outcome="failed"): 1,
        by(workflow="tel_sleeps", step="tel_add", outcome="completed"): 2,
    }  # fmt: skip
    assert measured["durable.step.duration"] == measured["durable.step.attempts"]
    # One claim per run, and a second for the two released ones (due at their wake time): 7 claims, 2 replays.
    assert measured["durable.queue.wait_time"] == {by(queue="default"): 7}
    assert measured["durable.replay.duration"] == {by(workflow="tel_retries"): 1, by(workflow="tel_sleeps"): 1}
    assert measured["durable.worker.active_runs"] == {frozenset({("durable.worker", worker_id)}): 0}
    states = ("pending", "scheduled", "waiting", "running")
    assert set(measured["durable.queue.depth"]) == {by(queue="default", state=state) for state in states}


# -- off by default, and the global providers ------------------------------------------------------------------------


async def test_without_a_configured_provider_a_worker_observes_nothing(tmp_path: Path) -> None:
    from opentelemetry import metrics, trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) or type(
        metrics.get_meter_provider()
    ).__name__ != "_ProxyMeterProvider":
        pytest.skip("something in this test process set the global OpenTelemetry providers")
    async with durable.Engine(f"sqlite:///{tmp_path / 'd.db'}", workflows=WORKFLOWS) as engine:
        run = await engine.start(two_steps, 1)
        assert await run.result(timeout=30) == 4
        assert engine.worker is not None and not engine.worker.telemetry.enabled
        assert (await engine.store.get_run(run.id)).trace_context is None  # type: ignore[union-attr]


GLOBAL_PROVIDERS = """
import asyncio, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import durable, durable.replay
from tests.test_telemetry import WORKFLOWS, two_steps

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

async def main():
    async with durable.Engine(sys.argv[1], workflows=WORKFLOWS, horizon=0.0) as engine:
        run = await engine.start(two_steps, 1)
        assert await run.result(timeout=30) == 4
        events = await engine.get_history(run.id)
    print(sorted(span.name for span in exporter.get_finished_spans()))
    result = durable.replay.replay(two_steps, events)
    assert result.ok, result.report()
    print(len(exporter.get_finished_spans()))

asyncio.run(main())
"""


def test_the_global_providers_are_the_default_and_replaying_a_run_emits_no_span(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(GLOBAL_PROVIDERS), f"sqlite:///{tmp_path / 'd.db'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names, count = done.stdout.splitlines()
    assert names == str(["durable.run tel_two_steps", "durable.start tel_two_steps", "durable.step tel_add",
                         "durable.step tel_add"])  # fmt: skip
    assert count == "4"  # the replay added none


