-- Live event streams (engine.subscribe, `durable watch`): a statement that appends events tells listeners which
-- runs grew, in the committing transaction (NOTIFY is delivered on commit, in commit order), while some process
-- subscribes.
--
-- durable_events (payload: "run_id first_seq last_seq"): one NOTIFY per run per statement, however many events
-- the statement inserted for it, so a group-committed batch of appends sends one notification per run. The
-- payload names the new events, not their content: a subscriber reads them with read_history(run_id,
-- after_seq=the last it saw), so a lost, duplicated or coalesced notification never loses or repeats an event,
-- and the payload stays far under NOTIFY's 8000-byte limit (a run id longer than 7,900 bytes gets no
-- notification: its subscribers find its events by their poll).
--
-- A statement-level trigger with a transition table: one PL/pgSQL call per statement, not one per event.
--
-- Only while watched. A NOTIFY is not free: PL/pgSQL, the queue, and a lock that serializes the commits of all
-- notifying transactions of the cluster. So the trigger fires only while some process subscribes, which it
-- says by holding (or waiting for) the advisory lock 28276631976638053 (ASCII "durlive" read as a number,
-- history._pg_queries.WATCH_LOCK_KEY) in exclusive mode on a connection of its own. The WHEN condition, evaluated
-- without entering PL/pgSQL, tries the same lock in shared mode for the appending transaction: that succeeds at
-- once (and costs a lock-table entry until commit) when nobody watches, and fails when a subscriber holds the lock
-- or waits for it (a waiting exclusive request makes new shared requests wait, so "try" fails). A subscriber
-- starts reading only once some subscriber holds the lock: from then on every append notifies, and every append
-- that did not committed before the lock was granted.
CREATE FUNCTION durable_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('durable_events', run_id || ' ' || min(seq) || ' ' || max(seq))
    FROM durable_new_events
    GROUP BY run_id
    HAVING octet_length(run_id) < 7900;
    RETURN NULL;
END
$$;

CREATE TRIGGER durable_events_appended AFTER INSERT ON durable_events
    REFERENCING NEW TABLE AS durable_new_events
    FOR EACH STATEMENT
    WHEN (NOT pg_try_advisory_xact_lock_shared(28276631976638053))
    EXECUTE FUNCTION durable_events_notify();
