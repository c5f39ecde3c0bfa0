-- Durable schema for SQLite: run metrics and retention. Three indexes; nothing else changes (the events' guard of
-- 0001_init.sql already lets a retention job delete the events of finished runs while durable_settings says so,
-- inside the job's own transaction). Applied like 0001, in one BEGIN IMMEDIATE transaction.

-- engine.get_metrics(workflow=...): one workflow's runs created within the period, read as one range.
CREATE INDEX durable_runs_workflow_created ON durable_runs (workflow, created_at);

-- Retention: finished runs of one status by finish time, so that each batch reads the runs it deletes and
-- no others. Partial: unfinished runs are not in it.
CREATE INDEX durable_runs_finished ON durable_runs (status, finished_at) WHERE finished_at IS NOT NULL;

-- Retention deletes a run's inbox messages by run, consumed ones too (which durable_inbox_unconsumed leaves
-- out).
CREATE INDEX durable_inbox_run ON durable_inbox (run_id);
