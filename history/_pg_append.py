"""The arrays of PostgreSQL's append statements (``APPEND``/``APPEND_FULL`` in ``_pg_queries``), built from a batch
of ``Append`` items, and the error that explains an item the statement refused. Pure functions: the store
(``_postgres``) runs the statement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._codec import encode_event, event_type
from ._records import FINISHED_STATUSES, Append
from ._sql import encode_error, history_conflict, lease_lost, side_inputs


def append_args(items: Sequence[Append]) -> list[list[Any]]:
    """The fifteen parallel arrays of ``APPEND``: ten with one element per item, five with one per event."""
    columns: list[list[Any]] = [[] for _ in range(15)]
    (run_ids, workers, epochs, firsts, counts, statuses, results, errors, wakes, releases,
     e_runs, e_seqs, e_ats, e_types, e_datas) = columns  # fmt: skip
    for item in items:
        run_ids.append(item.run_id)
        workers.append(item.worker_id)
        epochs.append(item.epoch)
        firsts.append(item.first_seq)
        counts.append(len(item.events))
        statuses.append(item.status)
        results.append(item.result)
        errors.append(encode_error(item.error))
        wakes.append(item.wake_at)
        releases.append(item.release)
        for offset, event in enumerate(item.events):
            e_runs.append(item.run_id)
            e_seqs.append(item.first_seq + offset)
            e_ats.append(item.at)
            e_types.append(event_type(event))
            e_datas.append(encode_event(event))
    return columns


def is_full(item: Append) -> bool:
    """Whether ``item`` needs ``APPEND_FULL``: it finishes its run, changes more than the run's row and events, or
    carries log lines (so a step that logs nothing keeps the lean statement)."""
    return (
        item.status in FINISHED_STATUSES
        or item.state is not None
        or bool(item.consumed or item.open_inputs or item.close_inputs or item.logs)
    )


def full_args(items: Sequence[Append]) -> list[list[Any]]:
    """The twelve arrays ``APPEND_FULL`` adds: states (one per item), consumed messages, opened and closed inputs."""
    columns: list[list[Any]] = [[] for _ in range(12)]
    (states, c_runs, c_ids, o_runs, o_keys, o_prompts, o_specs, o_created, o_workflows, o_timeouts,
     x_runs, x_keys) = columns  # fmt: skip
    for item in items:
        states.append(item.state)
        c_runs += [item.run_id] * len(item.consumed)
        c_ids += item.consumed
        opened, closed = side_inputs(item)
        for pending in opened:
            o_runs.append(item.run_id)
            o_keys.append(pending.key)
            o_prompts.append(pending.prompt)
            o_specs.append(pending.spec)
            o_created.append(pending.created_at)
            o_workflows.append(pending.workflow)
            o_timeouts.append(pending.timeout_at)
        x_runs += [item.run_id] * len(closed)
        x_keys += closed
    return columns


def refusal(item: Append, fence: Any) -> Exception:
    """Why ``item`` was refused, from its run's lease and next_seq read just after: lease first, like memory."""
    if fence is None:
        return lease_lost(item.run_id)
    _id, owner, epoch, live, next_seq = fence
    if owner != item.worker_id or epoch != item.epoch or not live:
        return lease_lost(item.run_id)
    if next_seq != item.first_seq:
        return history_conflict(item.run_id, item.first_seq, next_seq)
    return lease_lost(item.run_id)  # the fence held again by the time we looked; report it as lost
