"""The history file: one run's events in a documented, versioned JSON format (``docs/history-format.md``).

A file holds one document::

    {"format": "durable.history", "version": 1, "exported_by": "durable 0.1.0", "exported_at": "…",
     "run": {"id": …, "workflow": …, "status": …, …},
     "events": [{"seq": 1, "at": "…", "event": {"type": "run_started", …}}, …]}

and a JSON-lines file (``.jsonl``) one such document per line. Events are encoded exactly as the stores keep
them (``history``'s tagged union), and user payloads (input, step arguments and results, recorded values) stay
the raw JSON that was stored: nothing is decoded to Python and re-encoded on the way out or in.

Loading checks everything a hand edit, a cut-short copy or a newer Durable could get wrong, and says what and
where in one ``HistoryFileError`` paragraph: the format name and version, JSON syntax (with line and column),
unknown event types (with their ``seq``), missing or repeated ``seq`` numbers, a first event that is not
``run_started``, events after the run's end, and outcomes of commands that were never issued.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from history import (
    EVENT_TYPES,
    FORMAT_VERSION,
    TERMINAL_EVENTS,
    ChildFinished,
    ChildStarted,
    DurableError,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunContinued,
    RunFailed,
    RunRecord,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
    TimerFired,
    TimerStarted,
)

FORMAT_NAME = "durable.history"
"""The value of a history file's ``format`` field."""

HISTORY_FILE_VERSION = FORMAT_VERSION
"""A file's ``version``: the event format version (``history.FORMAT_VERSION``), since a file is its events in
an envelope. Additive changes (a new optional field) keep it; an incompatible change to either bumps it."""


class HistoryFileError(DurableError):
    """A history file cannot be used: not JSON, cut short, edited into an impossible history, or made by a newer
    Durable. The message names the file (and line, for JSON lines), the event, and what to do."""


class RunInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """What a history file says about its run besides the events: enough to show it and to import it.

    The events are the source of truth (the input is in ``run_started``, the result in ``run_completed``);
    these fields are the run row's state when it was exported.
    """

    id: str
    workflow: str
    status: str
    queue: str = "default"
    priority: int = 0
    parent_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    wake_at: datetime | None = None
    cancel_reason: str | None = None
    blocked: str | None = None
    """The divergence report of a run waiting for fixed code (see ``durable show``)."""


class HistoryDocument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One run's history file: format name and version, where it came from, the run, its events."""

    format: str = FORMAT_NAME
    version: int = HISTORY_FILE_VERSION
    exported_by: str | None = None
    exported_at: datetime | None = None
    run: RunInfo
    events: list[RecordedEvent]

    @property
    def run_started(self) -> RunStarted:
        """Event 1 (``load`` checks it is a ``run_started``)."""
        event = self.events[0].event
        assert isinstance(event, RunStarted)
        return event


class _Header(msgspec.Struct, forbid_unknown_fields=False):
    format: Any = None
    version: Any = None


class _LooseEntry(msgspec.Struct, forbid_unknown_fields=False):
    seq: Any = None
    event: Any = None


class _LooseDocument(msgspec.Struct, forbid_unknown_fields=False):
    events: list[msgspec.Raw] = []


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(HistoryDocument)
_header_decoder = msgspec.json.Decoder(_Header)
_STATUS_OF_END = {RunCompleted: "completed", RunFailed: "failed", RunCancelled: "cancelled", RunContinued: "continued"}
_OUTCOME_OF = {
    StepCompleted: StepScheduled,
    StepFailed: StepScheduled,
    TimerFired: TimerStarted,
    ChildFinished: ChildStarted,
}
"""Outcome events, and the event that introduces their command (the outcome always follows it)."""
_INTRODUCING = tuple(set(_OUTCOME_OF.values()))
_OUTCOMES = tuple(_OUTCOME_OF)
_PATH_IN_EVENTS = re.compile(r"`\$\.events\[(\d+)\](.*)`")


# -- building and writing -------------------------------------------------------------------------------------


