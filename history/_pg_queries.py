"""Every SQL statement the Postgres store sends, by name, each with a one-line comment.

Statements are constants so that asyncpg prepares each once per connection and reuses it (its statement cache
is keyed by the text). The schema itself lives in ``migrations/postgres/*.sql``.
"""

from __future__ import annotations

from functools import cache

FINISHED = "('completed', 'failed', 'cancelled', 'continued')"
"""SQL list of the statuses of finished runs (``history.FINISHED_STATUSES``)."""

RUN_COLUMNS = (
    "id, workflow, status, input, created_at, updated_at, next_seq, lease_epoch, queue, priority, result, error, "
    "started_at, finished_at, wake_at, lease_owner, lease_expires_at, cancel_reason, blocked, parent_id, state, "
    "continued_from, dedup_key, trace_context, current_step"
)
"""The columns of ``durable_runs`` in the field order of ``RunRecord`` (checked at import by ``_postgres``)."""

# --- schema management ---------------------------------------------------------------------------------------

# The migration lock key: ASCII "durable" read as a number, unlikely to collide with an application's locks.
MIGRATION_LOCK_KEY = 0x64757261626C65

# Serialize schema upgrades between processes; released at the end of the upgrade transaction.
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock($1)"

# The applied migration versions, created before the first migration runs.
CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS durable_schema_version (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

# The newest applied version (NULL when none); raises UndefinedTable on a database Durable never touched.
SCHEMA_VERSION = "SELECT max(version) FROM durable_schema_version"

# Record one applied migration.
RECORD_VERSION = "INSERT INTO durable_schema_version (version, name) VALUES ($1, $2)"

# --- runs ----------------------------------------------------------------------------------------------------

# Create a run and its RunStarted event (seq 1); return (true, the run), or (false, the existing run) when the
# id exists already or an unfinished run has dedup key $10 (the id wins when both do); $11 is the trace context.
# "ON CONFLICT DO NOTHING" covers the primary key and the unique index durable_runs_dedup. No row only when a
# concurrent create of the same id or key commits after this statement began (its snapshot does not see that
# run): then GET_EXISTING.
CREATE_RUN = f"""
WITH run AS (
    INSERT INTO durable_runs (id, workflow, status, input, created_at, updated_at, next_seq, queue, priority,
                              parent_id, wake_at, continued_from, dedup_key, trace_context)
    VALUES ($1, $2, 'pending', $3, now(), now(), 2, $4, $5, $6, $7, $9, $10, $11)
    ON CONFLICT DO NOTHING
    RETURNING {RUN_COLUMNS}
), started AS (
    INSERT INTO durable_events (run_id, seq, at, type, data)
    SELECT id, 1, created_at, 'run_started', $8 FROM run
)
SELECT true, {RUN_COLUMNS} FROM run
UNION ALL
(SELECT false, {RUN_COLUMNS} FROM durable_runs
 WHERE (id = $1 OR (dedup_key = $10 AND status NOT IN {FINISHED})) AND NOT EXISTS (SELECT FROM run)
 ORDER BY id = $1 DESC LIMIT 1)"""

# CREATE_RUN for a batch ($1 ids … $10 dedup keys, $11 trace contexts: arrays, one element per run, none sharing
# an id or a key):
# one row (ordinality, created, the run) per run that was created or exists already. A run missing from the
# result met a concurrent create that committed after this statement began (as with CREATE_RUN): ask again.
# Rows go in id order, so that two batches of the same ids take their locks in the same order.
CREATE_RUNS = f"""
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::int4[], $6::text[],
                         $7::timestamptz[], $8::bytea[], $9::text[], $10::text[], $11::text[])
        WITH ORDINALITY AS b(id, workflow, input, queue, priority, parent_id, wake_at, started, continued_from,
                             dedup_key, trace_context, ord)
), run AS (
    INSERT INTO durable_runs (id, workflow, status, input, created_at, updated_at, next_seq, queue, priority,
                              parent_id, wake_at, continued_from, dedup_key, trace_context)
    SELECT id, workflow, 'pending', input, now(), now(), 2, queue, priority, parent_id, wake_at, continued_from,
           dedup_key, trace_context
    FROM batch ORDER BY id
    ON CONFLICT DO NOTHING
    RETURNING {RUN_COLUMNS}
), started AS (
    INSERT INTO durable_events (run_id, seq, at, type, data)
    SELECT run.id, 1, run.created_at, 'run_started', batch.started FROM run JOIN batch ON batch.id = run.id
)
SELECT batch.ord, true, {", ".join("run." + c for c in RUN_COLUMNS.split(", "))}
FROM run JOIN batch ON batch.id = run.id
UNION ALL
SELECT batch.ord, false, existing.* FROM batch CROSS JOIN LATERAL (
    SELECT {", ".join("r." + c for c in RUN_COLUMNS.split(", "))} FROM durable_runs r
    WHERE r.id = batch.id OR (r.dedup_key = batch.dedup_key AND r.status NOT IN {FINISHED})
    ORDER BY r.id = batch.id DESC LIMIT 1
) existing
WHERE NOT EXISTS (SELECT FROM run WHERE run.id = batch.id)"""

# The run with id $1, else the unfinished run with dedup key $2 (a fresh snapshot, after CREATE_RUN found none).
GET_EXISTING = f"""
SELECT {RUN_COLUMNS} FROM durable_runs
WHERE id = $1 OR (dedup_key = $2 AND status NOT IN {FINISHED})
ORDER BY id = $1 DESC LIMIT 1"""

# One run's row.
GET_RUN = f"SELECT {RUN_COLUMNS} FROM durable_runs WHERE id = $1"

# A run's events after a sequence number, in order.
READ_HISTORY = "SELECT seq, at, data FROM durable_events WHERE run_id = $1 AND seq > $2 ORDER BY seq"


@cache
def list_runs(by_workflow: bool, by_status: bool, after: bool) -> str:
    """Runs newest first, optionally filtered, after a keyset cursor; ``$1`` is the row limit.

    One statement per combination of filters (eight at most), rather than ``$n IS NULL OR …`` tests, so that
    each prepared statement gets a plan that uses the right index.
    """
    where, args = [], 1
    if by_workflow:
        args += 1
        where.append(f"workflow = ${args}")
    if by_status:
        args += 1
        where.append(f"status = ${args}")
    if after:
        where.append(f"(created_at, id) < (${args + 1}, ${args + 2})")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {RUN_COLUMNS} FROM durable_runs {clause} ORDER BY created_at DESC, id DESC LIMIT $1"


_LIMITED = "(global_concurrency IS NOT NULL OR (rate_limit IS NOT NULL AND rate_period IS NOT NULL))"
"""SQL test of a ``durable_queues`` row: the queue has a limit (a rate limit needs both the count and the period)."""

_LEASED_COLUMNS = ", ".join("r." + c for c in RUN_COLUMNS.split(", "))


def _ready_in(queues: str, now: str, workflows: str = "$2") -> str:
    """Whether runs of the ``workflows`` in the queues ``queues`` selects (a condition on ``r.queue``) are ready:
    one EXISTS over two branches, each a tight range of ``durable_runs_queue`` (unleased and due; expired
    leases) that stops at the first row. Not "EXISTS … OR EXISTS …": the planner may turn that into a hashed
    subplan that reads every ready run."""
    return f"""EXISTS (
        SELECT FROM durable_runs r
        WHERE {queues} AND r.lease_expires_at IS NULL AND coalesce(r.wake_at, r.created_at) <= {now}
          AND r.lease_owner IS NULL AND r.status NOT IN {FINISHED} AND r.workflow = ANY({workflows}::text[])
        UNION ALL
        SELECT FROM durable_runs r
        WHERE {queues} AND r.lease_expires_at <= {now} AND (r.wake_at IS NULL OR r.wake_at <= {now})
          AND r.lease_owner IS NOT NULL AND r.status NOT IN {FINISHED} AND r.workflow = ANY({workflows}::text[]))"""


def _candidates(now: str, where: str, unleased_where: str = "") -> str:
    """The two branches of a claim's candidates, each on its own partial index, each locking at most ``$3`` rows
    and skipping rows other claimers hold: unleased runs that are due (the normal case) and expired leases (a
    worker died). ``where`` adds conditions to both, ``unleased_where`` to the first."""
    return f"""unleased AS (
    SELECT id, priority, coalesce(wake_at, created_at) AS sort_at, created_at
    FROM durable_runs
    WHERE lease_owner IS NULL AND status NOT IN {FINISHED} AND workflow = ANY($2::text[])
      AND coalesce(wake_at, created_at) <= {now}  -- due: the same as "wake_at IS NULL OR wake_at <= now"
      {where}{unleased_where}
    ORDER BY priority DESC, coalesce(wake_at, created_at), created_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT id, priority, coalesce(wake_at, created_at) AS sort_at, created_at
    FROM durable_runs
    WHERE lease_owner IS NOT NULL AND lease_expires_at <= {now} AND status NOT IN {FINISHED}
      AND workflow = ANY($2::text[]) AND (wake_at IS NULL OR wake_at <= {now})
      {where}
    ORDER BY lease_expires_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)"""


def _lease(now: str, candidates: str) -> str:
    """Lease the first ``$3`` of ``candidates`` (by priority, then due time) to worker ``$1`` for ``$4`` seconds,
    and attach each run's whole history (as arrays). The row re-check under the lock (READ COMMITTED)
    guarantees a run is never claimed twice."""
    return f"""picked AS (
    SELECT id, sort_at FROM ({candidates}) AS candidates
    ORDER BY priority DESC, sort_at, created_at, id LIMIT $3
), claimed AS (
    UPDATE durable_runs r
    SET status = 'running', lease_owner = $1, lease_epoch = r.lease_epoch + 1,
        lease_expires_at = {now} + make_interval(secs => $4), started_at = coalesce(r.started_at, {now}),
        updated_at = {now}, wake_at = NULL
    FROM picked p
    WHERE r.id = p.id
    RETURNING {_LEASED_COLUMNS}, p.sort_at
), leased AS (
    SELECT c.*, h.seqs, h.ats, h.datas
    FROM claimed c
    CROSS JOIN LATERAL (
        SELECT array_agg(e.seq ORDER BY e.seq) AS seqs, array_agg(e.at ORDER BY e.seq) AS ats,
               array_agg(e.data ORDER BY e.seq) AS datas
        FROM durable_events e WHERE e.run_id = c.id
    ) h
)"""


@cache
def claim(by_queue: bool) -> str:
    """Lease up to ``$3`` ready runs of workflows ``$2`` (of queue ``$5`` when ``by_queue``) to worker ``$1`` for
    ``$4`` seconds, from queues without limits: one statement, one round trip, no lock but the rows'.

    Rows: a flag, then the claimed run (RUN_COLUMNS), its sort time and its history as arrays (seqs, ats,
    datas), in claim order. The flag is true when runs of a limited queue are ready too: the statement then
    claims nothing (its one row has NULL run columns) and the caller claims with ``claim_limited`` instead, which
    serializes on the limited queues and orders runs across all queues. Runs of paused queues are never taken.
    With ``by_queue`` the unleased branch can read the queue's range of ``durable_runs_queue`` (the redundant
    "lease_expires_at IS NULL": a lease's owner and expiry are set and cleared together).
    """
    held = "(SELECT paused || limited FROM held)"
    where = f"AND queue = $5 AND queue <> ALL({held}::text[])" if by_queue else f"AND queue <> ALL({held}::text[])"
    where += " AND NOT (SELECT found FROM limited_ready)"
    only = " WHERE l.name = $5" if by_queue else ""
    return f"""
WITH held AS (  -- queues this statement leaves alone; read once (durable_queues is small)
    SELECT coalesce(array_agg(name) FILTER (WHERE paused), '{{}}') AS paused,
           coalesce(array_agg(name) FILTER (WHERE NOT paused), '{{}}') AS limited
    FROM durable_queues WHERE paused OR {_LIMITED}
), limited_ready AS (
    -- Whether runs of limited queues are ready: two index probes per limited queue; none when there is none.
    -- Per queue name, not "queue = ANY(array)": the planner cannot see that array and guesses a sequential scan.
    SELECT EXISTS (
        SELECT FROM unnest((SELECT limited FROM held)::text[]) AS l(name){only}
        {"AND" if by_queue else "WHERE"} {_ready_in("r.queue = l.name", "now()")}
    ) AS found
), {_candidates("now()", where, " AND lease_expires_at IS NULL" if by_queue else "")},
{_lease("now()", "SELECT * FROM unleased UNION ALL SELECT * FROM expired")}
SELECT f.found, l.* FROM limited_ready f LEFT JOIN leased l ON true
ORDER BY l.priority DESC, l.sort_at, l.created_at, l.id"""


@cache
def lock_queues(by_queue: bool) -> str:
    """Take the transaction-scoped advisory lock of each limited, unpaused queue (queue ``$2`` only, when
    ``by_queue``) that has runs of workflows ``$1`` ready, in the order of the lock keys (two claimers never
    wait for each other in opposite orders, even when two names hash alike); return their names. Until commit,
    no other claim of these queues can count their leases and starts: two claims never exceed a limit together.
    """
    only = " AND q.name = $2" if by_queue else ""
    return f"""
SELECT name, pg_advisory_xact_lock(key) FROM (
    SELECT q.name, hashtext('durable.queue:' || q.name) AS key
    FROM durable_queues q
    WHERE NOT q.paused AND {_LIMITED}{only}
      AND {_ready_in("r.queue = q.name", "statement_timestamp()", "$1")}
    ORDER BY key, q.name
    OFFSET 0  -- keeps the sort below the locking: locks are taken in this order
) AS limited"""


def _limited_branch(first_starts: bool | None, cap: str) -> str:
    """One limited queue's candidates (``a.name``): runs never started (``first_starts``), unleased runs started
    before (``False``), or expired leases (``None``); at most ``cap``."""
    now = "statement_timestamp()"
    if first_starts is None:
        where = f"lease_owner IS NOT NULL AND lease_expires_at <= {now} AND (wake_at IS NULL OR wake_at <= {now})"
    else:
        started = "started_at IS NULL" if first_starts else "started_at IS NOT NULL"
        where = (
            f"lease_owner IS NULL AND lease_expires_at IS NULL AND coalesce(wake_at, created_at) <= {now} AND {started}"
        )
    return f"""(SELECT id, queue, priority, coalesce(wake_at, created_at) AS sort_at, created_at
         FROM durable_runs
         WHERE queue = a.name AND status NOT IN {FINISHED} AND workflow = ANY($2::text[]) AND {where}
         ORDER BY priority DESC, coalesce(wake_at, created_at), created_at, id
         LIMIT {cap}
         FOR UPDATE SKIP LOCKED)"""


@cache
def claim_limited(by_queue: bool) -> str:
    """``claim`` with the queues' limits, run after ``lock_queues`` in the same transaction: ``$1``-``$4`` as in
    ``claim``, ``$5`` the queues locked, ``$6`` the queue (when ``by_queue``). Same rows (the flag is false).

    Its snapshot is taken after the locks were granted, so it sees every claim of those queues committed before.
    Each locked queue may lease ``room`` more runs (global concurrency minus its live leases) and start ``starts``
    runs for the first time (rate limit minus the runs started within the period; re-claims are not limited by
    the rate). As in ``MemoryStore.claim``, which skips a run its queue cannot take and goes on: of a queue's
    candidates in order, it takes the first ``room`` among its runs started before and its first ``starts``
    never-started ones; then the first ``$3`` of all, across queues, by priority and due time. Limited queues
    not locked (limited since ``lock_queues`` looked) and paused ones are skipped. Times are the statement's
    (``now()`` would be the transaction's start, before the wait for the locks).
    """
    now = "statement_timestamp()"
    only = " AND queue = $6" if by_queue else ""
    candidates = (
        "SELECT * FROM unleased UNION ALL SELECT * FROM expired UNION ALL "
        "SELECT id, priority, sort_at, created_at FROM limited_taken"
    )
    return f"""
WITH settings AS (
    SELECT name, paused, global_concurrency, rate_limit, rate_period, {_LIMITED} AS limited
    FROM durable_queues WHERE paused OR {_LIMITED}
), allowance AS (
    SELECT s.name,
           greatest(0, least($3, s.global_concurrency - (
               SELECT count(*) FROM durable_runs r
               WHERE r.queue = s.name AND r.lease_expires_at > {now} AND r.lease_owner IS NOT NULL
                 AND r.status NOT IN {FINISHED}))) AS room,
           greatest(0, least($3, CASE WHEN s.rate_period IS NOT NULL THEN s.rate_limit - (
               SELECT count(*) FROM durable_runs r
               WHERE r.queue = s.name AND r.started_at > {now} - make_interval(secs => s.rate_period)) END)) AS starts
    FROM settings s
    WHERE s.name = ANY($5::text[]) AND s.limited AND NOT s.paused
), {_candidates(now, f"AND queue <> ALL(ARRAY(SELECT name FROM settings WHERE paused OR limited)){only}")},
limited_first AS (
    SELECT c.* FROM allowance a CROSS JOIN LATERAL {_limited_branch(True, "least(a.room, a.starts)")} AS c
), limited_again AS (
    SELECT c.* FROM allowance a CROSS JOIN LATERAL {_limited_branch(False, "a.room")} AS c
), limited_expired AS (
    SELECT c.* FROM allowance a CROSS JOIN LATERAL {_limited_branch(None, "a.room")} AS c
), limited AS (
    SELECT * FROM limited_first UNION ALL SELECT * FROM limited_again UNION ALL SELECT * FROM limited_expired
), limited_taken AS (
    SELECT l.* FROM (
        SELECT c.*, row_number() OVER (PARTITION BY queue ORDER BY priority DESC, sort_at, created_at, id) AS nth
        FROM limited c
    ) l
    JOIN allowance a ON a.name = l.queue
    WHERE l.nth <= a.room
), {_lease(now, candidates)}
SELECT false, l.* FROM leased l
ORDER BY l.priority DESC, l.sort_at, l.created_at, l.id"""


def _append(full: bool) -> str:
    """The text of ``APPEND`` (``full=False``) or ``APPEND_FULL`` (``full=True``)."""
    state_array = ", $16::bytea[]" if full else ""
    state_column = ", state" if full else ""
    # current_step, one more array (the last parameter): NULL leaves it, '' clears it (history.Append's UNSET and
    # None). Not an indexed column, so the common step append stays a HOT update.
    step_param = "$42" if full else "$16"
    state_set = ",\n        state = coalesce(i.state, r.state)" if full else ""
    returning = "r.id, r.parent_id, r.finished_at" if full else "r.id"
    unleased = f"CASE WHEN i.release OR i.status IN {FINISHED} THEN NULL"
    return f"""
WITH item AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::integer[], $5::integer[], $6::text[],
                         $7::bytea[], $8::json[], $9::timestamptz[], $10::boolean[]{state_array},
                         {step_param}::text[])
        AS t(run_id, worker_id, epoch, first_seq, n_events, status, result, error, wake_at, release{state_column},
             current_step)
), applied AS (
    UPDATE durable_runs r
    SET status = coalesce(i.status, r.status),
        next_seq = r.next_seq + i.n_events,
        updated_at = now(),
        blocked = NULL,
        result = coalesce(i.result, r.result),
        error = coalesce(i.error, r.error),
        finished_at = CASE WHEN i.status IN {FINISHED} THEN now() ELSE r.finished_at END,
        wake_at = CASE WHEN i.status IN {FINISHED} THEN NULL ELSE i.wake_at END,
        lease_owner = {unleased} ELSE r.lease_owner END,
        lease_expires_at = {unleased} ELSE r.lease_expires_at END,
        current_step = CASE WHEN i.status IN {FINISHED} THEN NULL
                            ELSE nullif(coalesce(i.current_step, r.current_step), '') END{state_set}
    FROM item i
    WHERE r.id = ANY($1::text[])  -- repeated for the planner: an index scan of the keys, whatever the statistics
      AND r.id = i.run_id AND r.lease_owner = i.worker_id AND r.lease_epoch = i.epoch
      AND r.lease_expires_at > now() AND r.next_seq = i.first_seq
    RETURNING {returning}
), inserted AS (
    INSERT INTO durable_events (run_id, seq, at, type, data)
    SELECT e.run_id, e.seq, e.at, e.type, e.data
    FROM unnest($11::text[], $12::integer[], $13::timestamptz[], $14::text[], $15::bytea[])
        AS e(run_id, seq, at, type, data)
    WHERE e.run_id IN (SELECT id FROM applied)
){_FULL if full else _LEAN}"""


_LEAN = """
SELECT id FROM applied"""

_FULL = """, consumed AS (
    UPDATE durable_inbox m SET consumed_at = now()
    FROM unnest($17::text[], $18::bigint[]) AS c(run_id, id)
    WHERE m.id = c.id AND m.run_id = c.run_id AND m.consumed_at IS NULL AND c.run_id IN (SELECT id FROM applied)
), opened AS (
    INSERT INTO durable_inputs (run_id, key, prompt, spec, created_at, workflow, timeout_at)
    SELECT o.run_id, o.key, o.prompt, o.spec, o.created_at, o.workflow, o.timeout_at
    FROM unnest($19::text[], $20::text[], $21::text[], $22::bytea[], $23::timestamptz[], $24::text[],
                $25::timestamptz[]) AS o(run_id, key, prompt, spec, created_at, workflow, timeout_at)
    WHERE o.run_id IN (SELECT id FROM applied)
    ON CONFLICT (run_id, key) DO UPDATE  -- asked again (a loop): a new question, open to a new answer
    SET prompt = excluded.prompt, spec = excluded.spec, created_at = excluded.created_at,
        workflow = excluded.workflow, timeout_at = excluded.timeout_at, provided_at = NULL
), closed AS (
    DELETE FROM durable_inputs d
    USING unnest($26::text[], $27::text[]) AS c(run_id, key)
    WHERE d.run_id = c.run_id AND d.key = c.key AND d.provided_at IS NULL AND c.run_id IN (SELECT id FROM applied)
), logged AS (
    -- the captured log lines of the items that pass their fence: a step's lines commit with its outcome
    INSERT INTO durable_logs (run_id, at, level, level_name, logger, stream, step, command_id, attempt, message,
                              exc, extra, trace_id, span_id)
    SELECT l.run_id, l.at, l.level, l.level_name, l.logger, l.stream, l.step, l.command_id, l.attempt, l.message,
           l.exc, l.extra, l.trace_id, l.span_id
    FROM unnest($28::text[], $29::timestamptz[], $30::integer[], $31::text[], $32::text[], $33::text[],
                $34::text[], $35::integer[], $36::integer[], $37::text[], $38::text[], $39::bytea[],
                $40::text[], $41::text[])
        WITH ORDINALITY AS l(run_id, at, level, level_name, logger, stream, step, command_id, attempt, message, exc,
                             extra, trace_id, span_id, ord)
    WHERE l.run_id IN (SELECT id FROM applied)
    ORDER BY l.ord  -- ids in the order the lines were written
), parents AS (
    -- Lock the parents of finishing runs (in id order: two batches never take them in opposite orders) before
    -- the trigger durable_runs_finished messages them. Holding the lock until commit is what makes a parent's
    -- concurrent release see the message (durable_runs_released) or this statement see the release.
    SELECT p.id, p.finished_at FROM durable_runs p
    WHERE p.id IN (SELECT parent_id FROM applied WHERE finished_at IS NOT NULL)
    ORDER BY p.id
    FOR UPDATE
)
SELECT a.id,
       CASE WHEN a.finished_at IS NOT NULL
                 AND (EXISTS (SELECT FROM parents p WHERE p.id = a.parent_id AND p.finished_at IS NULL)
                      -- a parent in this batch is not in "parents" (rows this statement updates are skipped)
                      OR EXISTS (SELECT FROM applied b WHERE b.id = a.parent_id AND b.finished_at IS NULL))
            THEN a.parent_id END
FROM applied a"""

# Apply a batch of appends (distinct run ids) in one statement, so one round trip and one commit. Each item is
# fenced on its lease and next_seq; an item whose fence fails matches no row, inserts no event, and does not
# disturb the others. Returns the ids of the runs updated. Arrays: $1-$10 one element per item, $11-$15 one per
# event, $16 one per item (current_step). The row update mirrors MemoryStore._apply; a release of a run with
# unconsumed messages is made ready by the trigger durable_runs_released (0002_waiting.sql). For batches where no
# item finishes or changes the side tables: the common step append.
APPEND = _append(full=False)

# APPEND for a batch in which some item finishes, changes the side tables (MemoryStore._apply_side_tables) or
# carries log lines:
# $16 the items' new states; $17-$18 the inbox messages consumed (run id, message id); $19-$25 the inputs opened
# (run id, key, prompt, spec, created_at, workflow, timeout_at); $26-$27 the inputs closed (run id, key);
# $28-$41 the captured log lines (history._pg_logs.log_args: one element per line); $42 the items' current steps.
# Only items that pass their fence change anything. What finishing does (close inputs, message the parent) is
# done by the trigger durable_runs_finished. Returns each updated run's id with the id of the parent that gets a
# "child" message (NULL: none), for the local hub.
APPEND_FULL = _append(full=True)

# Why appends were refused: each run's lease and next_seq as they are now.
FENCES = """
SELECT id, lease_owner, lease_epoch, lease_expires_at > now() AS live, next_seq
FROM durable_runs WHERE id = ANY($1::text[])"""

# Extend the leases worker $1 still holds (run ids $2 with epochs $3) by $4 seconds; return them with any
# pending cancellation and whether they have unconsumed inbox messages.
HEARTBEAT = """
WITH held AS (
    SELECT * FROM unnest($2::text[], $3::bigint[]) AS t(run_id, epoch)
)
UPDATE durable_runs r
SET lease_expires_at = now() + make_interval(secs => $4)
FROM held h
WHERE r.id = ANY($2::text[])  -- repeated for the planner: an index scan of the keys, whatever the statistics
  AND r.id = h.run_id AND r.lease_owner = $1 AND r.lease_epoch = h.epoch AND r.lease_expires_at > now()
RETURNING r.id, r.cancel_reason,
          EXISTS (SELECT FROM durable_inbox m WHERE m.run_id = r.id AND m.consumed_at IS NULL)"""

# Record a cancellation request on an unfinished run and make it ready now; no row if missing or finished.
REQUEST_CANCEL = f"""
WITH cancelled AS (
    UPDATE durable_runs SET cancel_reason = $2, wake_at = NULL, updated_at = now()
    WHERE id = $1 AND status NOT IN {FINISHED}
    RETURNING {RUN_COLUMNS}
)
-- durable_message wakes the worker that drives the run now, in any process, so it cancels at once (not at its
-- next heartbeat); an unleased run is made ready and claimed through durable_work as usual.
SELECT {RUN_COLUMNS} FROM cancelled, LATERAL (SELECT pg_notify('durable_message', cancelled.id)) AS woken"""

# Flag a diverged run with its report and release it until $5, if worker $2 still holds lease epoch $3.
# Set the current_step of a run this worker holds (a long step between appends). An unindexed column only, so
# the update stays HOT; updated_at is left alone.
NOTE_CURRENT_STEP = f"""
UPDATE durable_runs SET current_step = $4
WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3 AND lease_expires_at > now() AND status NOT IN {FINISHED}"""

MARK_BLOCKED = """
UPDATE durable_runs
SET blocked = $4, wake_at = $5, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3 AND lease_expires_at > now()
RETURNING id"""

# The earliest wake time among unleased, unfinished runs of these workflows (in the order of the claim index,
# where a run with a wake time is due at it).
NEXT_WAKE_AT = f"""
SELECT least(
    (SELECT wake_at FROM durable_runs
     WHERE lease_owner IS NULL AND status NOT IN {FINISHED} AND wake_at IS NOT NULL AND workflow = ANY($1::text[])
     ORDER BY coalesce(wake_at, created_at) LIMIT 1),
    -- a lease that expires makes its run claimable: a crashed worker's runs are taken over then, not a poll later
    (SELECT lease_expires_at FROM durable_runs
     WHERE lease_owner IS NOT NULL AND status NOT IN {FINISHED} AND workflow = ANY($1::text[])
     ORDER BY lease_expires_at LIMIT 1))"""

# --- waiting on the world (inbox, inputs, children) ----------------------------------------------------------

_MESSAGE = "id, run_id, kind, name, payload, sent_at"

# Put a message in unfinished run $1's inbox and make the run ready now if it is unleased; no row if the run is
# missing or finished. The run's row is locked first, so a run finishing meanwhile is seen finished.
SEND_MESSAGE = f"""
WITH run AS (
    SELECT id, lease_owner IS NULL AS unleased FROM durable_runs
    WHERE id = $1 AND status NOT IN {FINISHED}
    FOR UPDATE
), message AS (
    INSERT INTO durable_inbox (run_id, kind, name, payload, sent_at)
    SELECT id, $2, $3, $4, now() FROM run
    RETURNING {_MESSAGE}
), woken AS (
    UPDATE durable_runs r SET wake_at = NULL, updated_at = now()
    FROM run WHERE r.id = run.id AND run.unleased
)
SELECT {_MESSAGE} FROM message"""

# A run's unconsumed messages, oldest first.
READ_INBOX = f"SELECT {_MESSAGE} FROM durable_inbox WHERE run_id = $1 AND consumed_at IS NULL ORDER BY id"

# Lock run $1's row for provide_input (in its transaction) and return its status (no row: no such run). Every
# change to a run's inputs locks the run's row first (appends update it, provide_input locks it here), so two
# answers are serialized and the statements after this one see the inputs as they stay until commit.
LOCK_RUN = "SELECT status FROM durable_runs WHERE id = $1 FOR UPDATE"

# Whether run $1's input $2 was provided already (no row: the run does not wait for it).
INPUT_PROVIDED = "SELECT provided_at IS NOT NULL FROM durable_inputs WHERE run_id = $1 AND key = $2"

# Mark run $1's open input $2 provided, put the answer $3 in the run's inbox, and make the run ready now if it
# is unleased (its row is locked by LOCK_RUN). No row if the input is not open.
PROVIDE_INPUT = f"""
WITH provided AS (
    UPDATE durable_inputs SET provided_at = now()
    WHERE run_id = $1 AND key = $2 AND provided_at IS NULL
    RETURNING run_id, key
), message AS (
    INSERT INTO durable_inbox (run_id, kind, name, payload, sent_at)
    SELECT run_id, 'input', key, $3, now() FROM provided
    RETURNING {_MESSAGE}
), woken AS (
    UPDATE durable_runs SET wake_at = NULL, updated_at = now()
    WHERE id = $1 AND lease_owner IS NULL AND EXISTS (SELECT FROM provided)
)
SELECT {_MESSAGE} FROM message"""


@cache
def list_pending_inputs(by_run: bool, by_workflow: bool) -> str:
    """Open inputs (not provided; closed ones and a finished run's are deleted), oldest first; ``$1`` is the
    row limit. One statement per combination of filters, like ``list_runs``."""
    where, args = ["provided_at IS NULL"], 1
    if by_run:
        args += 1
        where.append(f"run_id = ${args}")
    if by_workflow:
        args += 1
        where.append(f"workflow = ${args}")
    return (
        f"SELECT run_id, key, prompt, spec, created_at, workflow, timeout_at FROM durable_inputs "
        f"WHERE {' AND '.join(where)} ORDER BY created_at, run_id, key LIMIT $1"
    )


# The runs started by run $1, oldest first.
LIST_CHILDREN = f"SELECT {RUN_COLUMNS} FROM durable_runs WHERE parent_id = $1 ORDER BY created_at, id"

# --- workers -------------------------------------------------------------------------------------------------

# Replace the set of workflow names worker $1 serves with $2.
REGISTER_WORKFLOWS = """
WITH dropped AS (
    DELETE FROM durable_workers WHERE worker_id = $1 AND workflow <> ALL($2::text[])
)
INSERT INTO durable_workers (worker_id, workflow, registered_at)
SELECT DISTINCT $1, name, now() FROM unnest($2::text[]) AS name
ON CONFLICT (worker_id, workflow) DO UPDATE SET registered_at = excluded.registered_at"""

# Every workflow name any worker registered.
KNOWN_WORKFLOWS = "SELECT DISTINCT workflow FROM durable_workers"

# --- queues --------------------------------------------------------------------------------------------------

_QUEUE = "name, paused, global_concurrency, rate_limit, rate_period"

# Change queue $1's settings, creating its row: $2 paused (NULL: unchanged); $3, $5, $7 whether to set the global
# concurrency $4, the rate limit $6 and its period $8 (NULL: no limit); return the settings. The trigger
# durable_queues_changed wakes every worker when the queue is left unpaused.
CONFIGURE_QUEUE = f"""
INSERT INTO durable_queues AS q (name, paused, global_concurrency, rate_limit, rate_period, updated_at)
VALUES ($1, coalesce($2, false), CASE WHEN $3 THEN $4::integer END, CASE WHEN $5 THEN $6::integer END,
        CASE WHEN $7 THEN $8::double precision END, now())
ON CONFLICT (name) DO UPDATE
SET paused = coalesce($2, q.paused),
    global_concurrency = CASE WHEN $3 THEN $4 ELSE q.global_concurrency END,
    rate_limit = CASE WHEN $5 THEN $6 ELSE q.rate_limit END,
    rate_period = CASE WHEN $7 THEN $8 ELSE q.rate_period END,
    updated_at = now()
RETURNING {_QUEUE}"""

# Every queue that has settings or runs (finished ones too), by name in code point order (Python's, as
# MemoryStore sorts), with the defaults for queues never configured. The names of the runs' queues are read by
# a loose index scan of durable_runs_queue_started: one index probe per queue, however many runs.
LIST_QUEUES = """
WITH RECURSIVE used AS (
    (SELECT queue FROM durable_runs ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT r.queue FROM durable_runs r WHERE r.queue > u.queue ORDER BY r.queue LIMIT 1)
    FROM used u WHERE u.queue IS NOT NULL
), names AS (
    SELECT queue AS name FROM used WHERE queue IS NOT NULL
    UNION
    SELECT name FROM durable_queues
)
SELECT n.name, coalesce(q.paused, false), q.global_concurrency, q.rate_limit, q.rate_period
FROM names n LEFT JOIN durable_queues q ON q.name = n.name
ORDER BY (n.name COLLATE "C")"""

# Queue $1 at this moment: its unfinished runs counted by state as MemoryStore.queue_stats does (running: a
# live lease; otherwise scheduled or waiting: a wake time to come, never started or started; otherwise
# pending), the age in seconds of the oldest pending run (by due time), and its settings (defaults when none).
# One statement over the queue's range of durable_runs_queue.
QUEUE_STATS = f"""
WITH runs AS (
    SELECT coalesce(lease_owner IS NOT NULL AND lease_expires_at > now(), false) AS live,
           coalesce(wake_at > now(), false) AS later, started_at IS NULL AS fresh,
           coalesce(wake_at, created_at) AS due
    FROM durable_runs
    WHERE queue = $1 AND status NOT IN {FINISHED}
), counts AS (
    SELECT count(*) FILTER (WHERE live) AS running,
           count(*) FILTER (WHERE NOT live AND NOT later) AS pending,
           count(*) FILTER (WHERE NOT live AND later AND fresh) AS scheduled,
           count(*) FILTER (WHERE NOT live AND later AND NOT fresh) AS waiting,
           min(due) FILTER (WHERE NOT live AND NOT later) AS oldest
    FROM runs
)
SELECT c.running, c.pending, c.scheduled, c.waiting,
       CASE WHEN c.oldest IS NOT NULL THEN greatest(0, extract(epoch FROM now() - c.oldest))::double precision END,
       coalesce(q.paused, false), q.global_concurrency, q.rate_limit, q.rate_period
FROM counts c LEFT JOIN durable_queues q ON q.name = $1"""

# --- notifications -------------------------------------------------------------------------------------------

WORK_CHANNEL = "durable_work"
"""NOTIFY channel: runs may be ready (payload: a workflow name, or a queue's name when it is resumed or its
limits change). Sent by the triggers of 0001_init.sql and 0003_queues.sql."""

FINISHED_CHANNEL = "durable_finished"
"""NOTIFY channel: a run finished (payload: its id). Sent by the triggers of 0001_init.sql."""

MESSAGE_CHANNEL = "durable_message"
"""NOTIFY channel: a run got an inbox message (payload: its id). Sent by the trigger of 0002_waiting.sql."""

# --- live events (_pg_live) -----------------------------------------------------------------------------------

EVENTS_CHANNEL = "durable_events"
"""NOTIFY channel: a statement appended events to runs (payload: lines ``"run_id first_seq last_seq"``, one per
run). Sent by the trigger of 0008_live.sql."""

LIVE_CHANNEL = "durable_live"
"""NOTIFY channel: step attempts started (payload: lines, each a ``StepNotice`` as a JSON array). Sent by
``NOTIFY_LIVE``."""

WATCH_CHANNEL = "durable_watch"
"""NOTIFY channel: a process watches step starts (empty payload). Sent by ``ANNOUNCE_WATCH``."""

# Send step-start notices $1 (payloads), one NOTIFY each. Committed without waiting for the WAL flush: a notice is
# not data, and NOTIFY would otherwise make this read-only statement wait for an fsync.
NOTIFY_LIVE = f"""
WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true))
SELECT pg_notify('{LIVE_CHANNEL}', x) FROM unnest($1::text[]) AS x, async_commit"""

# Tell every worker that this process watches step starts (they send notices for WATCH_TTL seconds).
ANNOUNCE_WATCH = f"SELECT pg_notify('{WATCH_CHANNEL}', '')"

# The advisory lock a subscribing process holds (or waits for) in exclusive mode while it watches, on a connection
# of its own: the trigger durable_events_appended (0008_live.sql) notifies only while its shared "try" fails.
# ASCII "durlive" read as a number; the same literal is in the migration.
WATCH_LOCK_KEY = 0x6475726C697665

# Hold WATCH_LOCK_KEY for the session (waits while appends hold it shared, or another subscriber holds it).
TAKE_WATCH_LOCK = "SELECT pg_advisory_lock($1)"

# Whether some session holds WATCH_LOCK_KEY $1 (exclusive, granted) in this database: every append notifies then.
WATCH_LOCK_HELD = """
SELECT EXISTS (
    SELECT FROM pg_locks
    WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1
      AND mode = 'ExclusiveLock' AND granted
)"""
