-- Durable schema 1 for PostgreSQL: runs, their append-only histories, worker registrations.
-- Applied by history._postgres inside one transaction under an advisory lock. Released migrations are never
-- edited: change the schema with a new numbered file (0002_<what>.sql).

-- One row per run, kept in step with its history by the same statements that append events.
-- fillfactor leaves room on each page so that the common step append (which changes no indexed column) is a
-- HOT update: no index is touched.
CREATE TABLE durable_runs (
    id               text        PRIMARY KEY,
    workflow         text        NOT NULL,
    status           text        NOT NULL
        CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled')),
    input            bytea       NOT NULL,
    result           bytea,
    error            json,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    wake_at          timestamptz,
    next_seq         integer     NOT NULL,
    lease_owner      text,
    lease_epoch      bigint      NOT NULL DEFAULT 0,
    lease_expires_at timestamptz,
    queue            text        NOT NULL DEFAULT 'default',
    priority         integer     NOT NULL DEFAULT 0,
    cancel_reason    text,
    blocked          text,
    parent_id        text
) WITH (fillfactor = 80);

COMMENT ON TABLE durable_runs IS 'Durable: one row per workflow run (input, status, result, lease).';
COMMENT ON COLUMN durable_runs.input IS 'JSON of the workflow input (bytes, never re-encoded).';
COMMENT ON COLUMN durable_runs.result IS 'JSON of the return value of a completed run.';
COMMENT ON COLUMN durable_runs.lease_epoch IS 'Fencing token: bumped by every claim; appends must present it.';

-- Claiming, part 1: unleased unfinished runs by the time they are due (their wake time, or their creation).
-- A claim reads the range "due by now" and sorts it by priority, so it costs what is ready, never what sleeps:
-- an idle poll over a million sleeping runs reads nothing. Running runs hold a lease and are not in it either.
-- next_wake_at reads the same index from the other end.
CREATE INDEX durable_runs_ready ON durable_runs ((coalesce(wake_at, created_at)))
    WHERE lease_owner IS NULL AND status NOT IN ('completed', 'failed', 'cancelled');
-- Claiming, part 2: leases by expiry, to take over the runs of a worker that died.
CREATE INDEX durable_runs_leases ON durable_runs (lease_expires_at) WHERE lease_owner IS NOT NULL;
-- Listing newest first (keyset pagination on created_at, id), unfiltered or by workflow and status.
CREATE INDEX durable_runs_created ON durable_runs (created_at, id);
CREATE INDEX durable_runs_workflow_status ON durable_runs (workflow, status, created_at, id);

-- The histories. No foreign key to durable_runs: the append statement only inserts events for the run row it
-- has just updated under its fence, and an RI check per event would cost a query per row on the hot path.
CREATE TABLE durable_events (
    run_id text        NOT NULL,
    seq    integer     NOT NULL CHECK (seq > 0),
    at     timestamptz NOT NULL,
    type   text        NOT NULL,
    data   bytea       NOT NULL,
    PRIMARY KEY (run_id, seq)
);

COMMENT ON TABLE durable_events IS 'Durable: append-only event histories (see the durable_history view).';
COMMENT ON COLUMN durable_events.data IS 'JSON of the event (history.encode_event), stored as bytes, never re-encoded.';

-- The histories as readable JSON, for people inspecting runs with psql.
CREATE VIEW durable_history AS
    SELECT run_id, seq, at, type, convert_from(data, 'UTF8')::jsonb AS event FROM durable_events;

-- Invariant 1 of the design: events are never updated or deleted, and the database (not only our code) says so.
-- The one exception is a retention job deleting the events of finished runs, which must first run
-- SET durable.allow_retention = on (SET LOCAL inside its transaction).
CREATE FUNCTION durable_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND current_setting('durable.allow_retention', true) = 'on'
       AND NOT EXISTS (SELECT 1 FROM durable_runs WHERE id = OLD.run_id AND finished_at IS NULL) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'durable_events is append-only: % of event % of run % refused', TG_OP, OLD.seq, OLD.run_id
        USING ERRCODE = 'restrict_violation',
              HINT = 'Events are never changed. A retention job may delete the events of finished runs after '
                     'SET LOCAL durable.allow_retention = on.';
END
$$;

CREATE TRIGGER durable_events_append_only BEFORE UPDATE OR DELETE ON durable_events
    FOR EACH ROW EXECUTE FUNCTION durable_events_guard();

-- TRUNCATE skips row triggers, so it gets its own guard.
CREATE FUNCTION durable_events_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'durable_events is append-only: TRUNCATE refused'
        USING ERRCODE = 'restrict_violation',
              HINT = 'Events are never changed. Delete the events of finished runs with a retention job instead.';
END
$$;

CREATE TRIGGER durable_events_no_truncate BEFORE TRUNCATE ON durable_events
    FOR EACH STATEMENT EXECUTE FUNCTION durable_events_no_truncate();

-- Wake-ups for other processes, sent in the same transaction as the change (NOTIFY is delivered on commit):
-- durable_finished (payload: run id) when a run finishes; durable_work (payload: workflow name) when a run is
-- created, released, or has its wake time changed while unleased (a cancel request). Workers then re-check.
CREATE FUNCTION durable_runs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.finished_at IS NOT NULL THEN
        PERFORM pg_notify('durable_finished', NEW.id);
    ELSE
        PERFORM pg_notify('durable_work', NEW.workflow);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER durable_runs_created AFTER INSERT ON durable_runs
    FOR EACH ROW EXECUTE FUNCTION durable_runs_notify();

-- The WHEN clause is evaluated without entering PL/pgSQL, so claims, heartbeats and step appends pay nothing.
CREATE TRIGGER durable_runs_changed AFTER UPDATE ON durable_runs
    FOR EACH ROW
    WHEN ((OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL)
          OR (NEW.finished_at IS NULL AND NEW.lease_owner IS NULL
              AND (OLD.lease_owner IS NOT NULL OR OLD.wake_at IS DISTINCT FROM NEW.wake_at)))
    EXECUTE FUNCTION durable_runs_notify();

-- Which worker serves which workflow names (so a client can tell an unknown name from a slow worker).
CREATE TABLE durable_workers (
    worker_id     text        NOT NULL,
    workflow      text        NOT NULL,
    registered_at timestamptz NOT NULL,
    PRIMARY KEY (worker_id, workflow)
);
