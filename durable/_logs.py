"""Per-step log capture: what a step body logs (``logging``, any logger) and prints (``print``, ``sys.stdout``,
``sys.stderr``) is kept per run, step and attempt, and still reaches the normal handlers and the terminal.

How it works. While a worker with capture runs, this process has (installed once, reference-counted, undone
when the last such worker stops):

* a ``logging.Handler`` on the root logger: it sees every record that reaches the root's handlers (so exactly
  the levels the application's logging configuration lets through) and keeps it when a step attempt is running
  in the current context;
* ``sys.stdout`` and ``sys.stderr`` replaced by proxies that pass every write through to the original stream
  and also keep it, split into lines (a partial line waits for its newline, or for the attempt's end).

Which attempt a record or a write belongs to is told by context variables, never a global: the attempt's
``StepInfo`` (``_CURRENT_STEP``, set by the driver around each attempt) and the worker's capture
(``_WORKER_LOGS``, set once in the worker's task and inherited by every task it starts). Two async steps
interleaving on one loop, or sync steps in threads (anyio's ``to_thread.run_sync`` runs them in a copy of the
caller's context), each write to their own buffer, made when the attempt writes its first line: an attempt that
writes nothing costs two set operations.

Each line carries the trace and span ids of the OpenTelemetry span current when it was written (the attempt's
span, or one the body made), read only when the worker traces (``StepLogs.start``'s ``trace_ids``, decided once
per worker start): with tracing off a line costs one more ``None`` test, and an attempt nothing.

Lines are written with the step's outcome, in the same commit (``Append.logs``). A step that runs long has its
lines written earlier, about a second after they were logged, by a small task that sleeps only while some
running attempt has unwritten lines (``StepLogs``): ``durable logs --follow`` shows them as they come.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, TextIO

import msgspec

from history import MAX_LINE_CHARS, LogLine, Store, clean_text, line_from_record

from ._execution import Execution
from ._step_context import _CURRENT_STEP, StepInfo

log = logging.getLogger("durable.worker")

LIVE_DELAY = 1.0
"""Seconds after which lines of an attempt still running are written on their own (the live tail); lines of
attempts that end sooner go with the outcome, at no extra cost."""

TraceIds = Callable[[], tuple[str, str] | None]
"""``_telemetry.current_ids``: the current span's trace and span ids, or ``None`` (this module never imports
OpenTelemetry: the worker hands it over, when it traces)."""

_STREAM_LEVELS = {"stdout": (logging.INFO, "INFO"), "stderr": (logging.WARNING, "WARNING")}
"""The level a printed line gets: INFO on stdout, WARNING on stderr."""


class LogLimits(msgspec.Struct, frozen=True):
    """How much one step attempt may capture; past either limit, lines are counted, not kept, and one marker line
    says how many were dropped.

    Args:
        max_lines: lines kept per attempt (default 1,000).
        max_bytes: characters of text (messages, tracebacks, extra fields) kept per attempt (default 1 MB).
    """

    max_lines: int = 1000
    max_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("max_lines", "max_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LogLimits.{name} must be an int >= 1, got {value!r}")

    def describe(self) -> str:
        """``1000 lines / 1 MB``."""
        size = self.max_bytes
        if size % 1_000_000 == 0:
            text = f"{size // 1_000_000} MB"
        elif size >= 1000:
            text = f"{size / 1000:g} kB"
        else:
            text = f"{size} bytes"
        return f"{self.max_lines} lines / {text}"


_LEVEL_NAMES = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50, "fatal": 50}


def parse_level(level: str | int | None) -> int | None:
    """A level given as a name (``"warning"``, any case) or a number, as a number; ``None`` stays ``None``.

    Raises:
        ValueError: an unknown name, or something that is neither a name nor a number.
    """
    if level is None:
        return None
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str):
        number = _LEVEL_NAMES.get(level.strip().lower())
        if number is not None:
            return number
        if level.strip().isdigit():
            return int(level)
    raise ValueError(
        f"unknown log level {level!r}: use debug, info, warning, error or critical (any case), or a number"
    )


# -- one attempt's buffer ----------------------------------------------------------------------------------------


_BUFFER_LOCK = threading.Lock()
"""Guards every buffer: held for a few list operations, so one lock for all costs less than one per attempt."""


class _Capture:
    """The lines of one step attempt. Written from the attempt's task or thread; taken by the driver (at the end)
    and by the live-tail task (while it runs), under ``_BUFFER_LOCK``."""

    __slots__ = ("_closed", "_dropped", "_ids", "_kept", "_lines", "_lock", "_notify", "_partial", "_size",
                 "first_ids", "inflight", "info", "limits")

    def __init__(self, info: StepInfo, limits: LogLimits, notify: Callable[[], None] | None,
                 trace_ids: TraceIds | None = None) -> None:
        self.info = info
        self.limits = limits
        self._ids = trace_ids
        # Made at the attempt's first output, in its own context: the span of the lines made at its end (a last
        # partial line, the truncation marker), when the body's context is gone.
        self.first_ids = None if trace_ids is None else trace_ids()
        self._lines: list[LogLine] = []  # not yet taken
        self._kept = 0
        self._size = 0
        self._dropped = 0
        self._partial: dict[str, str] | None = None  # made on the first partial line: most attempts print none
        self._closed = False
        self._lock = _BUFFER_LOCK
        self._notify = notify
        self.inflight: asyncio.Future[None] | None = None
        """Set while the live-tail task writes lines of this attempt (the rest waits, to keep their order)."""

    def add(self, line: LogLine) -> None:
        size = len(line.message) + len(line.exc or "") + len(line.extra or b"")
        with self._lock:
            if self._closed:  # an abandoned sync step still printing after its attempt ended
                return
            if self._dropped or self._kept >= self.limits.max_lines or self._size + size > self.limits.max_bytes:
                self._dropped += 1
                return
            self._lines.append(line)
            self._kept += 1
            self._size += size
            first = len(self._lines) == 1
        if first and self._notify is not None:
            self._notify()

    def record(self, record: logging.LogRecord) -> None:
        info = self.info
        trace_id, span_id = (None, None) if self._ids is None else (self._ids() or (None, None))
        self.add(line_from_record(record, info.run_id, info.step, info.command_id, info.attempt, trace_id, span_id))

    def write(self, stream: str, text: str) -> None:
        """Text written to ``stream``: complete lines are kept, a partial one waits for its newline."""
        with self._lock:
            if self._partial is None:
                self._partial = {}
            pending = self._partial.get(stream, "") + text
            if "\n" not in text and len(pending) < MAX_LINE_CHARS:
                self._partial[stream] = pending
                return
            *complete, rest = pending.split("\n")
            while len(rest) >= MAX_LINE_CHARS:  # a line that never ends: kept in pieces, never held whole
                complete.append(rest[:MAX_LINE_CHARS])
                rest = rest[MAX_LINE_CHARS:]
            self._partial[stream] = rest
        ids = None if self._ids is None or not complete else self._ids()
        for content in complete:
            self.add(self._stream_line(stream, content, ids))

    def _stream_line(self, stream: str, content: str, ids: tuple[str, str] | None) -> LogLine:
        level, name = _STREAM_LEVELS[stream]
        info = self.info
        trace_id, span_id = (None, None) if ids is None else ids
        return LogLine(run_id=info.run_id, at=datetime.now(UTC), level=level, level_name=name, logger="",
                       message=clean_text(content.rstrip("\r")), stream=stream, step=info.step,
                       command_id=info.command_id, attempt=info.attempt, trace_id=trace_id, span_id=span_id)

    @property
    def pending(self) -> bool:
        return bool(self._lines)

    def take(self) -> list[LogLine]:
        """The lines kept since the last take."""
        with self._lock:
            lines, self._lines = self._lines, []
        return lines

    def finish(self) -> list[LogLine]:
        """End the attempt: its last partial lines, a marker if lines were dropped, and what was not taken."""
        if not (self._lines or self._partial or self._dropped):  # the common case, without the lock: no output
            self._closed = True
            return []
        with self._lock:
            partial, self._partial = self._partial, None
        for stream, content in (partial or {}).items():
            if content:
                self.add(self._stream_line(stream, content, self.first_ids))
        with self._lock:
            self._closed = True
            lines, self._lines = self._lines, []
            dropped = self._dropped
        if dropped:
            info = self.info
            trace_id, span_id = (None, None) if self.first_ids is None else self.first_ids
            lines.append(LogLine(
                run_id=info.run_id, at=datetime.now(UTC), level=logging.WARNING, level_name="WARNING",
                logger="durable", step=info.step, command_id=info.command_id, attempt=info.attempt,
                message=f"… truncated: {dropped} more lines not captured (limit {self.limits.describe()} per attempt)",
                trace_id=trace_id, span_id=span_id,
            ))  # fmt: skip
        return lines


_WORKER_LOGS: contextvars.ContextVar[StepLogs | None] = contextvars.ContextVar("durable_worker_logs", default=None)
"""The capture of the worker whose task (or one of its drivers', attempts', threads') runs: set once by
``StepLogs.start`` in the worker's own task, inherited by every task and thread it starts."""


def _current_buffer() -> _Capture | None:
    """The buffer of the step attempt running in this context, or ``None`` (no capturing worker, no step)."""
    logs = _WORKER_LOGS.get()
    if logs is None:
        return None
    info = _CURRENT_STEP.get()
    return None if info is None else logs.buffer(info)


# -- the process-wide hooks ----------------------------------------------------------------------------------


def _durables(name: str) -> bool:
    """Durable's own loggers are not the user's output (``ctx.logger``'s lines are captured by the instance)."""
    return name == "durable" or name.startswith("durable.")


class _CaptureHandler(logging.Handler):
    """On the root logger: keeps each record that reaches it in the current attempt's buffer (if any)."""

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: the buffer's own suffices
        if not _durables(record.name):
            try:
                capture = _current_buffer()
                if capture is not None:
                    capture.record(record)
            except Exception:  # capture must never break the application's logging
                self.handleError(record)
        if len(logging.root.handlers) == 1:
            _last_resort(record, self)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


def _last_resort(record: logging.LogRecord, ours: logging.Handler) -> None:
    """What Python does for a record no handler takes (print WARNING and above to stderr): our handler on the
    root would otherwise stop it, and an application that configured no logging would lose its warnings."""
    resort = logging.lastResort
    if resort is None or record.levelno < resort.level:
        return
    logger = logging.Logger.manager.loggerDict.get(record.name)
    current: Any = logger if isinstance(logger, logging.Logger) else logging.root
    while current is not None:
        if any(handler is not ours for handler in current.handlers):
            return
        if not current.propagate:
            break
        current = current.parent
    resort.handle(record)


class _TeeStream:
    """``sys.stdout``/``sys.stderr`` while capture is installed: every write goes to the original stream, and is
    also kept when a step attempt runs in the current context. Everything else is the original's."""

    def __init__(self, original: TextIO, name: str) -> None:
        self._original = original
        self._name = name
        self._buffer: _TeeBinary | None = None

    def write(self, text: str) -> int:
        capture = _current_buffer() if _installed else None
        # Not what a logging handler writes to this stream: the record itself is captured already.
        if capture is not None and isinstance(text, str) and sys._getframe(1).f_globals.get("__name__") != "logging":
            capture.write(self._name, text)
        return self._original.write(text)

    def writelines(self, lines: Any) -> None:
        for text in lines:
            self.write(text)

    @property
    def buffer(self) -> _TeeBinary:
        """The original's binary buffer, tee'd too: ``sys.stdout.buffer.write(b"...")`` is captured as text."""
        if self._buffer is None:  # AttributeError, as before, when the original has no buffer (a StringIO)
            encoding = getattr(self._original, "encoding", None) or "utf-8"
            self._buffer = _TeeBinary(self._original.buffer, self._name, encoding)
        return self._buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class _TeeBinary:
    """``sys.stdout.buffer``/``sys.stderr.buffer`` while capture is installed: bytes go to the original buffer and,
    decoded with the stream's encoding, to the current attempt's buffer. Each write is decoded on its own, so a
    character split across two writes is kept as replacement characters (its bytes still reach the terminal)."""

    def __init__(self, original: IO[bytes], name: str, encoding: str) -> None:
        self._original = original
        self._name = name
        self._encoding = encoding

    def write(self, data: Any) -> int:
        capture = _current_buffer() if _installed else None
        if capture is not None:
            try:
                text = bytes(data).decode(self._encoding, errors="replace")
            except (TypeError, LookupError):  # not bytes-like, or an encoding Python does not know: not ours to fix
                text = ""
            if text:
                capture.write(self._name, text)
        return self._original.write(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


_HANDLER = _CaptureHandler()
_install_lock = threading.Lock()
_installed = 0
_lowered_from: int | None = None


def install() -> None:
    """Install the handler and the stream proxies (the first call; later ones only count).

    If logging is not configured at all (the root logger has no handler), the root's level is lowered from
    WARNING to INFO so that INFO records of step bodies are captured: Python's last-resort output prints WARNING
    and above only (and still does, see ``_last_resort``), so nothing more reaches the terminal. An application
    that configures logging decides the levels itself. Configure logging before starting a worker:
    ``logging.basicConfig`` does nothing once the root has a handler (``force=True`` replaces ours, which
    ``StepLogs.begin`` then puts back).
    """
    global _installed, _lowered_from
    with _install_lock:
        _installed += 1
        if _installed > 1:
            return
        root = logging.getLogger()
        if not root.handlers and root.level > logging.INFO:
            _lowered_from = root.level
            root.setLevel(logging.INFO)
        root.addHandler(_HANDLER)
        if sys.stdout is not None:  # None under pythonw: nothing to pass writes to
            sys.stdout = _TeeStream(sys.stdout, "stdout")
        if sys.stderr is not None:
            sys.stderr = _TeeStream(sys.stderr, "stderr")


def uninstall() -> None:
    """Undo ``install`` when its last user is gone: the streams and the root logger are as they were (a stream
    someone replaced in the meantime is left alone, and our proxy under it only passes writes through)."""
    global _installed, _lowered_from
    with _install_lock:
        _installed -= 1
        if _installed > 0:
            return
        root = logging.getLogger()
        root.removeHandler(_HANDLER)
        if _lowered_from is not None and root.level == logging.INFO:
            root.setLevel(_lowered_from)
        _lowered_from = None
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, _TeeStream):
                setattr(sys, name, stream._original)


# -- per worker: buffers per attempt, the live tail -------------------------------------------------------------


class StepLogs:
    """A worker's log capture: a buffer per running attempt, and the task that writes long attempts' lines early.

    Args:
        store: where the live tail writes (``Store.write_logs``).
        enabled: capture at all (``Worker(capture_logs=False)``: nothing is installed, attempts cost nothing).
        limits: the per-attempt limits.
    """

    def __init__(self, store: Store, enabled: bool, limits: LogLimits) -> None:
        if not isinstance(limits, LogLimits):
            raise TypeError(f"log_limits must be a durable.LogLimits, got {limits!r}")
        self.store = store
        self.enabled = enabled
        self.limits = limits
        self._running: set[int] = set()  # id() of the StepInfo of each attempt running (unique while it runs)
        self._buffers: dict[int, _Capture] = {}  # made at an attempt's first line: most attempts print nothing
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._trace_ids: TraceIds | None = None

    def start(self, trace_ids: TraceIds | None = None) -> None:
        """Install the process-wide hooks (when enabled) and start the live-tail task.

        Args:
            trace_ids: what gives each captured line its trace and span ids (``Telemetry.log_ids``: ``None``
                when the worker does not trace, and then no line looks for a span).
        """
        if not self.enabled or self._task is not None:
            return
        self._trace_ids = trace_ids
        install()
        _WORKER_LOGS.set(self)  # in the worker's task: its drivers, their attempts and threads inherit it
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._tail())

    def stop(self) -> None:
        """Stop the live-tail task and uninstall (lines of attempts still running go with their outcomes)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            uninstall()

    def begin(self, info: StepInfo) -> bool:
        """Attempt ``info`` starts (in a context where ``_CURRENT_STEP`` is ``info``): its output is kept from now.
        False when capture is off. Nearly free: a buffer is made only when the attempt writes its first line."""
        if self._task is None:
            return False
        if _HANDLER not in logging.root.handlers:  # basicConfig(force=True) or dictConfig removed it: put it back
            logging.root.addHandler(_HANDLER)
        self._running.add(id(info))
        return True

    def buffer(self, info: StepInfo) -> _Capture | None:
        """The buffer of running attempt ``info`` (made now if it has none); ``None`` once it has ended (an
        abandoned sync step still printing)."""
        key = id(info)
        capture = self._buffers.get(key)
        if capture is None:
            with _BUFFER_LOCK:
                if key not in self._running:
                    return None
                capture = self._buffers.get(key)
                if capture is None:
                    capture = self._buffers[key] = _Capture(info, self.limits, self._notify, self._trace_ids)
        return capture

    def end(self, info: StepInfo) -> _Capture | None:
        """Attempt ``info`` ended: its buffer, if it wrote anything. The driver awaits ``inflight`` (the live tail
        writing earlier lines of it, which must stay first), then appends ``finish()`` with the outcome."""
        key = id(info)
        with _BUFFER_LOCK:
            self._running.discard(key)
            return self._buffers.pop(key, None)

    def abandon(self, info: StepInfo) -> None:
        """The attempt was cancelled: stop keeping its lines."""
        capture = self.end(info)
        if capture is not None:
            capture.finish()

    def _notify(self) -> None:
        """A running attempt has unwritten lines (called from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def _tail(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            await asyncio.sleep(LIVE_DELAY)  # not a poll: only while some attempt has lines to write
            self._wake.clear()
            captures = [capture for capture in list(self._buffers.values()) if capture.pending]
            if not captures:
                continue
            done = asyncio.get_running_loop().create_future()
            batch: list[LogLine] = []
            for capture in captures:
                capture.inflight = done
                batch += capture.take()
            try:
                await self.store.write_logs(batch)
            except Exception:
                log.warning("could not write %d captured log lines; they are lost", len(batch), exc_info=True)
            finally:
                done.set_result(None)
                for capture in captures:
                    capture.inflight = None


# -- reading --------------------------------------------------------------------------------------------------

MAX_READ = 10_000
"""Most lines one ``engine.get_logs`` call returns."""


def check_log_query(
    step: object, attempt: object, level: str | int | None, after_id: object, limit: object
) -> int | None:
    """Check ``engine.get_logs``' filters (a clear ``ValueError``/``TypeError`` naming the bad one); return the
    lowest level as a number."""
    if step is not None and not isinstance(step, str):
        raise TypeError(f"step must be a step name (str) or None, got {step!r}")
    if attempt is not None and (not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1):
        raise ValueError(f"attempt must be an attempt number (an int >= 1) or None, got {attempt!r}")
    if not isinstance(after_id, int) or isinstance(after_id, bool) or after_id < 0:
        raise ValueError(f"after_id must be an int >= 0 (the id of the last line seen), got {after_id!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_READ:
        raise ValueError(f"limit must be between 1 and {MAX_READ:,}, got {limit!r}")
    return parse_level(level)


async def read_all_logs(store: Store, run_id: str) -> list[LogLine]:
    """Every line of the run, oldest first, read a page at a time."""
    lines: list[LogLine] = []
    while True:
        page = await store.read_logs(run_id, after_id=lines[-1].id if lines else 0, limit=MAX_READ)
        lines += page
        if len(page) < MAX_READ:
            return lines


def with_logs(execution: Execution, lines: list[LogLine]) -> Execution:
    """``execution`` with its ``logs``, and each of its steps (if read) with the lines of its command id."""
    steps = execution.steps
    if steps is not None:
        by_command: dict[int, list[LogLine]] = {}
        for line in lines:
            if line.command_id is not None:
                by_command.setdefault(line.command_id, []).append(line)
        steps = [msgspec.structs.replace(view, logs=by_command.get(view.command_id, [])) for view in steps]
    return msgspec.structs.replace(execution, logs=lines, steps=steps)
