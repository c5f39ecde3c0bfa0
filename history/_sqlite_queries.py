"""Every SQL statement the SQLite store runs, by name, each with a one-line comment.

Placeholders are positional (``?1``…), the fastest kind for the ``sqlite3`` module, whose statement cache is
keyed by the text. Lists (workflow names, run ids) are passed as one JSON array and read with ``json_each``, so
each statement's text stays constant. Times are integer microseconds since the Unix epoch, UTC.
The schema itself lives in ``migrations/sqlite/*.sql``.
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
"""The columns of ``durable_runs`` in the field order of ``RunRecord`` (checked at import by ``_sqlite``)."""

# --- schema management ---------------------------------------------------------------------------------------

# The applied migration versions, created before the first migration runs.
CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS durable_schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
)"""

# The newest applied version (NULL when none); fails with "no such table" on a database Durable never touched.
SCHEMA_VERSION = "SELECT max(version) FROM durable_schema_version"

# Record one applied migration.
RECORD_VERSION = "INSERT INTO durable_schema_version (version, name, applied_at) VALUES (?1, ?2, ?3)"

# --- runs ----------------------------------------------------------------------------------------------------

# Create a run (?1 id … ?7 wake_at, ?8 now, ?9 continued_from, ?10 dedup_key, ?11 trace_context); no row when
# the id exists already or an unfinished run has the dedup key ("ON CONFLICT DO NOTHING" covers the primary key
# and the unique index durable_runs_dedup): then GET_EXISTING.
CREATE_RUN = f"""
INSERT INTO durable_runs (id, workflow, status, input, created_at, updated_at, next_seq, queue, priority,
                          parent_id, wake_at, continued_from, dedup_key, trace_context)
VALUES (?1, ?2, 'pending', ?3, ?8, ?8, 2, ?4, ?5, ?6, ?7, ?9, ?10, ?11)
ON CONFLICT DO NOTHING
RETURNING {RUN_COLUMNS}"""

# The run with id ?1, else the unfinished run with dedup key ?2 (the id wins when both exist).
GET_EXISTING = f"""
SELECT {RUN_COLUMNS} FROM durable_runs
WHERE id = ?1 OR (dedup_key = ?2 AND status NOT IN {FINISHED})
ORDER BY id = ?1 DESC LIMIT 1"""

# Add one event to a history.
INSERT_EVENT = "INSERT INTO durable_events (run_id, seq, at, type, data) VALUES (?1, ?2, ?3, ?4, ?5)"

# One run's row.
GET_RUN = f"SELECT {RUN_COLUMNS} FROM durable_runs WHERE id = ?1"

# A run's events after a sequence number, in order.
READ_HISTORY = "SELECT seq, at, data FROM durable_events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq"

# The histories of several runs (?1: JSON array of ids), grouped by run and in order.
READ_HISTORIES = """
SELECT run_id, seq, at, data FROM durable_events
WHERE run_id IN (SELECT value FROM json_each(?1)) ORDER BY run_id, seq"""


@cache
def list_runs(by_workflow: bool, by_status: bool, after: bool) -> str:
    """Runs newest first, optionally filtered, after a keyset cursor; ``?1`` is the row limit.

    One statement per combination of filters (eight at most), so that each gets a plan with the right index.
    """
    where, args = [], 1
    if by_workflow:
        args += 1
        where.append(f"workflow = ?{args}")
    if by_status:
        args += 1
        where.append(f"status = ?{args}")
    if after:
        where.append(f"(created_at, id) < (?{args + 1}, ?{args + 2})")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {RUN_COLUMNS} FROM durable_runs {clause} ORDER BY created_at DESC, id DESC LIMIT ?1"


_LIMITED = "(global_concurrency IS NOT NULL OR (rate_limit IS NOT NULL AND rate_period IS NOT NULL))"
"""SQL test of a ``durable_queues`` row: the queue has a limit (a rate limit needs both the count and the period)."""

_CANDIDATE = "id, queue, priority, coalesce(wake_at, created_at) AS sort_at, created_at, started_at IS NULL AS fresh"
"""What ``SqliteStore`` needs of a candidate to choose as ``MemoryStore.claim`` does."""

