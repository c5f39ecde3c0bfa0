"""``ctx.logger``: the workflow's own logger, silent while the code replays recorded history.

``ctx.logger`` is the standard ``logging.Logger`` named ``durable.workflow.<workflow name>``, with one filter.
A record logged from workflow code is

* dropped entirely while the instance replays (``instance.replaying``): it was printed and stored when the code
  first ran, and must not be either again (in a worker taking a run over, or in ``durable.replay``);
* otherwise handed to the instance (which keeps it as a ``LogLine`` for the driver's next append: this package
  does no I/O) and passed on to the application's handlers as usual.

The same logger used outside workflow code (no instance in the context) behaves as any logger.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Protocol


class LogSink(Protocol):
    """What the filter needs of a workflow instance."""

    @property
    def replaying(self) -> bool:
        """True while the code re-executes recorded history."""

    def capture_log(self, record: logging.LogRecord) -> None:
        """Keep ``record`` for the next append."""


SINK: contextvars.ContextVar[LogSink | None] = contextvars.ContextVar("durable_workflow_log_sink", default=None)
"""The instance whose workflow code runs in this context (set in the instance's own context)."""

LOGGER_PREFIX = "durable.workflow."


class _WorkflowFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        sink = SINK.get()
        if sink is None:
            return True
        if sink.replaying:
            return False
        sink.capture_log(record)
        return True


_FILTER = _WorkflowFilter()


def workflow_logger(workflow_name: str) -> logging.Logger:
    """The logger of workflow ``workflow_name`` (``ctx.logger``), with the replay filter on it."""
    logger = logging.getLogger(LOGGER_PREFIX + workflow_name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
