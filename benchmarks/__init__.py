"""Benchmarks: ``bench_core`` (Durable alone) and ``compare_peers`` (Durable beside DBOS, Absurd and Temporal)."""
