"""Determinism guards: calls that would make a replay diverge raise ``WorkflowCodeError`` inside workflow code.

Workflow code runs only inside ``DeterministicLoop.run_until_idle()``, on the thread that called it. That method
*arms* its thread for the duration (``arm``/``disarm``); everything else in the process (steps on the real loop,
sync steps in worker threads, the worker itself, other threads) is never armed and goes straight through.

What is intercepted, and how (see docs/determinism.md for the trade-offs and the measured cost):

* Module functions are replaced by thin wrappers: ``time.time``/``time_ns``/``monotonic``/``perf_counter``/
  ``sleep`` (and ``localtime``/``gmtime``/``ctime``/``strftime`` without a time argument), the module-level
  ``random`` functions, ``uuid.uuid1``/``uuid4``, ``os.urandom``, the ``secrets`` functions and
  ``threading.Thread.start``. A wrapper's fast path, taken whenever no workflow code runs on its thread, is one
  global dict test (and a ``get_ident()`` while some thread runs a workflow), then the original function.
* ``datetime.now``/``utcnow`` and ``date.today`` are C classmethods of immutable types: they cannot be
  monkeypatched, and no audit event reports them. The wrapper goes into the type's own ``__dict__`` (reached
  through ``gc.get_referents`` of its mappingproxy) and ``PyType_Modified`` drops the attribute caches, so every
  caller, however it imported ``datetime``, meets it; ``isinstance``, subclasses and type hints are untouched.
  CPython-specific; where it cannot be done, these three calls stay unguarded (``guarded_calls()`` says which).
* I/O is caught by one audit hook (``sys.addaudithook``: file opens and listings, sockets and DNS, HTTP/FTP/SMTP
  clients, sqlite3, subprocesses, ``os.system``/``exec``/``fork``). An audit hook cannot be removed, so it is
  added once and returns at once unless its thread is armed.

Exempt even when armed: calls made directly by Durable's own packages (``ctx.now()`` reads the real clock when
it records), by ``logging`` (log record timestamps do not steer the workflow), by tracebacks and imports
(``linecache``/``tokenize``/``importlib`` read source files), code the garbage collector runs (gc callbacks,
``__del__``, ``weakref.finalize``: a collection may start inside workflow code), anything under
``unsafe_nondeterminism()``, and anything an exempt call does in turn. The ``DURABLE_DETERMINISM_GUARD=off``
environment variable, read at import, installs nothing at all.

A violation is raised at the call and also kept on the armed loop (``loop.guard_violation``): the workflow
instance fails the run with it even when the workflow code caught the exception (an ``except Exception`` around a
helper that does a network call must not turn into a silently different replay).
"""

from __future__ import annotations

import contextvars
import ctypes
import datetime as _dt
import functools
import gc
import inspect
import os
import random
import secrets
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import history

from ._errors import WorkflowCodeError

if TYPE_CHECKING:
    from ._loop import DeterministicLoop

_F = TypeVar("_F", bound=Callable[..., Any])

GUARD_ENV = "DURABLE_DETERMINISM_GUARD"
"""Set to ``off`` (or ``0``/``false``/``no``) before importing durable to install no guard at all."""

_get_ident = threading.get_ident

_armed: dict[int, DeterministicLoop] = {}
"""Thread ident -> the loop running workflow code on that thread. Empty almost always: the fast path tests it."""

_enabled = False
_SUSPENDED: contextvars.ContextVar[bool] = contextvars.ContextVar("durable_guard_suspended", default=False)

# Callers whose calls are never violations: Durable itself, and stdlib modules that read the clock or files for
# reasons that cannot change which commands a workflow issues.
_EXEMPT_ROOTS = frozenset(
    {"durable", "replay", "history", "logging", "linecache", "tokenize", "traceback", "importlib", "zipimport"}
)

# -- advice per kind of call: what to use instead ---------------------------------------------------------------

