"""OpenTelemetry traces and metrics of runs: the one module of Durable that imports OpenTelemetry.

A run is a trace. Each time a worker drives it (an *activation*: from its claim to its release or its end) is a
``durable.run <workflow>`` span, and each step attempt a ``durable.step <name>`` span under it. Spans come only
from what a worker really does (``RunDriver``): replaying a history re-runs workflow code, never step bodies, so
it emits nothing, and ``replay/`` knows nothing of this module.

The trace context travels in the run's row (``durable_runs.trace_context``, W3C ``traceparent``): the caller's
span at ``Engine.start()``, or the parent run's activation for a child run, so a run's spans are children of
whoever started it, whichever worker drives it. A run started outside any span gets a ``durable.start`` span of
its own (when the starting engine traces), else a trace id derived from its id (every activation still joins it).

Whether to trace and measure is decided once per worker start (and engine open): with OpenTelemetry's default
no-op providers (nothing configured) the driver holds no observer at all and its per-step cost is a ``None``
test.

Captured log lines name their span (``LogLine.trace_id``/``span_id``): log capture gets ``current_ids`` from here
only when the worker traces (``Telemetry.log_ids``), and ``ctx.logger``'s lines get the activation span's ids
(``RunObserver.log_ids``), stamped by the driver.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, NoOpMeterProvider, Observation
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
    format_span_id,
    format_trace_id,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from history import (
    CancelRequested,
    ChildFinished,
    ChildStarted,
    ErrorInfo,
    Event,
    EventWaitStarted,
    InputRequested,
    MessageReceived,
    RunRecord,
    TimerFired,
    TimerStarted,
)
from replay import recorded_type_name

try:  # the API's default meter provider before one is set; private, so looked up defensively
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _ProxyMeters
except ImportError:  # pragma: no cover - a future API without it
    _ProxyMeters = NoOpMeterProvider  # type: ignore[misc,assignment]

if TYPE_CHECKING:
    from replay import StepRequest

__all__ = ["MeterProvider", "RunObserver", "Telemetry", "TracerProvider"]  # the provider types: for annotations

_VERSION = "0.1.0"  # durable.__version__, which is not defined yet when durable/__init__ imports this module
_W3C = TraceContextTextMapPropagator()
"""W3C trace context only, whatever global propagator the application set: the stored column has one format."""

_QUEUE_STATES = ("pending", "scheduled", "waiting", "running")


# -- deciding -------------------------------------------------------------------------------------------------


def effective_tracer(provider: TracerProvider | None) -> Tracer | None:
    """A tracer of ``provider`` (default: the global one), or ``None`` when it is the API's no-op default."""
    chosen = provider if provider is not None else trace.get_tracer_provider()
    if isinstance(chosen, (ProxyTracerProvider, NoOpTracerProvider)):
        return None
    return chosen.get_tracer("durable", _VERSION)


def effective_metrics(provider: MeterProvider | None) -> Metrics | None:
    """The instruments of ``provider`` (default: the global one), or ``None`` when it is the no-op default."""
    chosen = provider if provider is not None else metrics.get_meter_provider()
    if isinstance(chosen, (_ProxyMeters, NoOpMeterProvider)):
        return None
    # One set of instruments per provider: an engine and its worker share them (a second set of the same names
    # would make the SDK warn of duplicate instruments and report the gauges twice).
    try:
        found = _METRICS.get(chosen)
        if found is None:
            found = _METRICS[chosen] = Metrics(chosen)
    except TypeError:  # a provider that cannot be weakly referenced: instruments of its own for each caller
        found = Metrics(chosen)
    return found


class Telemetry:
    """What a worker or an engine traces and measures with, decided once (``None`` parts are off)."""

    def __init__(self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None) -> None:
        self.tracer = effective_tracer(tracer_provider)
        self.metrics = effective_metrics(meter_provider)

    @property
    def enabled(self) -> bool:
        """Whether anything is traced or measured."""
        return self.tracer is not None or self.metrics is not None

    @property
    def log_ids(self) -> Callable[[], tuple[str, str] | None] | None:
        """What stamps a captured log line with the current span (``current_ids``), or ``None`` when this does
        not trace: log capture then never looks at OpenTelemetry."""
        return current_ids if self.tracer is not None else None

    # -- starting runs (client side) ----------------------------------------------------------------------

    def start_context(self, workflow: str, run_id: str, queue: str) -> str | None:
        """The trace context to store with a new run: the caller's current span, else (when this engine traces)
        a ``durable.start <workflow>`` span made for it, else ``None``."""
        current = trace.get_current_span().get_span_context()
        if current.is_valid:
            return inject(otel_context.get_current())
        if self.tracer is None:
            return None
        span = self.tracer.start_span(
            f"durable.start {workflow}",
            kind=SpanKind.PRODUCER,
            attributes={"durable.run_id": run_id, "durable.workflow": workflow, "durable.queue": queue},
        )
        span.end()
        return inject(trace.set_span_in_context(span))

    def runs_created(self, workflow: str, count: int) -> None:
        """Count ``count`` new runs of ``workflow``."""
        if self.metrics is not None and count:
            self.metrics.runs_started.add(count, {"durable.workflow": workflow})


