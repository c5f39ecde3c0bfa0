-- Durable schema for PostgreSQL: run metrics and retention. Three indexes; nothing else changes (the events' guard
-- of 0001_init.sql already lets a retention job delete the events of finished runs after
-- SET LOCAL durable.allow_retention = on). Applied like 0001, in one transaction under the advisory lock.

-- engine.get_metrics(workflow=...): one workflow's runs created within the period, read as one range.
-- (durable_runs_workflow_status has the status between the two, so it would read every run of the workflow.)
-- Neither column ever changes: appends stay HOT updates.
CREATE INDEX durable_runs_workflow_created ON durable_runs (workflow, created_at);

-- Retention: finished runs of one status by finish time, so that each batch reads the runs it deletes and
-- no others. Partial: unfinished runs are not in it; a run enters it once, in the append that finishes it (which
-- changes indexed columns anyway).
CREATE INDEX durable_runs_finished ON durable_runs (status, finished_at) WHERE finished_at IS NOT NULL;

-- Retention deletes a run's inbox messages by run, consumed ones too (which durable_inbox_unconsumed leaves
-- out). Costs an index entry per message sent and per message consumed; messages are not per step.
CREATE INDEX durable_inbox_run ON durable_inbox (run_id);
