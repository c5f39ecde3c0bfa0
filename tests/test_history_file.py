"""The history file format: round trips byte for byte, matches its JSON Schema, and every bad file is refused
with one paragraph that says what is wrong, where, and what to do."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

import durable
from durable._history_file import (
    FORMAT_NAME,
    HistoryDocument,
    encode_document,
    iter_histories,
    load_histories,
    load_history,
    make_document,
    write_history,
)
from history import (
    EVENT_TYPES,
    FORMAT_VERSION,
    CancelRequested,
    ChildFinished,
    ChildStarted,
    ErrorInfo,
    EventWaitStarted,
    InputRequested,
    MemoryStore,
    MessageReceived,
    RecordedEvent,
    RunContinued,
    RunStarted,
    StateUpdated,
)

from . import wf_samples as wf

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "history-format.schema.json").read_text())
GOLDEN = Path(__file__).parent / "golden"


def record(workflow: durable.Workflow, *args: Any, cancel: bool = False) -> list[RecordedEvent]:
    """Run ``workflow`` on an in-memory engine (to its end, or cancelled while it sleeps); return its history."""

    async def main() -> list[RecordedEvent]:
        async with durable.Engine(store=MemoryStore(), workflows=[workflow], horizon=1.0) as engine:
            run = await engine.start(workflow, *args)
            if cancel:
                await asyncio.sleep(0.2)
                await engine.cancel(run.id, "enough")
            try:
                await run.result(timeout=10)
            except (durable.WorkflowFailed, durable.WorkflowCancelled):
                pass
            return await engine.get_history(run.id)

    return asyncio.run(main())


@durable.step
async def fetch(item: str) -> str:
    return f"<{item}>"


async def everything(ctx: durable.WorkflowContext, key: str) -> dict[str, Any]:
    """Every kind of event: steps (one retried), a timer, recorded values, a patch marker."""
    first = await fetch(key)
    retried = await wf.flaky(f"file-{key}", 1)
    await ctx.sleep(0.01)
    patched = ctx.patched("p1")
    return {"first": first, "retried": retried, "now": ctx.now().isoformat(), "id": str(ctx.uuid4()),
            "patched": patched}


async def sleeps_long(ctx: durable.WorkflowContext) -> None:
    await ctx.sleep(3600)


def waiting_on_the_world() -> list[RecordedEvent]:
    """A history with the events of waiting on the world (external events, inputs, children, state, cancel
    requests, continue-as-new), built from the event classes: what the engine will write for them."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    raw = msgspec.Raw
    events = [
        RunStarted(workflow="w", input=raw(b"[1]"), run_id="r", random_seed=1, deadline=at + timedelta(days=1),
                   continued_from="r0"),
        EventWaitStarted(command_id=1, name="approved", timeout_at=at + timedelta(hours=1)),
        MessageReceived(message_id=7, kind="event", name="approved", payload=raw(b'{"by":"ann"}')),
        InputRequested(command_id=2, key="amount", prompt="How much?", spec=raw(b'{"type":"number"}')),
        MessageReceived(message_id=8, kind="input", name="amount", payload=raw(b"12.5")),
        ChildStarted(command_id=3, child_id="r-child", workflow="w2", wait=True),
        ChildFinished(command_id=3, child_id="r-child", status="failed",
                      error=ErrorInfo(type="ValueError", message="no")),
        StateUpdated(key="progress", value=raw(b"0.5")),
        CancelRequested(reason="too slow", timeout=True),
        RunContinued(new_run_id="r2", input=raw(b"[2]")),
    ]
    return [RecordedEvent(seq=n, at=at, event=e) for n, e in enumerate(events, start=1)]


@pytest.fixture(scope="module")
def histories() -> dict[str, list[RecordedEvent]]:
    return {
        "everything": record(durable.Workflow(everything, name="everything"), "a"),
        "failed": record(wf.boom),
        "cancelled": record(durable.Workflow(sleeps_long, name="sleeps_long"), cancel=True),
        "waiting_on_the_world": waiting_on_the_world(),
    }


def kinds(events: list[RecordedEvent]) -> set[str]:
    return {e.event.__struct_config__.tag for e in events}  # type: ignore[misc]


# -- round trips ---------------------------------------------------------------------------------------------


def test_documents_round_trip_with_payloads_byte_for_byte(histories: dict[str, list[RecordedEvent]]) -> None:
    events = histories["everything"]
    assert kinds(events) >= {"run_started", "step_scheduled", "step_failed", "step_completed", "timer_started",
                             "timer_fired", "value_recorded", "patch_marked", "run_completed"}
    document = make_document(events)
    assert (document.format, document.version, document.run.status) == (FORMAT_NAME, FORMAT_VERSION, "completed")
    for pretty in (False, True):
        data = encode_document(document, pretty=pretty)
        loaded = load_history(data)
        assert loaded.events == events  # msgspec.Raw compares bytes: payloads were not re-encoded
        assert loaded.run == document.run
    compact = encode_document(document)
    assert b"\n" not in compact
    pretty_lines = encode_document(document, pretty=True).decode().splitlines()
    assert sum(line.startswith('    {"seq":') for line in pretty_lines) == len(events)  # one event a line