def make_document(events: Sequence[RecordedEvent], run: RunRecord | None = None) -> HistoryDocument:
    """The history document of a run: its events, and its row when there is one (else what the events tell)."""
    if not events or not isinstance(events[0].event, RunStarted):
        raise HistoryFileError("a history to export must start with its run_started event")
    started = events[0].event
    if run is not None:
        info = RunInfo(
            id=run.id,
            workflow=run.workflow,
            status=run.status,
            queue=run.queue,
            priority=run.priority,
            parent_id=run.parent_id,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            updated_at=run.updated_at,
            wake_at=run.wake_at,
            cancel_reason=run.cancel_reason,
            blocked=run.blocked,
        )
    else:
        last = events[-1]
        status = _STATUS_OF_END.get(type(last.event), "running")
        finished = last.at if status != "running" else None
        info = RunInfo(
            id=started.run_id,
            workflow=started.workflow,
            status=status,
            parent_id=started.parent_id,
            created_at=events[0].at,
            started_at=events[0].at,
            finished_at=finished,
        )
    return HistoryDocument(
        exported_by=f"durable {_version()}",
        exported_at=datetime.now(UTC),
        run=info,
        events=list(events),
    )


def encode_document(document: HistoryDocument, *, pretty: bool = False) -> bytes:
    """The document as JSON: compact (one line, for JSON lines), or ``pretty``: the envelope indented and one
    event per line, for reading and diffing.

    Pretty output never re-indents an event: payloads are written byte for byte as they were stored (a
    formatter would re-indent them, and an imported history would then differ from the original).
    """
    if not pretty:
        return _encoder.encode(document)
    head = msgspec.json.format(_encoder.encode(msgspec.structs.replace(document, events=[])), indent=2)
    assert head.endswith(b'"events": []\n}'), "events must be the document's last field"
    lines = b",\n".join(b"    " + _encoder.encode(rec) for rec in document.events)
    return head[: -len(b"[]\n}")] + b"[\n" + lines + b"\n  ]\n}"


def write_history(path: str | os.PathLike[str], documents: Sequence[HistoryDocument]) -> Path:
    """Write documents to ``path``: one indented document for ``.json``, one compact line each for ``.jsonl``.

    Written to a temporary file first and renamed, so a crash never leaves a half-written history behind.
    """
    target = Path(path)
    if target.suffix == ".jsonl":
        data = b"".join(encode_document(d) + b"\n" for d in documents)
    else:
        if len(documents) != 1:
            raise HistoryFileError(
                f"{target} would hold {len(documents)} runs, but a .json history file holds one: write to a "
                f".jsonl file (one run per line) or to a directory (one file per run)"
            )
        data = encode_document(documents[0], pretty=True) + b"\n"
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


# -- reading --------------------------------------------------------------------------------------------------


def load_history(source: str | os.PathLike[str] | bytes) -> HistoryDocument:
    """Load and check the one run of a history file (or of JSON bytes). Raises ``HistoryFileError``."""
    if isinstance(source, bytes):
        return decode_document(source, "the history")
    documents = list(iter_histories(source))
    if len(documents) != 1:
        raise HistoryFileError(
            f"{source} holds {len(documents)} runs where one was expected: pick one (`durable replay FILE "
            f"--run RUN_ID`), or load them all with durable.replay.load_histories()"
        )
    return documents[0][1]


def load_histories(source: str | os.PathLike[str]) -> list[HistoryDocument]:
    """Every run of a ``.json`` file, a ``.jsonl`` file, or a directory of them (sorted by file name)."""
    return [document for _, document in iter_histories(source)]


