-- Durable schema 3 for PostgreSQL: queues. Runs get a deduplication key; queues get settings shared by every
-- worker (paused, global concurrency, rate limit) and the indexes that make per-queue claims, limits and stats
-- cost what the queue holds rather than what the table holds. Applied like 0001, in one transaction under the
-- advisory lock.

-- Nullable and without a default: adding it rewrites nothing.
ALTER TABLE durable_runs ADD COLUMN dedup_key text;
COMMENT ON COLUMN durable_runs.dedup_key IS 'While the run is unfinished, starting a run with the same key returns this one.';

-- At most one unfinished run per key; a run that finishes leaves the index and frees its key. create_run's
-- "ON CONFLICT DO NOTHING" covers this index and the primary key alike. The status list is the code's
-- FINISHED (history._pg_queries), which must imply this predicate for the planner to use the index.
CREATE UNIQUE INDEX durable_runs_dedup ON durable_runs (dedup_key)
    WHERE dedup_key IS NOT NULL AND status NOT IN ('completed', 'failed', 'cancelled', 'continued');

-- The unfinished runs of each queue: queue_stats reads one queue's range; a claim of one queue reads its
-- unleased runs (lease_expires_at IS NULL) by due time, or its expired leases; a limited queue's live leases
-- (global concurrency) are the range "lease_expires_at > now". A lease's expiry is set and cleared together
-- with its owner, so lease_expires_at IS NULL is "unleased". Finished runs are not in it.
CREATE INDEX durable_runs_queue ON durable_runs (queue, lease_expires_at, (coalesce(wake_at, created_at)))
    WHERE status NOT IN ('completed', 'failed', 'cancelled', 'continued');
-- Every run by queue and first start: a rate-limited queue counts the runs started within its period (finished
-- ones too), and list_queues walks the distinct queue names (a loose index scan).
CREATE INDEX durable_runs_queue_started ON durable_runs (queue, started_at);

-- A queue's settings, shared by every worker; a queue without a row has the defaults (not paused, no limits).
-- rate_limit counts first starts per rate_period seconds, and applies only when both are set.
CREATE TABLE durable_queues (
    name               text             PRIMARY KEY,
    paused             boolean          NOT NULL DEFAULT false,
    global_concurrency integer,
    rate_limit         integer,
    rate_period        double precision,
    updated_at         timestamptz      NOT NULL
);

COMMENT ON TABLE durable_queues IS 'Durable: queue settings (paused, global concurrency, rate limit per period).';

-- A queue changed and is not paused (resumed, or a limit loosened): wake every worker, in any process, on
-- commit (NOTIFY durable_work, payload: the queue name). Pausing wakes no one.
CREATE FUNCTION durable_queues_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('durable_work', NEW.name);
    RETURN NULL;
END
$$;

CREATE TRIGGER durable_queues_changed AFTER INSERT OR UPDATE ON durable_queues
    FOR EACH ROW WHEN (NOT NEW.paused)
    EXECUTE FUNCTION durable_queues_notify();
