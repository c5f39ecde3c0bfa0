"""Log lines correlated with traces: each captured line carries the trace id and span id that were current when
it was written (the step attempt's span, a span the body made, the activation's span for ``ctx.logger``), as
the W3C/OpenTelemetry hex strings a tracing backend searches by; both ``None`` when the worker does not trace.
Over every store, with the SDK's in-memory span exporter (each test its own provider, passed to the engine)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import durable
from durable import _logs
from history import LogLine

app_log = logging.getLogger("tests.logs.tracing")

_body_provider: TracerProvider | None = None
"""The provider a step body makes its own span with (set by each test)."""


@pytest.fixture(autouse=True)
def _info_level(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Let INFO records through, as an application's logging configuration would (see tests/test_logs.py)."""
    caplog.set_level(logging.INFO)
    yield
    assert _logs._installed == 0, "the capture hooks outlived the engine"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    global _body_provider
    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _body_provider = provider
    yield provider, exporter
    _body_provider = None
    provider.shutdown()


@durable.step(retry=durable.Retry(max_attempts=2, backoff="constant", base=0.01))
async def logtr_flaky() -> str:
    info = durable.current_step()
    assert info is not None
    app_log.info("attempt %d logs", info.attempt)
    print(f"attempt {info.attempt} prints")
    sys.stderr.write(f"attempt {info.attempt} ends unfinished")  # no newline: kept when the attempt ends
    if info.attempt == 1:
        raise ConnectionError("try again")
    return "ok"


@durable.step
def logtr_threaded() -> None:
    print("from the thread")
    assert _body_provider is not None
    with _body_provider.get_tracer("tests").start_as_current_span("my own span"):
        app_log.warning("inside my own span")


@durable.workflow(name="logtr_run")
async def logtr_run(ctx: durable.WorkflowContext) -> str:
    ctx.logger.info("the workflow starts")
    result = await logtr_flaky()
    await logtr_threaded()
    ctx.logger.info("the workflow ends")
    return result


EXPECTED = [
    (None, None, "the workflow starts"),
    ("logtr_flaky", 1, "attempt 1 logs"),
    ("logtr_flaky", 1, "attempt 1 prints"),
    ("logtr_flaky", 1, "attempt 1 ends unfinished"),
    ("logtr_flaky", 2, "attempt 2 logs"),
    ("logtr_flaky", 2, "attempt 2 prints"),
    ("logtr_flaky", 2, "attempt 2 ends unfinished"),
    ("logtr_threaded", 1, "from the thread"),
    ("logtr_threaded", 1, "inside my own span"),
    (None, None, "the workflow ends"),
]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


async def run_and_read(engine_url: str, provider: TracerProvider | None) -> list[LogLine]:
    async with durable.Engine(engine_url, tracer_provider=provider) as engine:
        handle = await engine.start(logtr_run)
        assert await handle.result(timeout=30) == "ok"
        lines = await engine.get_logs(handle.id)
    assert [(line.step, line.attempt, line.message) for line in lines] == EXPECTED
    return lines


async def test_each_line_carries_the_span_current_when_it_was_written(
    engine_url: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    lines = await run_and_read(engine_url, provider)
    finished = exporter.get_finished_spans()
    flaky = [span for span in finished if span.name == "durable.step logtr_flaky"]
    steps = {(span.attributes or {})["durable.attempt"]: span for span in flaky}
    [threaded] = [span for span in finished if span.name == "durable.step logtr_threaded"]
    [activation] = [span for span in finished if span.name == "durable.run logtr_run"]
    [own] = [span for span in finished if span.name == "my own span"]
    expected = {
        "the workflow starts": hex_ids(activation),
        "the workflow ends": hex_ids(activation),
        "attempt 1 logs": hex_ids(steps[1]),
        "attempt 1 prints": hex_ids(steps[1]),
        "attempt 1 ends unfinished": hex_ids(steps[1]),
        "attempt 2 logs": hex_ids(steps[2]),
        "attempt 2 prints": hex_ids(steps[2]),
        "attempt 2 ends unfinished": hex_ids(steps[2]),
        "from the thread": hex_ids(threaded),
        "inside my own span": hex_ids(own),
    }
    assert {line.message: (line.trace_id, line.span_id) for line in lines} == expected
    assert hex_ids(steps[1])[1] != hex_ids(steps[2])[1]
    assert len({line.trace_id for line in lines}) == 1  # the run is one trace
    for line in lines:
        assert line.trace_id is not None and re.fullmatch("[0-9a-f]{32}", line.trace_id)
        assert line.span_id is not None and re.fullmatch("[0-9a-f]{16}", line.span_id)


async def test_without_tracing_lines_have_no_ids_even_inside_a_span_the_body_makes(
    engine_url: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _, exporter = spans
    lines = await run_and_read(engine_url, None)  # the engine uses the global provider: the API's no-op default
    assert [span.name for span in exporter.get_finished_spans()] == ["my own span"]  # the body's span was real
    assert {(line.trace_id, line.span_id) for line in lines} == {(None, None)}
