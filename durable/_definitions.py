"""``@durable.workflow`` and ``@durable.step``: definitions, and the registry of workflows by name."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, overload

import msgspec

from replay import WorkflowContext, current_instance

from ._retry import Retry
from ._types import ResultDecoder, convert_arguments
from .errors import UnknownWorkflowError

_REGISTRY: dict[str, Workflow] = {}


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} name must be a non-empty string, got {name!r}")
    return name


class Step:
    """A step: a function whose call inside a workflow is recorded, so it runs (at least) once and its result
    is replayed. Outside a workflow, calling it just calls the function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None,
        retry: Retry | None,
        timeout: timedelta | float | None,
        compensate: Callable[..., Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@durable.step decorates a function, got {fn!r}")
        self.fn = fn
        self.name = _check_name(name or fn.__name__, "step")
        self.retry = retry if retry is not None else Retry()
        if not isinstance(self.retry, Retry):
            raise TypeError(f"step {self.name!r}: retry= takes a durable.Retry, got {retry!r}")
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if seconds is not None and seconds <= 0:
            raise ValueError(f"step {self.name!r}: timeout must be positive, got {timeout!r}")
        self.timeout = seconds
        self.compensate: Step | None = None
        if compensate is not None:
            # A plain function becomes a step of its own, so that its run is recorded and retried too.
            self.compensate = compensate if isinstance(compensate, Step) else Step(
                compensate, name=f"{self.name}.compensate", retry=None, timeout=None
            )
        self.is_async = inspect.iscoroutinefunction(fn)
        self.decode_result = ResultDecoder(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        instance = current_instance()
        if instance is None:
            return self.fn(*args, **kwargs)
        return instance.call_step(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<durable.step {self.name!r}>"


class Workflow:
    """A workflow definition: an ``async def`` taking a ``WorkflowContext`` and its input arguments."""

    def __init__(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], *, name: str | None, timeout: timedelta | float | None = None
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@durable.workflow needs an `async def` function, got {getattr(fn, '__qualname__', fn)!r}"
            )
        self.fn = fn
        self.name = _check_name(name or fn.__name__, "workflow")
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise TypeError(f"workflow {self.name!r} must take the WorkflowContext as its first parameter")
        self._signature = inspect.signature(fn).replace(parameters=params[1:])
        self._param_names = [p.name for p in params[1:]]
        self.decode_result = ResultDecoder(fn)
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if seconds is not None and seconds <= 0:
            raise ValueError(f"workflow {self.name!r}: timeout must be positive, got {timeout!r}")
        self.timeout = seconds
        functools.update_wrapper(self, fn)

    def check_arguments(self, args: tuple[Any, ...]) -> None:
        """Raise a clear ``TypeError`` when ``args`` do not fit the workflow's parameters."""
        try:
            self._signature.bind(*args)
        except TypeError as exc:
            raise TypeError(
                f"workflow {self.name!r} takes {self._signature} (after ctx), but was started with "
                f"{len(args)} argument(s): {exc}"
            ) from None

    def invoke(self, ctx: WorkflowContext, args: Any) -> Coroutine[Any, Any, Any]:
        """Call the function with ``ctx`` and the recorded input (a JSON list of positional arguments)."""
        if not isinstance(args, list):
            args = [args]
        return self._run_with_compensation(ctx, convert_arguments(self.fn, self._param_names, args))

    async def _run_with_compensation(self, ctx: WorkflowContext, args: list[Any]) -> Any:
        try:
            return await self.fn(ctx, *args)
        except (Exception, asyncio.CancelledError):
            # A failed or cancelled run undoes its completed steps (saga); the original error still ends it.
            await ctx.compensate()
            raise

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"workflow {self.name!r} is started through an engine: `await engine.start({self.name}, ...)`"
        )

    def __repr__(self) -> str:
        return f"<durable.workflow {self.name!r}>"


@overload
def step(fn: Callable[..., Any], /) -> Step: ...
@overload
def step(
    *,
    name: str | None = None,
    retry: Retry | None = None,
    timeout: timedelta | float | None = None,
    compensate: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: Retry | None = None,
    timeout: timedelta | float | None = None,
    compensate: Callable[..., Any] | None = None,
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Declare a step. ``async def`` steps run on the worker's loop; plain ``def`` steps in a worker thread.

    Args:
        name: the persisted name (default: the function's ``__name__``). Renaming the function renames the
            step, which in-flight runs would see as a different step: pin ``name=`` before renaming.
        retry: the retry policy (default ``Retry()``: 3 attempts, exponential backoff from 2 s).
        timeout: per-attempt time limit (timedelta or seconds); a timed-out attempt fails with TimeoutError.
        compensate: the step (or function) that undoes this one, called with the same arguments when the
            workflow later fails or is cancelled (saga): compensations run most recent first, each recorded and
            retried. ``ctx.compensate()`` runs them explicitly.
    """
    if fn is not None:
        return Step(fn, name=name, retry=retry, timeout=timeout, compensate=compensate)
    return lambda f: Step(f, name=name, retry=retry, timeout=timeout, compensate=compensate)


@overload
def workflow(fn: Callable[..., Coroutine[Any, Any, Any]], /) -> Workflow: ...
@overload
def workflow(
    *, name: str | None = None, timeout: timedelta | float | None = None
) -> Callable[[Callable[..., Coroutine[Any, Any, Any]]], Workflow]: ...


def workflow(
    fn: Callable[..., Coroutine[Any, Any, Any]] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: timedelta | float | None = None,
) -> Workflow | Callable[[Callable[..., Coroutine[Any, Any, Any]]], Workflow]:
    """Declare a workflow and register it under ``name`` (default: the function's ``__name__``).

    ``timeout`` bounds the whole run, durably: when it is exceeded the workflow sees ``durable.Cancelled`` at its
    current await (compensations run) and the run fails with ``durable.WorkflowTimeout``.
    """

    def register(f: Callable[..., Coroutine[Any, Any, Any]]) -> Workflow:
        definition = Workflow(f, name=name, timeout=timeout)
        existing = _REGISTRY.get(definition.name)
        if existing is not None and _origin(existing.fn) != _origin(f):
            raise ValueError(
                f"two workflows are named {definition.name!r}: {_origin(existing.fn)} and {_origin(f)}; "
                f"give one of them another name with @durable.workflow(name=...)"
            )
        _REGISTRY[definition.name] = definition
        return definition

    return register(fn) if fn is not None else register


def _origin(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def registered_workflows() -> dict[str, Workflow]:
    """Every workflow declared so far in this process, by name."""
    return dict(_REGISTRY)


def resolve_workflow(ref: Workflow | str, known: dict[str, Workflow] | None = None) -> Workflow | str:
    """A ``Workflow`` for a definition or a registered name; an unregistered name is returned as is (a worker in
    another process may serve it); anything else is a ``TypeError``."""
    if isinstance(ref, Workflow):
        return ref
    if isinstance(ref, str):
        return (known or _REGISTRY).get(ref, ref)
    raise TypeError(f"expected a @durable.workflow or a workflow name, got {ref!r}")


def unknown_workflow(name: str, known: set[str]) -> UnknownWorkflowError:
    """The error for a name no process serves, listing the names that exist."""
    listing = ", ".join(sorted(known)) or "none"
    return UnknownWorkflowError(
        f"no workflow is registered as {name!r} (known: {listing}). Import the module that defines it, or "
        f"start a worker for it (`durable worker your.module`)."
    )


def encode_input(args: tuple[Any, ...], name: str) -> msgspec.Raw:
    """The stored input of a run: its positional arguments as a JSON list."""
    from history import encode_payload

    return encode_payload(list(args), what=f"the input of workflow {name!r}")