_CLOCK = "makes replay non-deterministic: use ctx.now() (recorded) instead, or move it into a @durable.step"
_TIMING = "makes replay non-deterministic: measure with ctx.now() (recorded), or time the work inside a @durable.step"
_SLEEP = "blocks the worker and is not durable: use `await ctx.sleep(seconds)` instead"
_RANDOM = (
    "makes replay non-deterministic: use ctx.random(), ctx.randint(a, b) or ctx.choice(seq) (seeded from the "
    "history), or random.Random(ctx.randint(0, 2**63)) for the rest of the random API"
)
_UUID = "makes replay non-deterministic: use ctx.uuid4() (recorded) instead"
_ENTROPY = "makes replay non-deterministic: generate it in a @durable.step (its result is recorded)"
_THREAD = (
    "escapes the deterministic loop: run steps concurrently with asyncio.gather(step_a(), step_b()), or do "
    "threaded work inside a @durable.step"
)
_FILES = "makes replay non-deterministic: do file I/O in a @durable.step (its result is recorded)"
_NETWORK = "makes replay non-deterministic: do network I/O in a @durable.step (its result is recorded)"
_PROCESS = "makes replay non-deterministic: run processes in a @durable.step (its result is recorded)"
_IO = "makes replay non-deterministic: do I/O in a @durable.step (its result is recorded)"

_AUDITED: dict[str, str] = {
    "open": _FILES,
    "os.listdir": _FILES,
    "os.scandir": _FILES,
    "glob.glob": _FILES,
    "socket.connect": _NETWORK,
    "socket.bind": _NETWORK,
    "socket.sendto": _NETWORK,
    "socket.sendmsg": _NETWORK,
    "socket.getaddrinfo": _NETWORK,
    "socket.getnameinfo": _NETWORK,
    "socket.gethostbyname": _NETWORK,
    "socket.gethostbyname_ex": _NETWORK,
    "socket.gethostbyaddr": _NETWORK,
    "urllib.Request": _NETWORK,
    "http.client.connect": _NETWORK,
    "ftplib.connect": _NETWORK,
    "smtplib.connect": _NETWORK,
    "poplib.connect": _NETWORK,
    "imaplib.open": _NETWORK,
    "sqlite3.connect": _IO,
    "webbrowser.open": _IO,
    "subprocess.Popen": _PROCESS,
    "os.system": _PROCESS,
    "os.exec": _PROCESS,
    "os.posix_spawn": _PROCESS,
    "os.spawn": _PROCESS,
    "os.fork": _PROCESS,
    "os.forkpty": _PROCESS,
    "pty.spawn": _PROCESS,
}

_RANDOM_FUNCTIONS = (
    "betavariate", "choice", "choices", "expovariate", "gammavariate", "gauss", "getrandbits", "lognormvariate",
    "normalvariate", "paretovariate", "randbytes", "randint", "random", "randrange", "sample", "shuffle",
    "triangular", "uniform", "vonmisesvariate", "weibullvariate",
)  # fmt: skip
_SECRETS_FUNCTIONS = ("choice", "randbelow", "randbits", "token_bytes", "token_hex", "token_urlsafe")


# -- arming (called by DeterministicLoop.run_until_idle) -----------------------------------------------------------


def arm(loop: DeterministicLoop) -> int:
    """Mark this thread as running ``loop``'s workflow code; returns the token for ``disarm`` (0: nothing to do)."""
    if not _enabled:
        return 0
    ident = _get_ident()
    if ident in _armed:  # re-entered (a nested run_until_idle): the outer call disarms
        return 0
    _armed[ident] = loop
    return ident


def disarm(token: int) -> None:
    """Undo ``arm``."""
    if token:
        del _armed[token]


# -- the escape hatch -------------------------------------------------------------------------------------------


def _reset(token: contextvars.Token[bool]) -> None:
    try:
        _SUSPENDED.reset(token)
    except ValueError:
        # A coroutine closed by the garbage collector (a task left pending when its run ended) unwinds its
        # `with` outside the task's context, where there is nothing to reset.
        pass


class _Unsafe:
    """What ``unsafe_nondeterminism()`` returns: a context manager, and a decorator for sync or async functions."""

    __slots__ = ("_tokens",)

    def __init__(self) -> None:
        self._tokens: list[contextvars.Token[bool]] = []

    def __enter__(self) -> None:
        self._tokens.append(_SUSPENDED.set(True))

    def __exit__(self, *exc_info: object) -> None:
        _reset(self._tokens.pop())

    def __call__(self, fn: _F) -> _F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = _SUSPENDED.set(True)
                try:
                    return await fn(*args, **kwargs)
                finally:
                    _reset(token)

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = _SUSPENDED.set(True)
            try:
                return fn(*args, **kwargs)
            finally:
                _SUSPENDED.reset(token)

        return run  # type: ignore[return-value]


