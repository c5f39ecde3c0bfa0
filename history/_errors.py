"""Errors raised by the history layer. ``durable.errors`` re-exports them inside its own tree."""

from __future__ import annotations


class DurableError(Exception):
    """Base of every error Durable raises."""


class PayloadError(DurableError, TypeError):
    """A value cannot be encoded for storage (wrong type)."""


class PayloadTooLarge(PayloadError):
    """A value is larger, encoded, than the payload limit."""


class StoreError(DurableError):
    """The store failed to do what was asked."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached or opened."""


class SchemaError(StoreError):
    """The database schema is missing, newer than this code, or was not created by Durable."""


class LeaseLost(StoreError):
    """This worker no longer holds the run's lease (it expired and another worker took the run)."""


class HistoryConflict(LeaseLost):
    """An append did not start at the run's next sequence number: another writer extended the history."""


class RunNotFound(DurableError, LookupError):
    """No run has the given id."""


class RunAlreadyFinished(DurableError):
    """The run has finished; it takes no more events or input."""


class InputNotPending(DurableError, LookupError):
    """The run does not wait for an input with that key (never asked, timed out, or already answered)."""


class InputAlreadyProvided(InputNotPending):
    """The input was provided already; a second answer is refused, not applied."""
