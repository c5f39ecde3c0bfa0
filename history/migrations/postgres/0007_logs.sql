-- Durable schema for PostgreSQL: captured logs. What step bodies print and log (and the workflow's ctx.logger),
-- per run, step and attempt. Not history: nothing replays these rows, and they are not append-only. Applied
-- like 0001, in one transaction under the advisory lock.

-- One row per line. No foreign key to durable_runs, as for durable_events: lines are inserted by the append
-- statement for the run rows it has just updated under their fence (or unfenced by write_logs, for the live
-- tail of a long step), and an RI check per line would cost a query per row. A retention job deletes the lines
-- of the runs it deletes.
CREATE TABLE durable_logs (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     text        NOT NULL,
    at         timestamptz NOT NULL,
    level      integer     NOT NULL,
    level_name text        NOT NULL,
    logger     text        NOT NULL,
    stream     text        NOT NULL CHECK (stream IN ('log', 'stdout', 'stderr')),
    step       text,
    command_id integer,
    attempt    integer,
    message    text        NOT NULL,
    exc        text,
    extra      bytea,
    trace_id   text,
    span_id    text
);

COMMENT ON TABLE durable_logs IS 'Durable: log lines captured from step bodies and ctx.logger, by run (see durable logs).';
COMMENT ON COLUMN durable_logs.extra IS 'JSON object of the record''s extra fields (bytes), or NULL.';
COMMENT ON COLUMN durable_logs.trace_id IS 'OpenTelemetry trace id current when the line was written (32 hex digits), or NULL.';
COMMENT ON COLUMN durable_logs.span_id IS 'OpenTelemetry span id current when the line was written (16 hex digits), or NULL.';

-- Reading a run's lines in order, and tailing them (id > the last one seen).
CREATE INDEX durable_logs_run ON durable_logs (run_id, id);
