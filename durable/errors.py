"""Every error Durable raises, in one tree (all re-exported from ``durable``).

::

    DurableError
    ├── PayloadError (also TypeError)          a value cannot be stored as JSON (names the type and where)
    │   └── PayloadTooLarge                    a value is over the payload size limit
    ├── StoreError
    │   ├── DatabaseUnavailable                the database cannot be reached (names the URL, how to start one)
    │   ├── SchemaError                        the schema is missing, newer than this code, or foreign
    │   └── LeaseLost                          this worker's lease on a run expired; another worker has it
    │       └── HistoryConflict                another writer extended the history first
    ├── RunNotFound (also LookupError)         no run with that id
    ├── RunAlreadyFinished                     an event or input was sent to a finished run
    ├── InputNotPending (also LookupError)     the run does not wait for that input
    │   └── InputAlreadyProvided               the input was answered already; a second answer is refused
    ├── InputValidationError (also ValueError) an answer does not fit the input's schema (per field)
    ├── UnknownWorkflowError (also LookupError) no workflow registered under that name
    ├── NonDeterminismError                    replayed code issued other commands than the history records
    ├── HistoryFileError                       a history file is cut short, edited, or from a newer Durable
    ├── WorkflowCodeError                      workflow code did something replay cannot reproduce
    ├── StepFailed                             raised in a workflow when a step failed for good
    ├── WorkflowFailed                         raised by ``run.result()`` when the run failed
    ├── WorkflowCancelled                      raised by ``run.result()`` when the run was cancelled
    ├── WorkflowTimeout                        the run outlived ``@durable.workflow(timeout=...)``
    ├── WaitTimeout (also TimeoutError)        ``ctx.wait_for_event``/``wait_for_input`` ran out of time
    ├── ChildWorkflowFailed                    a child run awaited with ``ctx.call_workflow`` failed
    └── ResultTimeout (also TimeoutError)      ``run.result(timeout=...)`` ran out of time

    NonRetryableError                          raise it (or a subclass) in a step to stop its retries
    Cancelled (= asyncio.CancelledError)       raised in workflow code when its run is cancelled
"""

from __future__ import annotations

import asyncio

from history import (
    DatabaseUnavailable,
    DurableError,
    ErrorInfo,
    HistoryConflict,
    InputAlreadyProvided,
    InputNotPending,
    LeaseLost,
    PayloadError,
    PayloadTooLarge,
    RunAlreadyFinished,
    RunNotFound,
    SchemaError,
    StoreError,
)
from replay import ChildWorkflowFailed, NonDeterminismError, WaitTimeout, WorkflowCodeError

from ._history_file import HistoryFileError

__all__ = [
    "Cancelled",
    "ChildWorkflowFailed",
    "DatabaseUnavailable",
    "DurableError",
    "HistoryConflict",
    "HistoryFileError",
    "InputAlreadyProvided",
    "InputNotPending",
    "InputValidationError",
    "LeaseLost",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadError",
    "PayloadTooLarge",
    "ResultTimeout",
    "RunAlreadyFinished",
    "RunNotFound",
    "SchemaError",
    "StepFailed",
    "StoreError",
    "UnknownWorkflowError",
    "WaitTimeout",
    "WorkflowCancelled",
    "WorkflowCodeError",
    "WorkflowFailed",
    "WorkflowTimeout",
]


class NonRetryableError(Exception):
    """Raise this (or a subclass) from a step to fail it at once, without further attempts."""


class UnknownWorkflowError(DurableError, LookupError):
    """No workflow is registered under the given name."""


class _RecordedError(DurableError):
    """An error recorded in a history: the original exception's type name, message and traceback."""

    def __init__(self, message: str, error: ErrorInfo) -> None:
        super().__init__(message)
        self.error_type = error.type
        self.error_message = error.message
        self.remote_traceback = error.traceback

    def __reduce__(self) -> tuple[object, ...]:  # pragma: no cover - keeps the exception copyable
        return (Exception, (str(self),))


class StepFailed(_RecordedError):
    """A step failed for good (retries exhausted, or ``NonRetryableError``).

    Raised at the ``await`` of the step inside the workflow, identically on every replay. The original
    exception object cannot be rebuilt from the history, so its type is in ``error_type`` (e.g.
    ``"myapp.PaymentDeclined"``), its text in ``error_message``, its traceback in ``remote_traceback``.
    """

    def __init__(self, step: str, attempts: int, error: ErrorInfo) -> None:
        super().__init__(
            f"step {step!r} failed after {attempts} attempt{'s' if attempts != 1 else ''}: "
            f"{error.type}: {error.message}",
            error,
        )
        self.step = step
        self.attempts = attempts


class WorkflowFailed(_RecordedError):
    """The run failed: its workflow function raised (``error_type``/``error_message``/``remote_traceback``)."""

    def __init__(self, run_id: str, error: ErrorInfo) -> None:
        super().__init__(f"run {run_id!r} failed: {error.type}: {error.message}", error)
        self.run_id = run_id


class WorkflowCancelled(DurableError):
    """The run was cancelled; ``reason`` says why."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"run {run_id!r} was cancelled: {reason}")
        self.run_id = run_id
        self.reason = reason


class ResultTimeout(DurableError, TimeoutError):
    """``run.result(timeout=...)`` returned before the run finished (the run goes on)."""


Cancelled = asyncio.CancelledError
"""Raised at the workflow's current ``await`` when its run is cancelled (``engine.cancel``) or times out. Catch it
to clean up (steps still run), then re-raise or return; the run ends ``cancelled`` either way."""


class WorkflowTimeout(DurableError):
    """The run was stopped because it outlived its ``@durable.workflow(timeout=...)``."""


class InputValidationError(DurableError, ValueError):
    """An answer to ``ctx.wait_for_input`` does not fit its schema; ``errors`` maps each field (``""`` for the
    answer as a whole) to what is wrong. The input stays pending."""

    def __init__(self, run_id: str, key: str, errors: dict[str, str]) -> None:
        self.run_id = run_id
        self.key = key
        self.errors = errors
        lines = [f"  {field or 'value'}: {problem}" for field, problem in errors.items()]
        super().__init__(f"input {key!r} of run {run_id!r} was not accepted:\n" + "\n".join(lines))