def history_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The history files in ``folder`` (``*.json`` and ``*.jsonl``, sorted): e.g. to parametrize a test."""
    base = Path(folder)
    if not base.is_dir():
        raise HistoryFileError(f"{base} is not a directory of history files (*.json, *.jsonl)")
    return sorted(p for p in base.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())


def iter_histories(source: str | os.PathLike[str]) -> Iterator[tuple[str, HistoryDocument]]:
    """``(where, document)`` for every run in a file or directory; ``where`` names the file (and line)."""
    path = Path(source)
    if path.is_dir():
        for file in history_files(path):
            yield from iter_histories(file)
        return
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HistoryFileError(f"{path}: no such file. Check the path (export one with `durable history export "
                               f"RUN_ID -o {path.name}`)") from None
    except OSError as exc:
        raise HistoryFileError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if path.suffix != ".jsonl":
        yield str(path), decode_document(data, str(path))
        return
    found = False
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            found = True
            where = f"{path} line {number}"
            yield where, decode_document(line, where)
    if not found:
        raise HistoryFileError(f"{path} is empty: a .jsonl history file holds one run per line")


def decode_document(data: bytes, where: str) -> HistoryDocument:
    """Decode and check one document; ``where`` names it in errors."""
    header = _decode_header(data, where)
    _check_header(header, where)
    try:
        document = _decode_without_gc(data)
    except msgspec.ValidationError as exc:
        raise _invalid(data, str(exc), where) from None
    except msgspec.DecodeError as exc:  # pragma: no cover - the header decode has seen the same JSON
        raise _malformed(data, str(exc), where) from None
    check_events(document, where)
    return document


def _decode_without_gc(data: bytes) -> HistoryDocument:
    """Decode with the cyclic GC paused. Decoding allocates one object per field of every event, and each
    collection the allocations trigger walks everything decoded so far: with the GC on, decoding a 100k-event
    history took 2.4 us/event against 0.4 us at 1k (0.7 us with it paused; benchmarks/bench_replay.py). Events
    hold no reference cycles, so nothing is left for the GC to find."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return _decoder.decode(data)
    finally:
        if paused:
            gc.enable()


def _decode_header(data: bytes, where: str) -> _Header:
    start = data.lstrip()[:1]
    if not start:
        raise HistoryFileError(f"{where} is empty: expected a Durable history (export one with "
                               f"`durable history export RUN_ID -o run.json`)")
    if start == b"[":
        raise HistoryFileError(
            f"{where} is a bare JSON list, not a Durable history document (which starts with "
            f'{{"format": "{FORMAT_NAME}", ...}}): export runs with `durable history export RUN_ID -o run.json`'
        )
    try:
        return _header_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _malformed(data, str(exc), where) from None
    except msgspec.ValidationError as exc:
        raise HistoryFileError(f"{where} is not a Durable history: {exc}") from None


def _check_header(header: _Header, where: str) -> None:
    if header.format is None:
        raise HistoryFileError(
            f'{where} has no "format" field, so it is not a Durable history file (`durable show --json` output '
            f"is not one either): export runs with `durable history export RUN_ID -o run.json`"
        )
    if header.format != FORMAT_NAME:
        raise HistoryFileError(f'{where} is not a Durable history: its "format" is {header.format!r}, '
                               f"expected {FORMAT_NAME!r}")
    version = header.version
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise HistoryFileError(f'{where} has an invalid "version" ({version!r}): a Durable history has an '
                               f"integer version, {HISTORY_FILE_VERSION} for this Durable")
    if version > HISTORY_FILE_VERSION:
        raise HistoryFileError(
            f"{where} was made by a newer Durable (history format {version}; this Durable {_version()} reads "
            f"format {HISTORY_FILE_VERSION} and older): upgrade Durable where you load it "
            f"(`pip install -U durable-engine`), or export it again with the older Durable"
        )


def _malformed(data: bytes, message: str, where: str) -> HistoryFileError:
    """A JSON syntax error, located by line and column, with the offending line."""
    if "truncated" in message:
        return HistoryFileError(
            f"{where} is cut short: the JSON ends in the middle of a value after {len(data):,} bytes (an "
            f"interrupted copy or download, or a file still being written?). Export the run again"
        )
    match = re.search(r"\(byte (\d+)\)", message)
    if match is None:
        return HistoryFileError(f"{where} is not valid JSON ({message}): export the run again")
    offset = int(match.group(1))
    line = data.count(b"\n", 0, offset) + 1
    line_start = data.rfind(b"\n", 0, offset) + 1
    line_end = data.find(b"\n", offset)
    text = data[line_start : line_end if line_end >= 0 else len(data)].decode("utf-8", "replace").strip()
    text = text if len(text) <= 80 else text[:79] + "…"
    return HistoryFileError(
        f"{where} is not valid JSON at line {line}, column {offset - line_start + 1} ({message.split(' (')[0]}): "
        f"{text!r}. Was it edited by hand? Fix that line, or export the run again"
    )


