"""Durable: durable workflows as plain ``async def`` Python, replayed from an append-only event history.

Everything a user needs is importable from here.
"""

from replay import WorkflowContext, unsafe_nondeterminism

from . import replay as replay  # the replay tool: durable.replay.replay(workflow, "run.json")
from ._definitions import Step, Workflow, registered_workflows, step, workflow
from ._engine import Engine, RunHandle
from ._execution import Execution, ExecutionPage, StepView
from ._retry import Retry
from ._step_context import StepInfo, current_step
from ._worker import Worker
from .errors import (
    DatabaseUnavailable,
    DurableError,
    HistoryConflict,
    HistoryFileError,
    LeaseLost,
    NonDeterminismError,
    NonRetryableError,
    PayloadError,
    PayloadTooLarge,
    ResultTimeout,
    RunNotFound,
    SchemaError,
    StepFailed,
    StoreError,
    UnknownWorkflowError,
    WorkflowCancelled,
    WorkflowCodeError,
    WorkflowFailed,
)

__version__ = "0.1.0"

__all__ = [
    "DatabaseUnavailable",
    "DurableError",
    "Engine",
    "Execution",
    "ExecutionPage",
    "HistoryConflict",
    "HistoryFileError",
    "LeaseLost",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadError",
    "PayloadTooLarge",
    "ResultTimeout",
    "Retry",
    "RunHandle",
    "RunNotFound",
    "SchemaError",
    "Step",
    "StepFailed",
    "StepInfo",
    "StepView",
    "StoreError",
    "UnknownWorkflowError",
    "Worker",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowCodeError",
    "WorkflowContext",
    "WorkflowFailed",
    "__version__",
    "current_step",
    "registered_workflows",
    "step",
    "unsafe_nondeterminism",
    "workflow",
]