_UNLEASED = f"lease_owner IS NULL AND status NOT IN {FINISHED} AND coalesce(wake_at, created_at) <= ?2"
_EXPIRED = (
    f"lease_owner IS NOT NULL AND lease_expires_at <= ?2 AND status NOT IN {FINISHED} "
    f"AND (wake_at IS NULL OR wake_at <= ?2)"
)
_IN_ORDER = "ORDER BY priority DESC, coalesce(wake_at, created_at), created_at, id"


@cache
def claim_probe(by_queue: bool) -> str:
    """Whether any run of the workflows in JSON array ``?1`` is ready at time ``?2`` (of queue ``?3`` when
    ``by_queue``) in a queue not paused: read without the write lock, so that an idle worker's poll never blocks
    another process's writes. No ORDER BY: each branch stops at its first row."""
    where = (
        "AND +workflow IN (SELECT value FROM json_each(?1)) "
        "AND queue NOT IN (SELECT name FROM durable_queues WHERE paused)"
    )
    if by_queue:
        where += " AND queue = ?3"
    unleased = " AND lease_expires_at IS NULL" if by_queue else ""
    return f"""
SELECT 1 FROM (SELECT id FROM durable_runs WHERE {_UNLEASED}{unleased} {where} LIMIT 1)
UNION ALL
SELECT 1 FROM (SELECT id FROM durable_runs WHERE {_EXPIRED} {where} LIMIT 1)"""


@cache
def claim_candidates(by_queue: bool, exclude: bool) -> str:
    """Up to ``?3`` ready runs of the workflows in JSON array ``?1`` at time ``?2`` (of queue ``?4`` when
    ``by_queue``), in claim order; with ``exclude``, none of the queues in JSON array ``?5`` (``?4`` when not
    ``by_queue``): the paused and the limited ones. Without it the statement is the claim of schema 2, with no
    test per run: the common case, where no queue is paused or limited.

    Two branches, each on its own partial index: unleased runs (the normal case) and expired leases (a worker
    died). The unary "+" in "+workflow" keeps SQLite from preferring the workflow index, which also holds every
    finished run. With ``by_queue`` the unleased branch can read the queue's range of ``durable_runs_queue``
    (the redundant "lease_expires_at IS NULL": a lease's owner and expiry are set and cleared together).
    """
    where = "AND +workflow IN (SELECT value FROM json_each(?1))"
    if by_queue:
        where += " AND queue = ?4"
    if exclude:
        where += f" AND queue NOT IN (SELECT value FROM json_each(?{5 if by_queue else 4}))"
    unleased = " AND lease_expires_at IS NULL" if by_queue else ""
    return f"""
SELECT * FROM (
    SELECT * FROM (
        SELECT {_CANDIDATE} FROM durable_runs
        WHERE {_UNLEASED}{unleased} {where}
        {_IN_ORDER} LIMIT ?3)
    UNION ALL
    SELECT * FROM (
        SELECT {_CANDIDATE} FROM durable_runs
        WHERE {_EXPIRED} {where}
        ORDER BY lease_expires_at LIMIT ?3)
)
ORDER BY priority DESC, sort_at, created_at, id LIMIT ?3"""


# The queues a claim must not take runs from as they come: the paused ones and the limited ones (name, paused,
# global concurrency, rate limit, rate period).
HELD_QUEUES = f"""
SELECT name, paused, global_concurrency, rate_limit, rate_period FROM durable_queues WHERE paused OR {_LIMITED}"""

# Up to ?3 of each kind of ready run of limited queue ?4 (workflows in JSON array ?1, time ?2), in claim order:
# never started, started before and unleased, expired leases. SqliteStore chooses among them within the limits.
QUEUE_CANDIDATES = f"""
SELECT * FROM (
    SELECT {_CANDIDATE} FROM durable_runs
    WHERE queue = ?4 AND lease_expires_at IS NULL AND {_UNLEASED} AND started_at IS NULL
      AND +workflow IN (SELECT value FROM json_each(?1))
    {_IN_ORDER} LIMIT ?3)
UNION ALL
SELECT * FROM (
    SELECT {_CANDIDATE} FROM durable_runs
    WHERE queue = ?4 AND lease_expires_at IS NULL AND {_UNLEASED} AND started_at IS NOT NULL
      AND +workflow IN (SELECT value FROM json_each(?1))
    {_IN_ORDER} LIMIT ?3)
UNION ALL
SELECT * FROM (
    SELECT {_CANDIDATE} FROM durable_runs
    WHERE queue = ?4 AND {_EXPIRED} AND +workflow IN (SELECT value FROM json_each(?1))
    {_IN_ORDER} LIMIT ?3)"""

