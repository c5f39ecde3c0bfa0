-- Durable schema 1 for SQLite: runs, their append-only histories, worker registrations.
-- Applied by history._sqlite inside one BEGIN IMMEDIATE transaction (which also keeps two processes from
-- upgrading at once). Released migrations are never edited: add 0002_<what>.sql instead.
-- Times are INTEGER microseconds since 1970-01-01 UTC: exact (keyset cursors compare them), compact, and
-- readable with datetime(at / 1e6, 'unixepoch').

-- One row per run, kept in step with its history by the transactions that append events.
CREATE TABLE durable_runs (
    id               TEXT    PRIMARY KEY NOT NULL,
    workflow         TEXT    NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled')),
    input            BLOB    NOT NULL,
    result           BLOB,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    wake_at          INTEGER,
    next_seq         INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_epoch      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER,
    queue            TEXT    NOT NULL DEFAULT 'default',
    priority         INTEGER NOT NULL DEFAULT 0,
    cancel_reason    TEXT,
    blocked          TEXT,
    parent_id        TEXT
);

-- Claiming: unleased unfinished runs by the time they are due (their wake time, or their creation), read as
-- the range "due by now" and sorted by priority, so a claim costs what is ready, never what sleeps; and leases by
-- expiry, to take over the runs of a worker that died. next_wake_at reads the first index from the other end.
CREATE INDEX durable_runs_ready ON durable_runs (coalesce(wake_at, created_at))
    WHERE lease_owner IS NULL AND status NOT IN ('completed', 'failed', 'cancelled');
CREATE INDEX durable_runs_leases ON durable_runs (lease_expires_at) WHERE lease_owner IS NOT NULL;
-- Listing newest first (keyset pagination on created_at, id), unfiltered or by workflow and status.
CREATE INDEX durable_runs_created ON durable_runs (created_at, id);
CREATE INDEX durable_runs_workflow_status ON durable_runs (workflow, status, created_at, id);

-- The histories: data is the JSON of the event (history.encode_event), stored as bytes, never re-encoded.
CREATE TABLE durable_events (
    run_id TEXT    NOT NULL,
    seq    INTEGER NOT NULL CHECK (seq > 0),
    at     INTEGER NOT NULL,
    type   TEXT    NOT NULL,
    data   BLOB    NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- One-row switches. allow_retention lets a retention job delete the events of finished runs: it sets the flag
-- and clears it again inside its own transaction, so no other connection ever sees it on.
CREATE TABLE durable_settings (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    allow_retention INTEGER NOT NULL DEFAULT 0
);
INSERT INTO durable_settings (id, allow_retention) VALUES (1, 0);

-- Invariant 1 of the design: events are never updated or deleted, and the database (not only our code) says so.
CREATE TRIGGER durable_events_no_update BEFORE UPDATE ON durable_events
BEGIN
    SELECT RAISE(ABORT, 'durable_events is append-only: UPDATE refused (events are never changed)');
END;

CREATE TRIGGER durable_events_no_delete BEFORE DELETE ON durable_events
WHEN (SELECT allow_retention FROM durable_settings WHERE id = 1) IS NOT 1
  OR EXISTS (SELECT 1 FROM durable_runs WHERE id = OLD.run_id AND finished_at IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'durable_events is append-only: DELETE refused (only a retention job may delete the events of finished runs, with durable_settings.allow_retention = 1)');
END;

-- Which worker serves which workflow names (so a client can tell an unknown name from a slow worker).
CREATE TABLE durable_workers (
    worker_id     TEXT    NOT NULL,
    workflow      TEXT    NOT NULL,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (worker_id, workflow)
);