def current_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id as W3C ``traceparent`` prints them (lowercase hex, 32 and 16
    digits), or ``None`` when no valid span is current: what a captured log line is stamped with."""
    return span_ids(trace.get_current_span().get_span_context())


def span_ids(span_context: SpanContext) -> tuple[str, str] | None:
    """``span_context``'s trace id and span id in hex (see ``current_ids``), or ``None`` when it is invalid."""
    if not span_context.is_valid:
        return None
    return format_trace_id(span_context.trace_id), format_span_id(span_context.span_id)


def inject(ctx: otel_context.Context) -> str | None:
    """``ctx``'s span as stored in ``trace_context``: ``traceparent``, then ``tracestate`` after a newline."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=ctx)
    parent = carrier.get("traceparent")
    if parent is None:
        return None
    state = carrier.get("tracestate")
    return parent if not state else f"{parent}\n{state}"


def extract(stored: str | None) -> SpanContext | None:
    """The span context stored by ``inject``, or ``None`` when there is none or it is malformed."""
    if not stored:
        return None
    parent, _, state = stored.partition("\n")
    carrier = {"traceparent": parent}
    if state:
        carrier["tracestate"] = state
    span_context = trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    return span_context if span_context.is_valid else None


def derived_origin(run: RunRecord) -> SpanContext:
    """A trace for a run stored without a context (started by a client that does not trace): derived from the
    run's id and creation time, so that its activations on every worker share it without a write."""
    digest = hashlib.blake2b(f"{run.id}\n{run.created_at.isoformat()}".encode(), digest_size=24).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:], "big") or 1
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


# -- metrics ----------------------------------------------------------------------------------------------------


class Metrics:
    """The instruments of the ``durable`` meter of one meter provider (made once per provider), and the workers
    whose gauges it reports."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("durable", _VERSION)
        self.runs_started = meter.create_counter(
            "durable.runs.started", unit="{run}", description="Runs created (by start, start_many, a parent run).")
        self.runs_finished = meter.create_counter(
            "durable.runs.finished", unit="{run}", description="Runs that ended, by workflow and status.")
        self.step_attempts = meter.create_counter(
            "durable.step.attempts", unit="{attempt}", description="Step attempts, by workflow, step and outcome.")
        self.step_duration = meter.create_histogram(
            "durable.step.duration", unit="ms", description="Duration of a step attempt's body.")
        self.run_duration = meter.create_histogram(
            "durable.run.duration", unit="ms", description="From a run's first start to its end.")
        self.queue_wait = meter.create_histogram(
            "durable.queue.wait_time", unit="ms", description="From the time a run was due to its claim.")
        self.replay_duration = meter.create_histogram(
            "durable.replay.duration", unit="ms", description="Replaying a claimed run's history.")
        self._workers: weakref.WeakSet[Any] = weakref.WeakSet()
        # Gauges are observed on the metric reader's thread while workers come and go on the event loop's.
        self._lock = threading.Lock()
        meter.create_observable_gauge(
            "durable.worker.active_runs", callbacks=[self._active_runs], unit="{run}",
            description="Runs each worker drives right now.")
        meter.create_observable_gauge(
            "durable.queue.depth", callbacks=[self._queue_depth], unit="{run}",
            description="Unfinished runs of a queue by state, read by a worker every few seconds.")  # fmt: skip

    def add_worker(self, worker: Any) -> None:
        """Report ``worker``'s gauges (its active runs, its queues' depths) until ``discard_worker``."""
        with self._lock:
            self._workers.add(worker)

    def discard_worker(self, worker: Any) -> None:
        """Stop reporting ``worker``'s gauges."""
        with self._lock:
            self._workers.discard(worker)

    def _live_workers(self) -> list[Any]:
        with self._lock:
            return list(self._workers)

    def _active_runs(self, options: CallbackOptions) -> Iterator[Observation]:
        for worker in self._live_workers():
            yield Observation(worker.active_runs, {"durable.worker": worker.worker_id})

    def _queue_depth(self, options: CallbackOptions) -> Iterator[Observation]:
        seen: dict[tuple[str, str], int] = {}
        for worker in self._live_workers():
            for stats in worker.queue_depths:
                for state in _QUEUE_STATES:
                    seen[(stats.name, state)] = getattr(stats, state)
        for (queue, state), value in sorted(seen.items()):
            yield Observation(value, {"durable.queue": queue, "durable.state": state})