@overload
def unsafe_nondeterminism() -> _Unsafe: ...
@overload
def unsafe_nondeterminism(fn: _F, /) -> _F: ...


def unsafe_nondeterminism(fn: _F | None = None, /) -> _Unsafe | _F:
    """Turn the determinism guards off inside a block, or for a whole function, that you know to be safe.

    ``with durable.unsafe_nondeterminism(): ...``, or ``@durable.unsafe_nondeterminism`` on a sync or async
    function. The code still runs again on every replay: use it for calls whose result cannot change the commands
    the workflow issues (timing for a log line, a debug dump), never to read data the workflow acts on.

    It holds for the current task, across ``await``s, and for tasks created inside the block.
    """
    if fn is not None:
        return _Unsafe()(fn)
    return _Unsafe()


def trusted(fn: _F) -> _F:
    """``fn`` run with the guards suspended: for callables Durable's machinery calls from inside the loop on the
    user's behalf (the instance's clock, which a test may supply)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if not _armed:
            return fn(*args, **kwargs)
        token = _SUSPENDED.set(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _SUSPENDED.reset(token)

    return call  # type: ignore[return-value]


# -- the slow path: an armed thread called a guarded function --------------------------------------------------


def _exempt(frame: FrameType | None) -> bool:
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return (isinstance(name, str) and name.partition(".")[0] in _EXEMPT_ROOTS) or _run_by_collector(frame)


def _run_by_collector(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs on behalf of the garbage collector: a ``gc.callbacks`` entry, a ``__del__`` or a
    ``weakref.finalize`` callback. A collection can start at any allocation, so inside workflow code too; what it
    runs is not the workflow's, and must not fail the run on GC timing alone (hypothesis times collections with
    ``time.perf_counter()`` from a gc callback). Walks the stack: only on the way to raising."""
    callbacks = {getattr(getattr(cb, "__func__", cb), "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code in callbacks or code.co_name == "__del__" or frame.f_globals.get("__name__") == "weakref":
            return True
        frame = frame.f_back
    return False


def _violation(what: str, advice: str, frame: FrameType | None) -> WorkflowCodeError:
    """Build the error, remember it on the armed loop, and return it for the caller to raise."""
    from ._instance import current_instance  # here, not at import: _instance imports _loop imports us

    instance = current_instance()
    workflow = f"workflow {instance.workflow_name!r}" if instance is not None else "a workflow"
    where = _user_location(frame)
    error = WorkflowCodeError(
        f"{what} inside {workflow} {advice}"
        + (f" (at {where})" if where else "")
        + ". If the call cannot change what the workflow does, wrap it in `with durable.unsafe_nondeterminism():`."
    )
    loop = _armed.get(_get_ident())
    if loop is not None and loop.guard_violation is None:
        loop.guard_violation = error
    return error


def _call_guarded(original: Callable[..., Any], what: str, advice: str, args: Any, kwargs: Any) -> Any:
    frame = sys._getframe(2)  # 0: here, 1: the wrapper, 2: its caller
    if _SUSPENDED.get():
        return original(*args, **kwargs)
    if _exempt(frame):
        token = _SUSPENDED.set(True)  # whatever the exempt call does in turn is exempt too (uuid4 -> urandom)
        try:
            return original(*args, **kwargs)
        finally:
            _SUSPENDED.reset(token)
    raise _violation(what, advice, frame)


def _guard(original: Callable[..., Any], what: str, advice: str) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _armed and _get_ident() in _armed:
            return _call_guarded(original, what, advice, args, kwargs)
        return original(*args, **kwargs)

    return _like(guarded, original)


def _guard_noargs(original: Callable[..., Any], what: str, advice: str) -> Callable[..., Any]:
    # time.time() and friends take no argument: a wrapper without *args/**kwargs is ~25% cheaper on the fast path.
    def guarded() -> Any:
        if _armed and _get_ident() in _armed:
            return _call_guarded(original, what, advice, (), {})
        return original()

    return _like(guarded, original)


def _guard_clock_default(original: Callable[..., Any], what: str) -> Callable[..., Any]:
    # time.localtime(secs) is deterministic; time.localtime() reads the clock. Same for gmtime, ctime, strftime.
    def guarded(*args: Any) -> Any:
        if _armed and _get_ident() in _armed and len(args) < (2 if what == "time.strftime" else 1):
            return _call_guarded(original, f"{what}() without a time argument", _CLOCK, args, {})
        return original(*args)

    return _like(guarded, original)


def _like(wrapper: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        try:
            setattr(wrapper, attr, getattr(original, attr))
        except (AttributeError, TypeError):
            pass
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapper


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Called for every audit event of every thread, forever: keep the first test the cheapest.
    if _armed and event in _AUDITED and _get_ident() in _armed and not _SUSPENDED.get():
        frame = sys._getframe(1)
        if not _exempt(frame):
            raise _violation(_describe_event(event, args), _AUDITED[event], frame)


def _describe_event(event: str, args: tuple[Any, ...]) -> str:
    first = args[0] if args else None
    if isinstance(first, bytes):
        first = os.fsdecode(first)
    if event == "open":
        return f"open({first!r})"
    if event in ("socket.connect", "socket.bind", "socket.sendto") and len(args) > 1:
        return f"{event}({args[1]!r})"
    if event == "subprocess.Popen" and len(args) > 1:
        return f"subprocess.Popen({args[1]!r})"
    if first is not None and isinstance(first, (str, bytes, os.PathLike)):
        return f"{event}({first!r})"
    return f"{event}()"


# -- locating the user's line --------------------------------------------------------------------------------

_OWN_DIRS = tuple(os.path.dirname(os.path.abspath(path)) + os.sep for path in (__file__, history.__file__ or ""))
_LIBRARY_DIRS = tuple(
    {os.path.abspath(p) + os.sep for key in ("stdlib", "platstdlib", "purelib", "platlib")
     if (p := sysconfig.get_paths().get(key))}
)  # fmt: skip


def _user_location(frame: FrameType | None) -> str | None:
    """``file:line`` of the innermost frame in the user's code: not Durable's, not the stdlib, not a library."""
    first_outside: str | None = None
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_OWN_DIRS) and not filename.startswith(_durable_dir()):
            where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
            if not filename.startswith(_LIBRARY_DIRS):
                return where
            first_outside = first_outside or where
        frame = frame.f_back
    return first_outside


@functools.cache
def _durable_dir() -> str:
    module = sys.modules.get("durable")
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) + os.sep if path else os.sep + "\0"


# -- datetime: patching C classmethods in the type's own dict ------------------------------------------------


def _type_dict(cls: type) -> dict[str, Any] | None:
    """The real ``__dict__`` of a type behind its read-only mappingproxy (CPython), or ``None``."""
    referents = gc.get_referents(cls.__dict__)
    if len(referents) == 1 and isinstance(referents[0], dict):
        return referents[0]
    return None


def _set_type_attr(cls: type, name: str, value: Any) -> bool:
    try:
        setattr(cls, name, value)  # the pure-Python datetime (no C accelerator) allows it
        return True
    except TypeError:
        pass
    namespace = _type_dict(cls)
    modified = getattr(getattr(ctypes, "pythonapi", None), "PyType_Modified", None)
    if namespace is None or modified is None:
        return False
    namespace[name] = value
    modified(ctypes.py_object(cls))  # invalidate the method caches of cls and its subclasses
    return True


def _datetime_guards() -> list[tuple[type, str, Any, Any]]:
    """(class, name, original descriptor, guarded classmethod) for datetime.now/utcnow and date.today."""
    now = _dt.datetime.__dict__["now"]
    utcnow = _dt.datetime.__dict__["utcnow"]
    today = _dt.date.__dict__["today"]
    datetime_now = now.__get__(None, _dt.datetime)  # bound once: the worker calls datetime.now(UTC) per step

    def guarded_now(cls: type, tz: _dt.tzinfo | None = None) -> Any:
        if _armed and _get_ident() in _armed:
            return _call_guarded(now.__get__(None, cls), f"{cls.__name__}.now()", _CLOCK, (tz,), {})
        if cls is _dt.datetime:
            return datetime_now(tz)
        return now.__get__(None, cls)(tz)

    def guarded_utcnow(cls: type) -> Any:
        if _armed and _get_ident() in _armed:
            return _call_guarded(utcnow.__get__(None, cls), f"{cls.__name__}.utcnow()", _CLOCK, (), {})
        return utcnow.__get__(None, cls)()

    def guarded_today(cls: type) -> Any:
        if _armed and _get_ident() in _armed:
            return _call_guarded(today.__get__(None, cls), f"{cls.__name__}.today()", _CLOCK, (), {})
        return today.__get__(None, cls)()

    return [
        (_dt.datetime, "now", now, classmethod(_like(guarded_now, now))),
        (_dt.datetime, "utcnow", utcnow, classmethod(_like(guarded_utcnow, utcnow))),
        (_dt.date, "today", today, classmethod(_like(guarded_today, today))),
    ]


# -- install / uninstall -------------------------------------------------------------------------------------

_patched: list[tuple[Any, str, Any]] = []  # (owner, name, original) to restore
_audit_hook_added = False


def _module_patches() -> list[tuple[Any, str, Callable[..., Any]]]:
    patches: list[tuple[Any, str, Callable[..., Any]]] = []
    for name, advice in (
        ("time", _CLOCK), ("time_ns", _CLOCK), ("monotonic", _TIMING), ("monotonic_ns", _TIMING),
        ("perf_counter", _TIMING), ("perf_counter_ns", _TIMING),
    ):  # fmt: skip
        patches.append((time, name, _guard_noargs(getattr(time, name), f"time.{name}()", advice)))
    patches.append((time, "sleep", _guard(time.sleep, "time.sleep()", _SLEEP)))
    for name in ("localtime", "gmtime", "ctime", "strftime"):
        patches.append((time, name, _guard_clock_default(getattr(time, name), f"time.{name}")))
    for name in _RANDOM_FUNCTIONS:
        if hasattr(random, name):
            patches.append((random, name, _guard(getattr(random, name), f"random.{name}()", _RANDOM)))
    patches.append((uuid, "uuid4", _guard_noargs(uuid.uuid4, "uuid.uuid4()", _UUID)))
    patches.append((uuid, "uuid1", _guard(uuid.uuid1, "uuid.uuid1()", _UUID)))
    patches.append((os, "urandom", _guard(os.urandom, "os.urandom()", _ENTROPY)))
    for name in _SECRETS_FUNCTIONS:
        patches.append((secrets, name, _guard(getattr(secrets, name), f"secrets.{name}()", _ENTROPY)))
    patches.append((threading.Thread, "start", _guard(threading.Thread.start, "threading.Thread.start()", _THREAD)))
    return patches


def install() -> None:
    """Install every guard (idempotent). Done at import unless ``DURABLE_DETERMINISM_GUARD=off``."""
    global _enabled, _audit_hook_added
    if _enabled:
        return
    for owner, name, wrapper in _module_patches():
        _patched.append((owner, name, getattr(owner, name)))
        setattr(owner, name, wrapper)
    for cls, name, original, wrapper in _datetime_guards():
        if _set_type_attr(cls, name, wrapper):
            _patched.append((cls, name, original))
    if not _audit_hook_added:
        sys.addaudithook(_audit)
        _audit_hook_added = True
    _enabled = True


def uninstall() -> None:
    """Put every original back (the audit hook stays: it cannot be removed, and does nothing while disarmed).

    For benchmarks and tests; a process that wants no guards sets ``DURABLE_DETERMINISM_GUARD=off``.
    """
    global _enabled
    _enabled = False
    _armed.clear()
    while _patched:
        owner, name, original = _patched.pop()
        if isinstance(owner, type) and owner in (_dt.datetime, _dt.date):
            _set_type_attr(owner, name, original)
        else:
            setattr(owner, name, original)


def enabled() -> bool:
    """Whether the guards are installed."""
    return _enabled


def guarded_calls() -> list[str]:
    """The names of the calls currently guarded (besides the audited I/O events), for docs and diagnostics."""
    prefix = {threading.Thread: "threading.Thread"}
    return sorted(f"{prefix.get(owner, owner.__name__)}.{name}" for owner, name, _ in _patched)


@contextmanager
def _disabled() -> Iterator[None]:
    """Guards off for a block, process-wide (benchmarks comparing on and off in one process)."""
    was = _enabled
    uninstall()
    try:
        yield
    finally:
        if was:
            install()


if os.environ.get(GUARD_ENV, "on").strip().lower() not in ("off", "0", "false", "no"):
    install()