# How many runs of queue ?1 hold a live lease at time ?2 (for its global concurrency).
QUEUE_LEASES = f"""
SELECT count(*) FROM durable_runs
WHERE queue = ?1 AND lease_expires_at > ?2 AND lease_owner IS NOT NULL AND status NOT IN {FINISHED}"""

# How many runs of queue ?1 started for the first time after ?2 (for its rate limit; finished ones too).
QUEUE_STARTS = "SELECT count(*) FROM durable_runs WHERE queue = ?1 AND started_at > ?2"

# Lease run ?4 to worker ?1 until ?2, at time ?3.
LEASE = f"""
UPDATE durable_runs
SET status = 'running', lease_owner = ?1, lease_epoch = lease_epoch + 1, lease_expires_at = ?2,
    started_at = coalesce(started_at, ?3), updated_at = ?3, wake_at = NULL
WHERE id = ?4
RETURNING {RUN_COLUMNS}"""

# Apply one append's row update if its fence holds: worker ?10 with epoch ?11 holds a live lease at time ?3 and
# the history's next event is ?12. ?6 is "the run finishes", ?8 "the lease is given up", ?13 the new state
# (NULL: unchanged), ?14 the current step (NULL: unchanged, '': cleared). Mirrors MemoryStore._apply.
APPEND_RUN = """
UPDATE durable_runs
SET status = coalesce(?1, status),
    next_seq = next_seq + ?2,
    updated_at = ?3,
    blocked = NULL,
    result = coalesce(?4, result),
    error = coalesce(?5, error),
    finished_at = CASE WHEN ?6 THEN ?3 ELSE finished_at END,
    wake_at = CASE WHEN ?6 THEN NULL ELSE ?7 END,
    lease_owner = CASE WHEN ?8 THEN NULL ELSE lease_owner END,
    lease_expires_at = CASE WHEN ?8 THEN NULL ELSE lease_expires_at END,
    state = coalesce(?13, state),
    current_step = CASE WHEN ?6 THEN NULL ELSE nullif(coalesce(?14, current_step), '') END
WHERE id = ?9 AND lease_owner = ?10 AND lease_epoch = ?11 AND lease_expires_at > ?3 AND next_seq = ?12"""

# Why an append was refused: the run's lease and next_seq.
FENCE = "SELECT lease_owner, lease_epoch, lease_expires_at, next_seq FROM durable_runs WHERE id = ?1"

# Extend run ?2's lease to ?4 if worker ?1 holds it with epoch ?3 and it is live at ?5; returns any cancel request
# and whether the run has unconsumed inbox messages.
HEARTBEAT = """
UPDATE durable_runs SET lease_expires_at = ?4
WHERE id = ?2 AND lease_owner = ?1 AND lease_epoch = ?3 AND lease_expires_at > ?5
RETURNING cancel_reason,
          EXISTS (SELECT 1 FROM durable_inbox m WHERE m.run_id = durable_runs.id AND m.consumed_at IS NULL)"""

# Record a cancellation request on an unfinished run and make it ready now; no row if missing or finished.
REQUEST_CANCEL = f"""
UPDATE durable_runs SET cancel_reason = ?2, wake_at = NULL, updated_at = ?3
WHERE id = ?1 AND status NOT IN {FINISHED}
RETURNING {RUN_COLUMNS}"""

# Flag a diverged run with report ?4 and release it until ?5, if worker ?2 holds lease epoch ?3 live at ?6.
# Set the current_step of a run this worker holds (a long step between appends); updated_at is left alone.
NOTE_CURRENT_STEP = f"""
UPDATE durable_runs SET current_step = ?4
WHERE id = ?1 AND lease_owner = ?2 AND lease_epoch = ?3 AND lease_expires_at > ?5 AND status NOT IN {FINISHED}"""

MARK_BLOCKED = """
UPDATE durable_runs
SET blocked = ?4, wake_at = ?5, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?6
WHERE id = ?1 AND lease_owner = ?2 AND lease_epoch = ?3 AND lease_expires_at > ?6"""

