-- Durable schema 2 for SQLite: waiting on the world. Runs may end by continuing as a new run, publish a state,
-- and have children listed; each run gets an inbox (external events, people's input, children's outcomes) and a
-- list of the inputs it asks people for. Applied like 0001, in one BEGIN IMMEDIATE transaction.

-- SQLite cannot change a CHECK constraint in place, so durable_runs is rebuilt (SQLite's documented procedure:
-- new table, copy, drop, rename) to allow the status 'continued' and to add state and continued_from.
-- The events guard names durable_runs in its WHEN clause: it is dropped first (a rename re-checks every trigger,
-- and fails on one naming a table that is gone) and created again unchanged at the end.
DROP TRIGGER durable_events_no_delete;

CREATE TABLE durable_runs_2 (
    id               TEXT    PRIMARY KEY NOT NULL,
    workflow         TEXT    NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled', 'continued')),
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
    parent_id        TEXT,
    state            BLOB,
    continued_from   TEXT
);

INSERT INTO durable_runs_2 (id, workflow, status, input, result, error, created_at, updated_at, started_at,
                            finished_at, wake_at, next_seq, lease_owner, lease_epoch, lease_expires_at, queue,
                            priority, cancel_reason, blocked, parent_id)
SELECT id, workflow, status, input, result, error, created_at, updated_at, started_at, finished_at, wake_at,
       next_seq, lease_owner, lease_epoch, lease_expires_at, queue, priority, cancel_reason, blocked, parent_id
FROM durable_runs;

DROP TABLE durable_runs;
ALTER TABLE durable_runs_2 RENAME TO durable_runs;

-- The indexes of 0001 (dropped with the old table), the claim index now leaving out continued runs too.
CREATE INDEX durable_runs_ready ON durable_runs (coalesce(wake_at, created_at))
    WHERE lease_owner IS NULL AND status NOT IN ('completed', 'failed', 'cancelled', 'continued');
CREATE INDEX durable_runs_leases ON durable_runs (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX durable_runs_created ON durable_runs (created_at, id);
CREATE INDEX durable_runs_workflow_status ON durable_runs (workflow, status, created_at, id);
-- list_children, oldest first. Partial: most runs have no parent; "parent_id = ?1" implies the predicate.
CREATE INDEX durable_runs_parent ON durable_runs (parent_id, created_at, id) WHERE parent_id IS NOT NULL;

CREATE TRIGGER durable_events_no_delete BEFORE DELETE ON durable_events
WHEN (SELECT allow_retention FROM durable_settings WHERE id = 1) IS NOT 1
  OR EXISTS (SELECT 1 FROM durable_runs WHERE id = OLD.run_id AND finished_at IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'durable_events is append-only: DELETE refused (only a retention job may delete the events of finished runs, with durable_settings.allow_retention = 1)');
END;

-- Each run's inbox: messages waiting for the run's worker to record them in its history, after which the same
-- append marks them consumed. AUTOINCREMENT: an id is never reused, even after a retention job deletes rows
-- (histories name messages by id).
CREATE TABLE durable_inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    sent_at     INTEGER NOT NULL,
    consumed_at INTEGER
);

-- read_inbox and heartbeat's "has unconsumed messages": only what is still waiting, by run, in order.
CREATE INDEX durable_inbox_unconsumed ON durable_inbox (run_id, id) WHERE consumed_at IS NULL;

-- The inputs runs ask people for, until the answer is provided, the run stops waiting, or the run finishes. A
-- provided row stays until the run finishes, so that a second answer is refused as "provided already".
CREATE TABLE durable_inputs (
    run_id      TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    prompt      TEXT    NOT NULL,
    spec        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    workflow    TEXT    NOT NULL,
    timeout_at  INTEGER,
    provided_at INTEGER,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;

-- list_pending_inputs, oldest first.
CREATE INDEX durable_inputs_open ON durable_inputs (created_at, run_id, key) WHERE provided_at IS NULL;
