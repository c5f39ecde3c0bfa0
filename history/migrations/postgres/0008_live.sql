-- Live event streams (engine.subscribe, `durable watch`): a statement that appends events tells listeners which
-- runs grew, in the committing transaction (NOTIFY is delivered on commit, in commit order), while some process
-- subscribes.
--
-- durable_events (payload: lines "run_id first_seq last_seq", one per run the statement appended to, however
-- many events it inserted for it, packed into as few NOTIFYs as fit under 7,900 bytes: a group-committed batch
-- of appends for 100 runs sends one or two notifications). The payload names the new events, not their content: a subscriber reads them with read_history(run_id,
-- after_seq=the last it saw), so a lost, duplicated or coalesced notification never loses or repeats an event,
-- and the payload stays under NOTIFY's 8000-byte limit (a run id longer than 7,900 bytes gets no notification:
-- its subscribers find its events by their poll; so does a run id with a line break in it).
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
DECLARE
    line text;
    payload text := '';
BEGIN
    -- One line per run; lines packed into as few NOTIFYs as fit (a group commit of 100 runs sends one or two).
    FOR line IN SELECT run_id || ' ' || min(seq) || ' ' || max(seq) FROM durable_new_events GROUP BY run_id LOOP
        CONTINUE WHEN octet_length(line) >= 7900 OR strpos(line, E'\n') > 0;  -- see the top of this file
        IF octet_length(payload) + octet_length(line) >= 7900 THEN
            PERFORM pg_notify('durable_events', payload);
            payload := '';
        END IF;
        payload := CASE WHEN payload = '' THEN line ELSE payload || E'\n' || line END;
    END LOOP;
    IF payload <> '' THEN
        PERFORM pg_notify('durable_events', payload);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER durable_events_appended AFTER INSERT ON durable_events
    REFERENCING NEW TABLE AS durable_new_events
    FOR EACH STATEMENT
    WHEN (NOT pg_try_advisory_xact_lock_shared(28276631976638053))
    EXECUTE FUNCTION durable_events_notify();
