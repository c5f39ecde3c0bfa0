-- Durable schema for PostgreSQL: listing runs (engine.list_executions). Runs get current_step, and the indexes
-- that keep each filter and order of list_runs (history._pg_listing) to a short index range at a million runs.
-- Applied like 0001, in one transaction under the advisory lock (plain CREATE INDEX: writes to durable_runs wait
-- while each index reads the whole table once; upgrade a large database at a quiet moment).
--
-- Write cost, the other side of each index: every index costs an entry per inserted run and per non-HOT update.
-- A step append stays a HOT update (no index entry at all): none of these indexes covers a column that the
-- common step append changes (next_seq, updated_at, current_step; status, wake_at and the lease stay as they
-- are). That is why updated_at and current_step are indexed nowhere. A run's non-HOT updates are its claims,
-- releases and its finish, which already touch indexed columns. Partial indexes cost only the rows they hold.

-- Nullable and without a default: adding it rewrites nothing.
ALTER TABLE durable_runs ADD COLUMN current_step text;
COMMENT ON COLUMN durable_runs.current_step IS
    'What the run does as of its last append: its steps in flight (comma-separated), else event:<name>, '
    'input:<key>, child:<id> or sleep; NULL once finished. Not indexed: step appends change it (HOT updates).';

-- "Runs of workflow W, newest first", the most common listing, reads durable_runs_workflow_created (workflow,
-- created_at), made by the retention migration for metrics: ties of created_at are put in id order by an
-- incremental sort of a few rows. With it, durable_runs_workflow_status needs no completed runs (most rows, and
-- a third entry per run: its finishing version): "workflow W, status completed" reads
-- durable_runs_workflow_created, where nearly every row matches; the other statuses say
-- "status <> 'completed'" (history._listing.filters), which implies this predicate whatever the parameter.
DROP INDEX durable_runs_workflow_status;
CREATE INDEX durable_runs_workflow_status ON durable_runs (workflow, status, created_at, id)
    WHERE status <> 'completed';

-- "Failed runs, newest first" (any single status, across workflows). status changes only in claims, releases
-- and finishes (non-HOT already). Completed runs, most of the table, are left out: "status = completed" reads
-- durable_runs_created, where nearly every row matches, and a run's finishing version costs no entry here. The
-- query adds the literal "status <> 'completed'" for the other statuses (history._listing.filters), which
-- implies the predicate whatever the parameter.
CREATE INDEX durable_runs_status_created ON durable_runs (status, created_at, id) WHERE status <> 'completed';

-- "Runs of queue Q, newest first". durable_runs_queue holds unfinished runs only, durable_runs_queue_started
-- is in start order. Runs of the default queue are left out, as completed runs above: a filter on it reads
-- durable_runs_created (it is usually most runs); the query says "queue <> 'default'" for the others.
CREATE INDEX durable_runs_queue_created ON durable_runs (queue, created_at, id) WHERE queue <> 'default';

-- Unfinished runs newest first: a current_step filter (current_step is not indexed, see above: the query adds
-- the literal "status NOT IN (finished)" and reads this small index, checking current_step in the rows), and
-- status lists of unfinished statuses. Finished runs are not in it, so it stays the size of the live work.
CREATE INDEX durable_runs_active ON durable_runs (created_at, id)
    WHERE status NOT IN ('completed', 'failed', 'cancelled', 'continued');

-- order_by started_at / finished_at: runs without the timestamp are not listed in that order (the query says
-- "IS NOT NULL", which implies these predicates), so a key is never NULL and the keyset stays a plain range.
-- started_at is set once, by the first claim; finished_at once, by the finish.
CREATE INDEX durable_runs_started ON durable_runs (started_at, id) WHERE started_at IS NOT NULL;
CREATE INDEX durable_runs_finished_at ON durable_runs (finished_at, id) WHERE finished_at IS NOT NULL;

-- search: a run id prefix, read as the range [prefix, successor) in code point order. The primary key's
-- collation is the database's (often a natural-language one, where a prefix is not a range), hence an index in
-- "C" order. Ids never change: it costs an entry per run and per non-HOT update.
CREATE INDEX durable_runs_id_prefix ON durable_runs ((id COLLATE "C"));
-- search: a dedup key prefix (business keys such as "order-1234"), for finished runs too (durable_runs_dedup
-- holds unfinished runs only). Partial: runs without a key cost nothing.
CREATE INDEX durable_runs_dedup_prefix ON durable_runs ((dedup_key COLLATE "C")) WHERE dedup_key IS NOT NULL;
