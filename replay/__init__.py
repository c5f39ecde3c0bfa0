"""Durable's deterministic replay: the workflow event loop, the command/event matcher and divergence reports.

Runs with a history and the user's code alone: no store, no worker, no network. Imports only ``history``.
"""

from . import _input_spec as input_spec
from ._commands import StepDefinition, StepRequest, TimerRequest
from ._context import WorkflowContext
from ._errors import ChildWorkflowFailed, NonDeterminismError, WaitTimeout, WorkflowCodeError
from ._guards import unsafe_nondeterminism
from ._instance import (
    Outcome,
    WorkflowCallable,
    WorkflowInstance,
    canonical_error_type,
    current_instance,
    error_info,
    recorded_type_name,
)
from ._loop import DeterministicLoop
from ._world import ChildHandle, ChildRequest

__all__ = [
    "ChildHandle",
    "ChildRequest",
    "ChildWorkflowFailed",
    "DeterministicLoop",
    "NonDeterminismError",
    "Outcome",
    "StepDefinition",
    "StepRequest",
    "TimerRequest",
    "WaitTimeout",
    "WorkflowCallable",
    "WorkflowCodeError",
    "WorkflowContext",
    "WorkflowInstance",
    "canonical_error_type",
    "current_instance",
    "error_info",
    "input_spec",
    "recorded_type_name",
    "unsafe_nondeterminism",
]