_METRICS: weakref.WeakKeyDictionary[Any, Metrics] = weakref.WeakKeyDictionary()


# -- one activation of a run (worker side) ---------------------------------------------------------------------


class _StepSpan:
    """One attempt's span (``None`` when only metrics are on), its context token, and when its body ended."""

    __slots__ = ("body_ended", "span", "token")

    def __init__(self, span: Span | None) -> None:
        self.span = span
        self.token: object = None
        self.body_ended = 0


class RunObserver:
    """Traces and measures one activation of a run: made by ``RunDriver`` only when telemetry is on.

    The driver calls ``step_started``/``step_body_ended`` around each attempt's body (in the attempt's task, so
    the step span is the current span of the body: spans the body makes are its children), ``step_ended`` when
    the attempt's outcome is recorded, ``appended`` after each append that committed, and ``close`` last.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        run: RunRecord,
        due_at: datetime | None,
        now: datetime,
        clock: Callable[[], datetime],
    ) -> None:
        self.tracer = telemetry.tracer
        self.metrics = telemetry.metrics
        self.run = run
        self.clock = clock
        self._steps: dict[int, _StepSpan] = {}
        self.span: Span | None = None
        self._parent: otel_context.Context | None = None
        self.log_ids: tuple[str, str] | None = None
        """The activation span's trace and span ids (``None`` when not tracing): ``ctx.logger``'s lines get them."""
        if self.metrics is not None and due_at is not None and (run.lease_epoch == 1 or due_at != run.created_at):
            # The store orders runs by their wake time, else their creation: known only for a first claim or a
            # run released with a wake time (a run handed back or woken by a message has no recorded due time).
            waited = max(0.0, (now - due_at).total_seconds() * 1000.0)
            self.metrics.queue_wait.record(waited, {"durable.queue": run.queue})
        if self.tracer is not None:
            self._start_span()

    def _start_span(self) -> None:
        assert self.tracer is not None
        run = self.run
        origin = extract(run.trace_context) or derived_origin(run)
        attributes: dict[str, Any] = {
            "durable.run_id": run.id,
            "durable.workflow": run.workflow,
            "durable.queue": run.queue,
            "durable.activation": run.lease_epoch,
        }
        # Every activation is a child of the run's origin (one trace per run, whichever worker drives it); a later
        # one also links to it, marking it as a resumption of work started earlier (messaging's "follows from").
        links = [Link(origin, {"durable.link": "run origin"})] if run.lease_epoch > 1 else None
        self.span = self.tracer.start_span(
            f"durable.run {run.workflow}",
            context=trace.set_span_in_context(NonRecordingSpan(origin)),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        self._parent = trace.set_span_in_context(self.span)
        self.log_ids = span_ids(self.span.get_span_context())

    # -- replay and steps ---------------------------------------------------------------------------------------

    def replayed(self, ms: float) -> None:
        """The claim replayed the run's history in ``ms``."""
        if self.metrics is not None:
            self.metrics.replay_duration.record(ms, {"durable.workflow": self.run.workflow})

    def step_started(self, step: StepRequest) -> _StepSpan:
        """An attempt's body starts (called in the attempt's own task)."""
        span = None
        handle = _StepSpan(None)
        if self.tracer is not None:
            run = self.run
            span = self.tracer.start_span(
                f"durable.step {step.name}",
                context=self._parent,
                attributes={
                    "durable.run_id": run.id,
                    "durable.workflow": run.workflow,
                    "durable.step": step.name,
                    "durable.attempt": step.attempt,
                    "durable.queue": run.queue,
                    "durable.command_id": step.command_id,
                },
            )
            handle.span = span
            handle.token = otel_context.attach(trace.set_span_in_context(span))
        self._steps[step.command_id] = handle
        return handle

    def step_body_ended(self, handle: _StepSpan) -> None:
        """The body returned, raised or was cancelled (same task as ``step_started``)."""
        handle.body_ended = time.time_ns()
        if handle.token is not None:
            otel_context.detach(handle.token)  # type: ignore[arg-type]
            handle.token = None

    def step_ended(
        self,
        step: StepRequest,
        attempt: int,
        duration_ms: float,
        error: BaseException | None,
        retry_at: datetime | None,
    ) -> None:
        """The attempt's outcome is going into the history (``error``: it failed; ``retry_at``: it is retried)."""
        handle = self._steps.pop(step.command_id, None)
        outcome = "completed" if error is None else ("retrying" if retry_at is not None else "failed")
        if self.metrics is not None:
            labels = {"durable.workflow": self.run.workflow, "durable.step": step.name, "durable.outcome": outcome}
            self.metrics.step_attempts.add(1, labels)
            self.metrics.step_duration.record(duration_ms, labels)
        span = None if handle is None else handle.span
        if span is None:
            return
        assert handle is not None
        span.set_attribute("durable.outcome", outcome)
        if error is not None:
            # The type under the name the history records (durable.StepFailed, not durable.errors.StepFailed).
            span.record_exception(error, {"exception.type": recorded_type_name(type(error))})
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        if retry_at is not None:
            span.add_event("retry scheduled", {"durable.retry_at": retry_at.isoformat(),
                                               "durable.attempt": attempt + 1})
        span.end(end_time=handle.body_ended or None)

    # -- what the run records -------------------------------------------------------------------------------

    def appended(self, events: Sequence[Event]) -> None:
        """Events that just committed: timers, waits, inputs, children and cancellations become span events."""
        if self.span is None:
            return
        for event in events:
            named = _span_event(event)
            if named is not None:
                self.span.add_event(*named)

    def run_created(self, workflow: str) -> None:
        """This activation created a run of ``workflow`` (a child, or the run that continues this one)."""
        if self.metrics is not None:
            self.metrics.runs_started.add(1, {"durable.workflow": workflow})

    def child_context(self) -> str | None:
        """The trace context of a run this activation creates (a child, or the run that continues this one)."""
        return None if self._parent is None else inject(self._parent)

    def finished(self, status: str, error: ErrorInfo | None) -> None:
        """The run ended with ``status`` (its final append committed)."""
        if self.metrics is not None:
            labels = {"durable.workflow": self.run.workflow, "durable.status": status}
            self.metrics.runs_finished.add(1, labels)
            began = self.run.started_at or self.run.created_at
            self.metrics.run_duration.record(max(0.0, (self.clock() - began).total_seconds() * 1000.0), labels)
        if self.span is not None:
            self.span.set_attribute("durable.outcome", status)
            if error is not None:
                self.span.add_event("exception", {"exception.type": error.type, "exception.message": error.message})
                self.span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))

    def released(self, status: str) -> None:
        """The run was handed back (``pending``), or sleeps or waits (``waiting``) until it is due again."""
        if self.span is not None:
            self.span.set_attribute("durable.released", status)

    def blocked(self, exc: BaseException) -> None:
        """The run's replay diverged from its history: it waits for fixed code."""
        if self.span is not None:
            self.span.set_attribute("durable.released", "blocked")
            self.span.record_exception(exc, {"exception.type": recorded_type_name(type(exc))})
            self.span.set_status(Status(StatusCode.ERROR, "replay diverged from the history"))

    def lease_lost(self) -> None:
        """Another worker took the run over."""
        if self.span is not None:
            self.span.add_event("lease lost")

    def close(self) -> None:
        """End the activation: attempts whose outcome was never recorded (the run was cancelled, the worker
        stopped or lost the lease) end as ``cancelled``."""
        for handle in self._steps.values():
            if handle.span is not None:
                handle.span.set_attribute("durable.outcome", "cancelled")
                handle.span.end(end_time=handle.body_ended or None)
        self._steps.clear()
        if self.span is not None:
            self.span.end()


def _span_event(event: Event) -> tuple[str, dict[str, Any]] | None:
    """The span event of a recorded event worth one (name, attributes), or ``None``."""
    if isinstance(event, TimerStarted):
        return "timer started", {"durable.command_id": event.command_id, "durable.fire_at": event.fire_at.isoformat()}
    if isinstance(event, TimerFired):
        return "timer fired", {"durable.command_id": event.command_id}
    if isinstance(event, EventWaitStarted):
        return "event wait started", {"durable.command_id": event.command_id, "durable.event": event.name}
    if isinstance(event, InputRequested):
        return "input requested", {"durable.command_id": event.command_id, "durable.input_key": event.key}
    if isinstance(event, MessageReceived):
        return "message received", {"durable.message_kind": event.kind, "durable.message_name": event.name}
    if isinstance(event, ChildStarted):
        return "child started", {"durable.command_id": event.command_id, "durable.child_id": event.child_id,
                                 "durable.child_workflow": event.workflow}
    if isinstance(event, ChildFinished):
        return "child finished", {"durable.command_id": event.command_id, "durable.child_id": event.child_id,
                                  "durable.status": event.status}
    if isinstance(event, CancelRequested):
        return "cancel requested", {"durable.reason": event.reason}
    return None
