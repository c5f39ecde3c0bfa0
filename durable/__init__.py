"""Durable: durable workflows as plain ``async def`` Python, replayed from an append-only event history.

Everything a user needs is importable from here.
"""

from history import LogLine, PendingInput, QueueConfig, QueueStats
from replay import ChildHandle, WorkflowContext, unsafe_nondeterminism

from . import replay as replay  # the replay tool: durable.replay.replay(workflow, "run.json")
from ._definitions import Step, Workflow, registered_workflows, step, workflow
from ._engine import Engine, RunHandle
from ._execution import Execution, ExecutionPage, StepView
from ._logs import LogLimits
from ._metrics import RunMetrics
from ._queues import Queues
from ._retention import CleanupReport, Retention
from ._retry import Retry
from ._step_context import StepInfo, current_step
from ._subscribe import RunEvent, Subscription
from ._worker import Worker
from .errors import (
    Cancelled,
    ChildWorkflowFailed,
    DatabaseUnavailable,
    DurableError,
    HistoryConflict,
    HistoryFileError,
    InputAlreadyProvided,
    InputNotPending,
    InputValidationError,
    LeaseLost,
    NonDeterminismError,
    NonRetryableError,
    PayloadError,
    PayloadTooLarge,
    ResultTimeout,
    RunAlreadyFinished,
    RunNotFound,
    SchemaError,
    StepFailed,
    StoreError,
    UnknownWorkflowError,
    WaitTimeout,
    WorkflowCancelled,
    WorkflowCodeError,
    WorkflowFailed,
    WorkflowTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "ChildHandle",
    "ChildWorkflowFailed",
    "CleanupReport",
    "DatabaseUnavailable",
    "DurableError",
    "Engine",
    "Execution",
    "ExecutionPage",
    "HistoryConflict",
    "HistoryFileError",
    "InputAlreadyProvided",
    "InputNotPending",
    "InputValidationError",
    "LeaseLost",
    "LogLimits",
    "LogLine",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadError",
    "PayloadTooLarge",
    "PendingInput",
    "QueueConfig",
    "QueueStats",
    "Queues",
    "ResultTimeout",
    "Retention",
    "Retry",
    "RunAlreadyFinished",
    "RunEvent",
    "RunHandle",
    "RunMetrics",
    "RunNotFound",
    "SchemaError",
    "Step",
    "StepFailed",
    "StepInfo",
    "StepView",
    "StoreError",
    "Subscription",
    "UnknownWorkflowError",
    "WaitTimeout",
    "Worker",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowCodeError",
    "WorkflowContext",
    "WorkflowFailed",
    "WorkflowTimeout",
    "__version__",
    "current_step",
    "registered_workflows",
    "step",
    "unsafe_nondeterminism",
    "workflow",
]