# The earliest wake time among unleased, unfinished runs of the workflows in JSON array ?1 (in the order of the
# claim index, where a run with a wake time is due at it).
NEXT_WAKE_AT = f"""
SELECT min(t) FROM (
    SELECT * FROM (
        SELECT wake_at AS t FROM durable_runs
        WHERE lease_owner IS NULL AND status NOT IN {FINISHED} AND wake_at IS NOT NULL
          AND +workflow IN (SELECT value FROM json_each(?1))
        ORDER BY coalesce(wake_at, created_at) LIMIT 1)
    UNION ALL
    -- a lease that expires makes its run claimable: a crashed worker's runs are taken over then, not a poll later
    SELECT * FROM (
        SELECT lease_expires_at AS t FROM durable_runs
        WHERE lease_owner IS NOT NULL AND status NOT IN {FINISHED}
          AND +workflow IN (SELECT value FROM json_each(?1))
        ORDER BY lease_expires_at LIMIT 1))"""

# --- waiting on the world (inbox, inputs, children) ----------------------------------------------------------

_MESSAGE = "id, run_id, kind, name, payload, sent_at"

# A run's status, to refuse messages and input to a missing or finished run.
RUN_STATUS = "SELECT status FROM durable_runs WHERE id = ?1"

# Put a message (kind ?2, name ?3, payload ?4) in run ?1's inbox at time ?5; returns its id.
PUT_MESSAGE = (
    "INSERT INTO durable_inbox (run_id, kind, name, payload, sent_at) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id"
)

# Make run ?1 ready now (at time ?2) if it is unleased: it has a new message.
WAKE_FOR_MESSAGE = "UPDATE durable_runs SET wake_at = NULL, updated_at = ?2 WHERE id = ?1 AND lease_owner IS NULL"

# Run ?1, just released to sleep, is ready at once if it has unconsumed messages (they came while it was held).
WAKE_IF_MESSAGES = """
UPDATE durable_runs SET wake_at = NULL
WHERE id = ?1 AND EXISTS (SELECT 1 FROM durable_inbox WHERE run_id = ?1 AND consumed_at IS NULL)"""

# A run's unconsumed messages, oldest first.
READ_INBOX = f"SELECT {_MESSAGE} FROM durable_inbox WHERE run_id = ?1 AND consumed_at IS NULL ORDER BY id"

# Mark run ?1's message ?2 consumed at time ?3 (only a message of that run, once).
CONSUME_MESSAGE = "UPDATE durable_inbox SET consumed_at = ?3 WHERE id = ?2 AND run_id = ?1 AND consumed_at IS NULL"

# Run ?1 asks for input ?2 (prompt ?3, spec ?4, asked at ?5, workflow ?6, timeout ?7); asked again: the new
# question, open to a new answer (a workflow asking again in a loop).
OPEN_INPUT = """
INSERT INTO durable_inputs (run_id, key, prompt, spec, created_at, workflow, timeout_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (run_id, key) DO UPDATE
SET prompt = excluded.prompt, spec = excluded.spec, created_at = excluded.created_at, workflow = excluded.workflow,
    timeout_at = excluded.timeout_at, provided_at = NULL"""

# Run ?1 no longer waits for input ?2 (a provided one stays, to refuse a second answer).
CLOSE_INPUT = "DELETE FROM durable_inputs WHERE run_id = ?1 AND key = ?2 AND provided_at IS NULL"

# Run ?1 finished: it waits for no input.
CLOSE_ALL_INPUTS = "DELETE FROM durable_inputs WHERE run_id = ?1"

# Whether run ?1's input ?2 was provided (no row: the run does not wait for it).
INPUT_PROVIDED = "SELECT provided_at IS NOT NULL FROM durable_inputs WHERE run_id = ?1 AND key = ?2"

# Mark run ?1's open input ?2 provided at time ?3.
PROVIDE_INPUT = "UPDATE durable_inputs SET provided_at = ?3 WHERE run_id = ?1 AND key = ?2 AND provided_at IS NULL"


@cache
def list_pending_inputs(by_run: bool, by_workflow: bool) -> str:
    """Open inputs (not provided; closed ones and a finished run's are deleted), oldest first; ``?1`` is the
    row limit. One statement per combination of filters, like ``list_runs``."""
    where, args = ["provided_at IS NULL"], 1
    if by_run:
        args += 1
        where.append(f"run_id = ?{args}")
    if by_workflow:
        args += 1
        where.append(f"workflow = ?{args}")
    return (
        f"SELECT run_id, key, prompt, spec, created_at, workflow, timeout_at FROM durable_inputs "
        f"WHERE {' AND '.join(where)} ORDER BY created_at, run_id, key LIMIT ?1"
    )


