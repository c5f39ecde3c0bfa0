-- Durable schema for SQLite: listing runs (engine.list_executions). Runs get current_step, and the indexes that
-- keep each filter and order of list_runs (history._sqlite_listing) to a short index range. Applied like 0001,
-- in one BEGIN IMMEDIATE transaction. The same indexes as PostgreSQL's 0004_listing.sql, for the same reasons;
-- SQLite updates an index only when a column it covers changes, so a step append (next_seq, updated_at,
-- current_step) touches none of them: updated_at and current_step are indexed nowhere.

-- Nullable and without a default: SQLite adds it without rewriting the table.
-- What the run does as of its last append: its steps in flight (comma-separated), else event:<name>,
-- input:<key>, child:<id> or sleep; NULL once finished.
ALTER TABLE durable_runs ADD COLUMN current_step TEXT;

-- "Runs of workflow W, newest first" reads durable_runs_workflow_created (workflow, created_at), made by the
-- retention migration. With it, durable_runs_workflow_status needs no completed runs (most rows): "workflow W, status completed"
-- reads durable_runs_workflow_created; the other statuses say "status <> 'completed'".
DROP INDEX durable_runs_workflow_status;
CREATE INDEX durable_runs_workflow_status ON durable_runs (workflow, status, created_at, id)
    WHERE status <> 'completed';
-- "Failed runs, newest first" (any single status). Completed runs (most) are left out: that filter reads
-- durable_runs_created; the query adds the literal "status <> 'completed'" for the others.
CREATE INDEX durable_runs_status_created ON durable_runs (status, created_at, id) WHERE status <> 'completed';
-- "Runs of queue Q, newest first". Default-queue runs (usually most) are left out, likewise.
CREATE INDEX durable_runs_queue_created ON durable_runs (queue, created_at, id) WHERE queue <> 'default';
-- Unfinished runs newest first: a current_step filter (the query adds this literal predicate and checks
-- current_step in the rows), and lists of unfinished statuses. The status list is the code's FINISHED.
CREATE INDEX durable_runs_active ON durable_runs (created_at, id)
    WHERE status NOT IN ('completed', 'failed', 'cancelled', 'continued');
-- order_by started_at / finished_at: runs without the timestamp are not listed in that order.
CREATE INDEX durable_runs_started ON durable_runs (started_at, id) WHERE started_at IS NOT NULL;
CREATE INDEX durable_runs_finished_at ON durable_runs (finished_at, id) WHERE finished_at IS NOT NULL;
-- search: a dedup key prefix, read as a range in BINARY (code point) order, for finished runs too. A run id
-- prefix is a range of the primary key's own index (BINARY already).
CREATE INDEX durable_runs_dedup_prefix ON durable_runs (dedup_key) WHERE dedup_key IS NOT NULL;
