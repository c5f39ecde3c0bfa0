"""What OpenTelemetry costs per step: a 200-step workflow of trivial steps on the in-memory store (no database, so
the engine's own CPU is what is measured), with telemetry off (nothing configured: the default) or on (the SDK's
tracer and meter providers, spans batched to an exporter that drops them).

    python benchmarks/bench_telemetry.py [--mode off|on] [--repeat 15] [--steps 200]

Prints the median wall-clock and process-CPU microseconds per step. CPU time is the steadier figure on a shared
machine. Run ``--mode off`` against a tree without telemetry for the before/after of the default path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import durable


@durable.step
async def bump(i: int) -> int:
    return i + 1


@durable.workflow(name="bench_telemetry_steps")
async def many(ctx: durable.WorkflowContext, n: int) -> int:
    x = 0
    for _ in range(n):
        x = await bump(x)
    return x


def providers() -> dict[str, Any]:
    """SDK providers whose spans go to an exporter that drops them (the SDK's own cost, not an exporter's)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return {"tracer_provider": tracer_provider, "meter_provider": meter_provider}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["off", "on"], default="off")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    options = providers() if args.mode == "on" else {}
    async with durable.Engine("memory://", workflows=[many], **options) as engine:
        await (await engine.start(many, 10)).result(timeout=60)  # warm up
        wall, cpu = [], []
        for _ in range(args.repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            await (await engine.start(many, args.steps)).result(timeout=600)
            wall.append((time.perf_counter() - started) * 1e6 / args.steps)
            cpu.append((time.process_time() - started_cpu) * 1e6 / args.steps)
    wall_us, cpu_us = statistics.median(wall), statistics.median(cpu)
    print(f"telemetry {args.mode}: {wall_us:.1f} us/step wall, {cpu_us:.1f} us/step CPU")


if __name__ == "__main__":
    asyncio.run(main())
