-- Durable schema for SQLite: captured logs. What step bodies print and log (and the workflow's ctx.logger), per
-- run, step and attempt. Not history: nothing replays these rows. Applied like 0001, in one BEGIN IMMEDIATE
-- transaction.

-- One row per line; "at" in microseconds since the epoch like every time here. AUTOINCREMENT: ids never go back
-- (a tail reading "id > last seen" must never miss a line because a deleted one's id was reused).
CREATE TABLE durable_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    level      INTEGER NOT NULL,
    level_name TEXT    NOT NULL,
    logger     TEXT    NOT NULL,
    stream     TEXT    NOT NULL,
    step       TEXT,
    command_id INTEGER,
    attempt    INTEGER,
    message    TEXT    NOT NULL,
    exc        TEXT,
    extra      BLOB,
    trace_id   TEXT,
    span_id    TEXT
);

-- Reading a run's lines in order, and tailing them (id > the last one seen).
CREATE INDEX durable_logs_run ON durable_logs (run_id, id);