# The runs started by run ?1, oldest first.
LIST_CHILDREN = f"SELECT {RUN_COLUMNS} FROM durable_runs WHERE parent_id = ?1 ORDER BY created_at, id"

# --- queues --------------------------------------------------------------------------------------------------

# Change queue ?1's settings at time ?9, creating its row: ?2 paused (NULL: unchanged); ?3, ?5, ?7 whether to set
# the global concurrency ?4, the rate limit ?6 and its period ?8 (NULL: no limit); return the settings.
CONFIGURE_QUEUE = """
INSERT INTO durable_queues (name, paused, global_concurrency, rate_limit, rate_period, updated_at)
VALUES (?1, coalesce(?2, 0), CASE WHEN ?3 THEN ?4 END, CASE WHEN ?5 THEN ?6 END, CASE WHEN ?7 THEN ?8 END, ?9)
ON CONFLICT (name) DO UPDATE
SET paused = coalesce(?2, paused),
    global_concurrency = CASE WHEN ?3 THEN ?4 ELSE global_concurrency END,
    rate_limit = CASE WHEN ?5 THEN ?6 ELSE rate_limit END,
    rate_period = CASE WHEN ?7 THEN ?8 ELSE rate_period END,
    updated_at = ?9
RETURNING name, paused, global_concurrency, rate_limit, rate_period"""

# Every queue that has settings or runs (finished ones too), by name (BINARY: code point order, as Python sorts),
# with the defaults for queues never configured. The runs' queue names are read by a loose index scan of
# durable_runs_queue_started: one index probe per queue, however many runs.
LIST_QUEUES = """
WITH RECURSIVE used(name) AS (
    SELECT min(queue) FROM durable_runs
    UNION ALL
    SELECT (SELECT min(queue) FROM durable_runs WHERE queue > used.name) FROM used WHERE used.name IS NOT NULL
), names(name) AS (
    SELECT name FROM used WHERE name IS NOT NULL
    UNION
    SELECT name FROM durable_queues
)
SELECT n.name, coalesce(q.paused, 0), q.global_concurrency, q.rate_limit, q.rate_period
FROM names n LEFT JOIN durable_queues q ON q.name = n.name
ORDER BY n.name"""

# Queue ?1 at time ?2: its unfinished runs counted by state as MemoryStore.queue_stats does (running: a live
# lease; otherwise scheduled or waiting: a wake time to come, never started or started; otherwise pending), the
# due time of the oldest pending run, and its settings (defaults when none). Reads the queue's range of
# durable_runs_queue.
QUEUE_STATS = f"""
SELECT s.*, coalesce(q.paused, 0), q.global_concurrency, q.rate_limit, q.rate_period
FROM (
    SELECT coalesce(sum(live), 0), coalesce(sum(NOT live AND NOT later), 0),
           coalesce(sum(NOT live AND later AND fresh), 0), coalesce(sum(NOT live AND later AND NOT fresh), 0),
           min(CASE WHEN NOT live AND NOT later THEN due END)
    FROM (
        SELECT coalesce(lease_owner IS NOT NULL AND lease_expires_at > ?2, 0) AS live,
               coalesce(wake_at > ?2, 0) AS later, started_at IS NULL AS fresh, coalesce(wake_at, created_at) AS due
        FROM durable_runs
        WHERE queue = ?1 AND status NOT IN {FINISHED}
    )
) AS s
LEFT JOIN durable_queues q ON q.name = ?1"""

# --- workers -------------------------------------------------------------------------------------------------

# Forget the names worker ?1 registered before (REGISTER_WORKFLOW then adds the current ones).
UNREGISTER_WORKER = "DELETE FROM durable_workers WHERE worker_id = ?1"

# Record that worker ?1 serves workflow ?2 (at time ?3).
REGISTER_WORKFLOW = """
INSERT INTO durable_workers (worker_id, workflow, registered_at) VALUES (?1, ?2, ?3)
ON CONFLICT (worker_id, workflow) DO UPDATE SET registered_at = excluded.registered_at"""

# Every workflow name any worker registered.
KNOWN_WORKFLOWS = "SELECT DISTINCT workflow FROM durable_workers"