def test_json_lines_and_directories_hold_many_runs(tmp_path: Path, histories: dict[str, list[RecordedEvent]]) -> None:
    documents = [make_document(events) for events in histories.values()]
    write_history(tmp_path / "runs.jsonl", documents)
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 4
    loaded = list(iter_histories(tmp_path / "runs.jsonl"))
    assert [where for where, _ in loaded] == [f"{tmp_path / 'runs.jsonl'} line {n}" for n in (1, 2, 3, 4)]
    assert [d.events for _, d in loaded] == list(histories.values())
    write_history(tmp_path / "one.json", documents[:1])
    assert [d.run.id for d in load_histories(tmp_path)] == [d.run.id for d in [documents[0], *documents]]
    with pytest.raises(durable.HistoryFileError, match=r"holds 4 runs where one was expected"):
        load_history(tmp_path / "runs.jsonl")
    with pytest.raises(durable.HistoryFileError, match=r"would hold 4 runs.*\.jsonl"):
        write_history(tmp_path / "many.json", documents)
    assert not (tmp_path / "many.json").exists()


# -- the JSON Schema ---------------------------------------------------------------------------------------------


def test_exported_files_validate_against_the_json_schema(
    tmp_path: Path, histories: dict[str, list[RecordedEvent]]
) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    files = sorted(GOLDEN.glob("*.json"))
    for name, events in histories.items():
        files.append(write_history(tmp_path / f"{name}.json", [make_document(events)]))
    covered: set[str] = set()
    for path in files:
        document = json.loads(path.read_text())
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert errors == [], path
        covered |= {entry["event"]["type"] for entry in document["events"]}
    assert covered == set(EVENT_TYPES)  # every event kind was checked against its schema


def test_the_schema_rejects_what_the_loader_rejects(histories: dict[str, list[RecordedEvent]]) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    good = json.loads(encode_document(make_document(histories["everything"])))
    for mutate in (
        lambda d: d["events"][2]["event"].update(type="step_teleported"),
        lambda d: d.update(version=FORMAT_VERSION + 1),
        lambda d: d["events"][0]["event"].update(type="timer_fired", command_id=1),
        lambda d: d["events"][1]["event"].pop("name"),
        lambda d: d["events"][1].update(at="yesterday"),
    ):
        bad = json.loads(json.dumps(good))
        mutate(bad)
        assert not validator.is_valid(bad)


def test_the_schema_describes_every_event_field_of_the_code() -> None:
    """The schema is a second description of history/_events.py; this keeps the two in step."""
    defs = SCHEMA["$defs"]
    assert [ref["$ref"].split("/")[-1] for ref in defs["event"]["oneOf"]] == list(EVENT_TYPES)
    assert defs["event"]["properties"]["type"]["enum"] == list(EVENT_TYPES)
    for tag, cls in EVENT_TYPES.items():
        fields = msgspec.structs.fields(cls)
        schema = defs[tag]
        assert set(schema["properties"]) == {"type"} | {f.encode_name for f in fields}, tag
        assert set(schema["required"]) == {"type"} | {f.encode_name for f in fields if f.required}, tag
    run_fields = msgspec.structs.fields(durable.replay.RunInfo)
    assert set(defs["run"]["properties"]) == {f.encode_name for f in run_fields}
    envelope = msgspec.structs.fields(HistoryDocument)
    assert set(SCHEMA["properties"]) == {f.encode_name for f in envelope}


# -- bad files: one paragraph each, naming what and where ----------------------------------------------------------


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    return write_history(tmp_path / "run.json", [make_document(load_history(GOLDEN / "arith.json").events)])


def _edit(path: Path, old: str, new: str, count: int = 1) -> Path:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, count))
    return path


def _entries(path: Path, change: Any) -> Path:
    """Rewrite the file's events list with ``change(list of entry dicts)``."""
    document = json.loads(path.read_text())
    document["events"] = change(document["events"])
    path.write_text(json.dumps(document))
    return path


def _drop(index: int) -> Any:
    return lambda entries: entries[:index] + entries[index + 1 :]


