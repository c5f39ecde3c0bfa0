-- Live event streams (engine.subscribe, `durable watch`): every statement that appends events tells listeners
-- which runs grew, in the committing transaction (NOTIFY is delivered on commit, in commit order).
--
-- durable_events (payload: "run_id first_seq last_seq"): one NOTIFY per run per statement, however many events
-- the statement inserted for it, so a group-committed batch of appends sends one notification per run. The
-- payload names the new events, not their content: a subscriber reads them with read_history(run_id,
-- after_seq=the last it saw), so a lost, duplicated or coalesced notification never loses or repeats an event,
-- and the payload stays far under NOTIFY's 8000-byte limit (a run id longer than 7,900 bytes gets no
-- notification: its subscribers find its events by their poll).
--
-- A statement-level trigger with a transition table, not a row-level one: one PL/pgSQL call per statement
-- instead of one per event.
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
    FOR EACH STATEMENT EXECUTE FUNCTION durable_events_notify();
