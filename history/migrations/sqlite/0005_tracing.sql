-- Durable schema for SQLite: tracing. A run keeps the W3C trace context (traceparent, and tracestate after a
-- newline) of whoever started it, so that every activation of the run, on any worker, joins the same trace.
-- Applied like 0001, in one BEGIN IMMEDIATE transaction.

-- Nullable and without a default: SQLite adds it without rewriting the table. Written once, at creation.
ALTER TABLE durable_runs ADD COLUMN trace_context TEXT;
