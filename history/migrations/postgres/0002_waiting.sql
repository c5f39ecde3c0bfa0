-- Durable schema 2 for PostgreSQL: waiting on the world. Runs may end by continuing as a new run, publish a state,
-- and have children listed; each run gets an inbox (external events, people's input, children's outcomes) and a
-- list of the inputs it asks people for. Applied like 0001, in one transaction under the advisory lock.

-- A run that called ctx.continue_as_new ends with status 'continued' (finished: never claimed again).
ALTER TABLE durable_runs DROP CONSTRAINT durable_runs_status_check;
ALTER TABLE durable_runs ADD CONSTRAINT durable_runs_status_check
    CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled', 'continued'));

-- Nullable and without a default: adding them rewrites nothing.
ALTER TABLE durable_runs ADD COLUMN state bytea;
ALTER TABLE durable_runs ADD COLUMN continued_from text;
COMMENT ON COLUMN durable_runs.state IS 'JSON object the workflow published with ctx.set_state (latest value per key).';
COMMENT ON COLUMN durable_runs.continued_from IS 'The run this one continues (ctx.continue_as_new).';

-- The claim index must leave out continued runs too (its predicate is the claim's "status NOT IN (finished)").
DROP INDEX durable_runs_ready;
CREATE INDEX durable_runs_ready ON durable_runs ((coalesce(wake_at, created_at)))
    WHERE lease_owner IS NULL AND status NOT IN ('completed', 'failed', 'cancelled', 'continued');
-- list_children, oldest first. Partial: most runs have no parent; "parent_id = $1" implies the predicate.
CREATE INDEX durable_runs_parent ON durable_runs (parent_id, created_at, id) WHERE parent_id IS NOT NULL;

-- Each run's inbox: messages waiting for the run's worker to record them in its history (MessageReceived,
-- ChildFinished), after which the same append marks them consumed. Rows are never updated otherwise.
CREATE TABLE durable_inbox (
    id          bigserial   PRIMARY KEY,
    run_id      text        NOT NULL,
    kind        text        NOT NULL,
    name        text        NOT NULL,
    payload     bytea       NOT NULL,
    sent_at     timestamptz NOT NULL,
    consumed_at timestamptz
);

COMMENT ON TABLE durable_inbox IS 'Durable: messages to runs (kind event, input or child), until their run records them.';
COMMENT ON COLUMN durable_inbox.payload IS 'JSON of the message (for kind child: {"status", "result", "error"}).';

-- read_inbox and heartbeat's "has unconsumed messages": only what is still waiting, by run, in order.
CREATE INDEX durable_inbox_unconsumed ON durable_inbox (run_id, id) WHERE consumed_at IS NULL;

-- The inputs runs ask people for (ctx.wait_for_input), from the append that asks until the answer is provided,
-- the run stops waiting, or the run finishes. A provided row stays until the run finishes, so that a second
-- answer is refused as "provided already".
CREATE TABLE durable_inputs (
    run_id      text        NOT NULL,
    key         text        NOT NULL,
    prompt      text        NOT NULL,
    spec        bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    workflow    text        NOT NULL,
    timeout_at  timestamptz,
    provided_at timestamptz,
    PRIMARY KEY (run_id, key)
);

COMMENT ON TABLE durable_inputs IS 'Durable: inputs waiting runs ask people for (listed until provided).';
COMMENT ON COLUMN durable_inputs.spec IS 'JSON schema of the expected answer.';

-- list_pending_inputs, oldest first.
CREATE INDEX durable_inputs_open ON durable_inputs (created_at, run_id, key) WHERE provided_at IS NULL;

-- A new message wakes the worker driving its run, in any process: NOTIFY durable_message (payload: run id).
CREATE FUNCTION durable_inbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('durable_message', NEW.run_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER durable_inbox_sent AFTER INSERT ON durable_inbox
    FOR EACH ROW EXECUTE FUNCTION durable_inbox_notify();

-- When a run finishes, in the committing transaction (MemoryStore.append does the same):
-- * its inputs close (a finished run asks nothing);
-- * if it has an unfinished parent, the parent's inbox gets a "child" message named after the run, with the JSON
--   {"status", "result", "error"} of history.child_outcome (result: the raw JSON or null, error: the ErrorInfo
--   JSON as stored), and an unleased parent becomes ready at once.
-- A trigger rather than more statements in the append: row-level AFTER triggers run once the whole append
-- statement is done and see all of its changes (inputs opened by the same append, a parent released by the same
-- batch), and the append stays one round trip. The WHEN clause keeps every other update out of PL/pgSQL.
-- The append (history._pg_queries.APPEND_FULL) has already locked the parents, in id order.
CREATE FUNCTION durable_runs_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM durable_inputs WHERE run_id = NEW.id;
    IF NEW.parent_id IS NOT NULL THEN
        INSERT INTO durable_inbox (run_id, kind, name, payload, sent_at)
        SELECT p.id, 'child', NEW.id,
               convert_to('{"status":' || to_json(NEW.status)::text || ',"result":', 'UTF8')
               || coalesce(NEW.result, convert_to('null', 'UTF8'))
               || convert_to(',"error":' || coalesce(NEW.error::text, 'null') || '}', 'UTF8'),
               now()
        FROM durable_runs p
        WHERE p.id = NEW.parent_id AND p.finished_at IS NULL;
        IF FOUND THEN
            UPDATE durable_runs SET wake_at = NULL, updated_at = now()
            WHERE id = NEW.parent_id AND lease_owner IS NULL AND finished_at IS NULL;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER durable_runs_finished AFTER UPDATE ON durable_runs
    FOR EACH ROW
    WHEN (OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION durable_runs_finished();

-- A run released to sleep (an append giving up the lease with a wake time) while it has unconsumed messages is
-- made ready at once: a message that came while it was held must not wait behind the sleep (the engine parks a
-- run that waits for the world until 9999). A trigger, because its query takes a snapshot after the append has
-- locked the run's row: a message sent before that is seen here, and one sent after it waits for the row lock
-- (SEND_MESSAGE, LOCK_FOR_INPUT, APPEND_FULL's parents) and then sees the run unleased and wakes it. Messages the
-- same append consumed are consumed by now. Not for mark_blocked (blocked is set): a run that waits for fixed
-- code would otherwise be claimed, diverge and be blocked again in a loop.
CREATE FUNCTION durable_runs_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM durable_inbox WHERE run_id = NEW.id AND consumed_at IS NULL) THEN
        UPDATE durable_runs SET wake_at = NULL WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER durable_runs_released AFTER UPDATE ON durable_runs
    FOR EACH ROW
    WHEN (OLD.lease_owner IS NOT NULL AND NEW.lease_owner IS NULL AND NEW.finished_at IS NULL
          AND NEW.wake_at IS NOT NULL AND NEW.blocked IS NULL)
    EXECUTE FUNCTION durable_runs_released();