def _invalid(data: bytes, message: str, where: str) -> HistoryFileError:
    """A structural error; inside ``events``, name the entry, its ``seq`` and (for an unknown type) the type."""
    match = _PATH_IN_EVENTS.search(message)
    if match is None:
        return HistoryFileError(f"{where} is not a valid Durable history: {message}. Export the run again, or "
                                f"see docs/history-format.md for the fields")
    index, inner = int(match.group(1)), match.group(2)
    entry = _loose_entry(data, index)
    seq = f"event {entry.seq}" if isinstance(entry.seq, int) else f"entry {index + 1} of events"
    kind = entry.event.get("type") if isinstance(entry.event, dict) else None
    if inner == ".event.type" and isinstance(kind, str) and kind not in EVENT_TYPES:
        return HistoryFileError(
            f"{where}: {seq} has type {kind!r}, which this Durable ({_version()}) does not know (it knows "
            f"{', '.join(sorted(EVENT_TYPES))}). The file was made by a newer Durable (upgrade this one: "
            f"`pip install -U durable-engine`), or edited by hand (correct the event's type, or export it again)"
        )
    what = f" ({kind})" if isinstance(kind, str) else ""
    detail = message.split(" - at ")[0]
    return HistoryFileError(f"{where}: {seq}{what} is invalid: {detail} at `{inner.lstrip('.') or 'the entry'}`. "
                            f"Was it edited by hand? Correct it, or export the run again")


def _loose_entry(data: bytes, index: int) -> _LooseEntry:
    try:
        raw = msgspec.json.decode(data, type=_LooseDocument).events[index]
        return msgspec.json.decode(raw, type=_LooseEntry)
    except (msgspec.DecodeError, msgspec.ValidationError, IndexError):  # pragma: no cover - best effort only
        return _LooseEntry()


def check_events(document: HistoryDocument, where: str) -> None:  # one check per kind of impossible history
    """Raise ``HistoryFileError`` unless ``document`` is a history the engine could have written."""
    events = document.events
    if not events:
        raise HistoryFileError(f"{where} has no events: a history has at least its run_started event")
    first = events[0]
    if not isinstance(first.event, RunStarted):
        raise HistoryFileError(
            f"{where}: the first event (seq {first.seq}) is {_tag(first)}, but every history starts with "
            f"run_started (the workflow, its input and random seed): the file was cut at the start or edited"
        )
    started = first.event
    if (document.run.id, document.run.workflow) != (started.run_id, started.workflow):
        raise HistoryFileError(
            f"{where}: the run section says run {document.run.id!r} of workflow {document.run.workflow!r}, but "
            f"its run_started event says run {started.run_id!r} of {started.workflow!r}: the file was edited"
        )
    issued: set[int] = set()
    for position, rec in enumerate(events, start=1):
        if rec.seq != position:
            raise HistoryFileError(_seq_problem(where, events, position))
        if rec.at.tzinfo is None:
            raise HistoryFileError(f"{where}: event {rec.seq} has a time without a timezone ({rec.at}): times in "
                                   f"a history are UTC, e.g. 2026-01-31T12:00:00Z")
        event = rec.event
        if position > 1 and isinstance(event, RunStarted):
            raise HistoryFileError(f"{where}: event {rec.seq} is a second run_started; a history has one, first")
        if isinstance(event, TERMINAL_EVENTS) and position != len(events):
            raise HistoryFileError(
                f"{where}: event {rec.seq} ({_tag(rec)}) ends the run, yet {len(events) - position} event(s) "
                f"follow it: the file was edited or two histories were joined"
            )
        if isinstance(event, _INTRODUCING):
            issued.add(event.command_id)
        elif isinstance(event, _OUTCOMES) and event.command_id not in issued:
            before = _OUTCOME_OF[type(event)].__struct_config__.tag
            raise HistoryFileError(
                f"{where}: event {rec.seq} ({_tag(rec)} of command #{event.command_id}) has no {before} of "
                f"command #{event.command_id} before it: the file was edited or events were removed"
            )


def _seq_problem(where: str, events: Sequence[RecordedEvent], position: int) -> str:
    seq = events[position - 1].seq
    if seq < position:
        return (f"{where}: event {seq} appears twice (again at position {position}): events were duplicated or "
                f"two histories joined. Each seq appears once, counting 1, 2, 3, …")
    return (f"{where}: events jump from seq {position - 1} to seq {seq}: event {position} is missing (the file was "
            f"cut or edited). A history counts 1, 2, 3, … without gaps; export the run again")


def _tag(rec: RecordedEvent) -> str:
    return str(rec.event.__struct_config__.tag)


def _version() -> str:
    from durable import __version__

    return __version__
