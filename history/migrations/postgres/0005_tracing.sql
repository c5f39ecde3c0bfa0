-- Durable schema for PostgreSQL: tracing. A run keeps the W3C trace context (traceparent, and tracestate after a
-- newline) of whoever started it, so that every activation of the run, on any worker, joins the same trace.
-- Applied like 0001, in one transaction under the advisory lock.

-- Nullable and without a default: adding it rewrites nothing. Written once, when the run is created.
ALTER TABLE durable_runs ADD COLUMN trace_context text;
COMMENT ON COLUMN durable_runs.trace_context IS 'W3C trace context the run''s OpenTelemetry spans descend from (traceparent, then tracestate after a newline).';
