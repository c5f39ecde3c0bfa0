-- Durable schema 3 for SQLite: queues. Runs get a deduplication key; queues get settings shared by every worker
-- (paused, global concurrency, rate limit) and the indexes that make per-queue claims, limits and stats cost what
-- the queue holds rather than what the table holds. Applied like 0001, in one BEGIN IMMEDIATE transaction.

-- Nullable and without a default: SQLite adds it without rewriting the table.
ALTER TABLE durable_runs ADD COLUMN dedup_key TEXT;

-- At most one unfinished run per key; a run that finishes leaves the index and frees its key. create_run's
-- "ON CONFLICT DO NOTHING" covers this index and the primary key alike. The status list is the code's FINISHED
-- (history._sqlite_queries), written the same way so that SQLite sees that the queries imply this predicate.
CREATE UNIQUE INDEX durable_runs_dedup ON durable_runs (dedup_key)
    WHERE dedup_key IS NOT NULL AND status NOT IN ('completed', 'failed', 'cancelled', 'continued');

-- The unfinished runs of each queue: queue_stats reads one queue's range; a claim of one queue reads its unleased
-- runs (lease_expires_at IS NULL) by due time, or its expired leases; a limited queue's live leases (global
-- concurrency) are the range "lease_expires_at > now". A lease's expiry is set and cleared together with its
-- owner, so lease_expires_at IS NULL is "unleased". Finished runs are not in it.
CREATE INDEX durable_runs_queue ON durable_runs (queue, lease_expires_at, coalesce(wake_at, created_at))
    WHERE status NOT IN ('completed', 'failed', 'cancelled', 'continued');
-- Every run by queue and first start: a rate-limited queue counts the runs started within its period (finished
-- ones too), and list_queues walks the distinct queue names.
CREATE INDEX durable_runs_queue_started ON durable_runs (queue, started_at);

-- A queue's settings, shared by every worker; a queue without a row has the defaults (not paused, no limits).
-- rate_limit counts first starts per rate_period seconds, and applies only when both are set.
CREATE TABLE durable_queues (
    name               TEXT    PRIMARY KEY NOT NULL,
    paused             INTEGER NOT NULL DEFAULT 0,
    global_concurrency INTEGER,
    rate_limit         INTEGER,
    rate_period        REAL,
    updated_at         INTEGER NOT NULL
) WITHOUT ROWID;