BAD_FILES: dict[str, tuple[Any, list[str]]] = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:900]),
                  ["is cut short", "after 900 bytes", "Export the run again"]),
    "garbled json": (lambda p: _edit(p, '"version": 1,', '"version": 1,,'),
                     ["is not valid JSON at line 3, column 16", "'\"version\": 1,,'", "edited by hand"]),
    "unknown event type": (lambda p: _edit(p, '"type":"step_completed"', '"type":"step_teleported"'),
                           ["event 3 has type 'step_teleported'", "does not know", "step_completed"]),
    "newer format": (lambda p: _edit(p, '"version": 1', '"version": 2'),
                     ["made by a newer Durable (history format 2", "reads format 1", "upgrade Durable"]),
    "not a history": (lambda p: p.write_text('{"format": "something.else", "version": 1}'),
                      ["is not a Durable history", "'something.else'"]),
    "show --json output": (lambda p: p.write_text('{"execution": {}, "history": []}'),
                           ['has no "format" field', "durable show --json", "durable history export"]),
    "bare list": (lambda p: p.write_text("[]"), ["is a bare JSON list", "durable history export"]),
    "empty": (lambda p: p.write_text("  \n"), ["is empty"]),
    "wrong field type": (lambda p: _edit(p, '"attempt":1', '"attempt":"one"'),
                         ["event 3 (step_completed) is invalid: Expected `int`, got `str` at `event.attempt`"]),
    "missing event": (lambda p: _entries(p, _drop(4)),
                      ["events jump from seq 4 to seq 6: event 5 is missing"]),
    "duplicate event": (lambda p: _entries(p, lambda e: e[:3] + e[2:]), ["event 3 appears twice"]),
    "no run_started": (lambda p: _entries(p, _drop(0)),
                       ["the first event (seq 2) is step_scheduled", "starts with run_started"]),
    "events after the end": (lambda p: _entries(p, lambda e: [*e, {**e[-2], "seq": len(e) + 1}]),
                             ["event 10 (run_completed) ends the run, yet 1 event(s) follow it"]),
    "outcome of no command": (lambda p: _entries(p, lambda e: [*e[:3], *[{**x, "seq": x["seq"] - 1} for x in e[4:]]]),
                              ["event 4 (step_completed of command #2) has no step_scheduled of command #2"]),
    "naive time": (lambda p: _edit(p, '"at":"2026-11-25T20:24:15.891556Z"', '"at":"2026-11-25T20:24:15.891556"'),
                   ["event 2 has a time without a timezone"]),
    "run section edited": (lambda p: _edit(p, '"id": "golden-arith"', '"id": "other"'),
                           ["the run section says run 'other'", "its run_started event says run 'golden-arith'"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_refused_with_one_paragraph(case: str, good_file: Path) -> None:
    damage, expected = BAD_FILES[case]
    damage(good_file)
    with pytest.raises(durable.HistoryFileError) as info:
        load_history(good_file)
    message = str(info.value)
    assert message.startswith(str(good_file)) and "\n" not in message, message
    for text in expected:
        assert text in message, message


def test_a_bad_line_of_a_json_lines_file_is_named(tmp_path: Path, histories: dict[str, list[RecordedEvent]]) -> None:
    path = write_history(tmp_path / "runs.jsonl", [make_document(e) for e in histories.values()])
    lines = path.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(durable.HistoryFileError, match=r"runs\.jsonl line 2 is cut short"):
        load_histories(path)


def test_missing_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(durable.HistoryFileError, match=r"no such file.*durable history export"):
        load_history(tmp_path / "nope.json")
    with pytest.raises(durable.HistoryFileError, match=r"is not a directory of history files"):
        durable.replay.history_files(tmp_path / "nope")


def test_exported_documents_describe_the_run(histories: dict[str, list[RecordedEvent]]) -> None:
    failed = make_document(histories["failed"])
    assert failed.run.status == "failed" and failed.run.finished_at == histories["failed"][-1].at
    cancelled = make_document(histories["cancelled"])
    assert cancelled.run.status == "cancelled"
    assert make_document(histories["waiting_on_the_world"]).run.status == "continued"
    in_flight = make_document(histories["everything"][:4])
    assert (in_flight.run.status, in_flight.run.finished_at) == ("running", None)
    assert in_flight.exported_by == f"durable {durable.__version__}"
    assert abs(in_flight.exported_at - datetime.now(UTC)) < timedelta(minutes=1)  # type: ignore[operator]


# -- the events of waiting on the world: imported and shown ---------------------------------------------------------


async def test_import_restores_status_result_and_published_state() -> None:
    from durable._history_transfer import import_document

    events = waiting_on_the_world()
    store = MemoryStore()
    assert await import_document(store, make_document(events), "w.json") is True
    run = await store.get_run("r")
    assert run is not None and (run.status, run.continued_from) == ("continued", "r0")
    assert msgspec.json.decode(run.result) == "r2"  # the run that carries on
    assert run.state is not None and msgspec.json.decode(run.state) == {"progress": 0.5}
    stored = await store.read_history("r")
    assert [r.event for r in stored] == [r.event for r in events]
    assert [r.at for r in stored[1:]] == [r.at for r in events[1:]]
    assert await import_document(store, make_document(events), "w.json") is False  # the same again: a no-op


def test_the_history_table_summarises_every_event_kind() -> None:
    from durable._cli_history import _details

    lines = [_details(r.event) for r in waiting_on_the_world()]
    assert lines[1:] == [
        "event 'approved', until " + lines[1].split("until ")[1],
        "event 'approved' = {\"by\":\"ann\"}",
        "input 'amount': How much?",
        "input 'amount' = 12.5",
        "run r-child of w2, awaited",
        "run r-child failed: ValueError: no",
        "progress = 0.5",
        "reason: too slow (the run's timeout)",
        "continued as run r2, input [2]",
    ]
