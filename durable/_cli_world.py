"""``durable send-event`` and ``durable inputs list|provide``: talk to runs that wait on the world; and the parts
of ``durable show`` that describe a run's world (parent, children, continue-as-new chain, state, open inputs).

Every refusal is one paragraph on stderr with exit code 1 (a run that does not exist, has finished, or does not
wait for that input; an answer given twice); an answer that does not fit the input's schema is reported field by
field, and the input stays pending. A ``--data``/``--value`` that is not JSON is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from history import PendingInput, RunAlreadyFinished, RunNotFound, RunRecord

from . import _format
from ._cli import UsageError, _limit
from ._engine import Engine
from ._execution import Execution, execution_from
from .errors import InputAlreadyProvided, InputValidationError

_SUMMARY_LIMIT = 60
"""Characters of the "expects" column of the inputs table (the full spec is in ``--json``)."""


# -- arguments --------------------------------------------------------------------------------------------------


def add_commands(add: Any, common: list[argparse.ArgumentParser]) -> None:
    """Register ``send-event`` and ``inputs`` (``list``, ``provide``): ``add`` makes a command's parser,
    ``common`` holds the global options (accepted after an action too)."""
    p = add("send-event", help="send an external event to a run (ctx.wait_for_event receives it)")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("name", metavar="NAME", help="the event's name, as the workflow waits for it")
    p.add_argument("--data", metavar="JSON", help="the event's payload, one JSON value (default: null)")
    p.set_defaults(command=cmd_send_event)

    inputs = add("inputs", help="questions runs wait on (ctx.wait_for_input): list, provide")
    actions = inputs.add_subparsers(metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=common, help="pending inputs, oldest first, with their schema")
    listing.add_argument("--run", metavar="RUN_ID", help="only this run's")
    listing.add_argument("--workflow", metavar="W", help="only runs of this workflow")
    listing.add_argument("--limit", type=_limit, default=100, metavar="N", help="at most N (1-1000, default 100)")
    listing.add_argument("--json", action="store_true", help="the full specs as JSON, for a UI or a script")
    listing.set_defaults(command=cmd_inputs_list)
    provide = actions.add_parser("provide", parents=common, help="answer a pending input (checked against its schema)")
    provide.add_argument("run_id", metavar="RUN_ID")
    provide.add_argument("key", metavar="KEY", help="the input's key (see `durable inputs list`)")
    provide.add_argument("--value", required=True, metavar="JSON",
                         help='the answer, one JSON value: \'"approve"\', \'["a", "b"]\', \'{"laptop": "mac"}\'')
    provide.set_defaults(command=cmd_inputs_provide)


def parse_json(text: str | None, flag: str) -> Any:
    """One JSON value from a command-line option (``None`` when the option was not given)."""
    if text is None:
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        bare = text.strip()
        quote = f" A text is a JSON string: {flag} '\"{bare}\"'." if bare and bare[0] not in "{[\"" else ""
        raise UsageError(f"{flag} is not valid JSON ({exc}): {text!r}.{quote} Quote it for the shell, e.g. "
                         f"{flag} '{{\"amount\": 42}}' (strings need double quotes inside).") from None


# -- commands ---------------------------------------------------------------------------------------------------


async def cmd_send_event(args: argparse.Namespace) -> int:
    """Send an event to a run; it is kept until the run waits for it."""
    data = parse_json(args.data, "--data")
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        try:
            await engine.send_event(args.run_id, args.name, data)
        except RunAlreadyFinished as exc:
            raise await _chain_hint(engine, args.run_id, exc, f"send-event {{}} {args.name} …") from None
    print(f"event {args.name!r} sent to run {args.run_id}: it is delivered when the run waits for it "
          f"(see `durable show {args.run_id}`)")
    return 0


async def cmd_inputs_list(args: argparse.Namespace) -> int:
    """Print the pending inputs as a table, or with ``--json`` every field and the full spec."""
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        if args.run is not None:
            await _run(engine, args.run)  # an unknown run is an error, not an empty list
        pending = await engine.list_pending_inputs(args.run, workflow=args.workflow, limit=args.limit)
    if args.json:
        document = msgspec.json.encode([input_document(p) for p in pending])
        print(msgspec.json.format(document, indent=2).decode())
        return 0
    if not pending:
        where = f" of run {args.run}" if args.run else (f" of workflow {args.workflow}" if args.workflow else "")
        print(f"no pending inputs{where}")
        return 0
    style = _format.Style.for_stream(sys.stdout)
    print(inputs_table(pending, style, with_run=True))
    first = pending[0]
    print(f"answer one with `durable inputs provide {first.run_id} {first.key} --value JSON`; the schemas: "
          f"`durable inputs list --json`", file=sys.stderr)
    return 0


async def cmd_inputs_provide(args: argparse.Namespace) -> int:
    """Answer an input; a value that does not fit its schema is refused field by field (exit 1)."""
    value = parse_json(args.value, "--value")
    async with Engine(args.database_url, worker=False, create_schema=False) as engine:
        try:
            await engine.provide_input(args.run_id, args.key, value)
        except InputValidationError as exc:  # several lines, one per field: not the one-paragraph report
            print(f"error: {exc}\n(not applied: the input is still pending; its schema: "
                  f"`durable inputs list --run {args.run_id} --json`)", file=sys.stderr)
            return 1
        except InputAlreadyProvided:  # the engine's message lists the inputs still pending: none, here
            raise InputAlreadyProvided(
                f"input {args.key!r} of run {args.run_id!r} was provided already: this answer was not applied"
            ) from None
        except RunNotFound:  # the store's message names neither the database nor where to find ids
            raise RunNotFound(
                f"no run with id {args.run_id!r} in {engine.url}: check the id with `durable list`"
            ) from None
        except RunAlreadyFinished as exc:
            raise await _chain_hint(engine, args.run_id, exc, f"inputs provide {{}} {args.key} …") from None
    print(f"input {args.key!r} of run {args.run_id} provided: {_format.short(value, 80)}")
    return 0


async def _chain_hint(engine: Engine, run_id: str, exc: RunAlreadyFinished, usage: str) -> RunAlreadyFinished:
    """``exc``, naming for a run that continued as new the run of its chain that takes messages now: a continued
    run takes none, its successor (``order-1~2``) does."""
    current = execution_from(await _run(engine, run_id))
    while current.continued_as is not None:  # ids only grow along a chain (x, x~1, x~2): no cycle
        current = execution_from(await _run(engine, current.continued_as))
    if current.id == run_id:
        return exc
    hint = f": `durable {usage.format(current.id)}`" if current.finished_at is None else ""
    return RunAlreadyFinished(f"{exc}; its chain goes on as run {current.id} ({current.status}){hint}")


async def _run(engine: Engine, run_id: str) -> RunRecord:
    run = await engine.store.get_run(run_id)
    if run is None:
        raise RunNotFound(f"no run with id {run_id!r} in {engine.url}: check the id with `durable list`")
    return run


# -- rendering --------------------------------------------------------------------------------------------------


def input_document(pending: PendingInput) -> dict[str, Any]:
    """A pending input as JSON for ``--json``: every field, the spec decoded (what a UI renders)."""
    return {
        "run_id": pending.run_id,
        "workflow": pending.workflow,
        "key": pending.key,
        "prompt": pending.prompt,
        "spec": msgspec.json.decode(pending.spec),
        "asked_at": pending.created_at,
        "timeout_at": pending.timeout_at,
    }


def inputs_table(pending: Sequence[PendingInput], style: _format.Style, *, with_run: bool) -> str:
    """One row per pending input: (run,) key, prompt, what it expects, when it was asked, its timeout."""
    rows: list[list[_format.Cell]] = []
    for p in pending:
        row: list[_format.Cell] = [p.run_id] if with_run else []
        row += [
            (p.key, "bold"),
            _format.cut(p.prompt, 50),
            _format.cut(spec_summary(msgspec.json.decode(p.spec)), _SUMMARY_LIMIT),
            _format.when(p.created_at),
            _format.when(p.timeout_at) if p.timeout_at else "none",
        ]
        rows.append(row)
    headers = ["run"] if with_run else []
    return _format.table([*headers, "key", "prompt", "expects", "asked", "timeout"], rows, style)


def spec_summary(spec: dict[str, Any]) -> str:
    """What an input expects, in a few words: ``one of approve|reject``, ``form: laptop* (mac|thinkpad), …``."""
    kind = spec.get("type", "text")
    if kind == "single_choice":
        return "one of " + _choices(spec.get("choices", []))
    if kind == "multi_choice":
        return "list of " + _choices(spec.get("choices", []))
    if kind == "form":
        return "form: " + ", ".join(_field_summary(field) for field in spec.get("fields", []))
    limit = spec.get("max_length")
    return "text" + (f" (max {limit} chars)" if limit is not None else "")


def _choices(choices: Sequence[Any]) -> str:
    return "|".join(c if isinstance(c, str) else _format.short(c) for c in choices)


def _field_summary(field: dict[str, Any]) -> str:
    """``name*`` for a required field, then its type or options, and limits: ``qty (number 1..10)``."""
    kind = field.get("type", "text")
    if kind == "select":
        detail = _choices(field.get("options", []))
    elif kind == "number" and (field.get("min") is not None or field.get("max") is not None):
        low, high = field.get("min"), field.get("max")
        detail = f"number {'' if low is None else low}..{'' if high is None else high}"
    elif kind == "text" and field.get("max_length") is not None:
        detail = f"text, max {field['max_length']}"
    else:
        detail = kind
    return f"{field.get('name')}{'*' if field.get('required') else ''} ({detail})"


# -- durable show -----------------------------------------------------------------------------------------------


class WorldView(msgspec.Struct, frozen=True):
    """What ``durable show`` adds about a run's world: its children (with statuses) and its pending inputs."""

    children: list[Execution]
    pending_inputs: list[PendingInput]

    def as_json(self) -> dict[str, Any]:
        """The extra keys of ``durable show --json``."""
        return {
            "children": [{"id": c.id, "workflow": c.workflow, "status": c.status} for c in self.children],
            "pending_inputs": [input_document(p) for p in self.pending_inputs],
        }


async def world_view(engine: Engine, execution: Execution) -> WorldView:
    """Read the run's children (one query) and, unless it has finished, its pending inputs."""
    children = [execution_from(run) for run in await engine.store.list_children(execution.id)]
    pending = [] if execution.finished_at is not None else await engine.list_pending_inputs(execution.id)
    return WorldView(children, pending)


def world_sections(execution: Execution, view: WorldView, style: _format.Style) -> list[str]:
    """The sections of ``durable show`` after the summary: state, pending inputs, children (those that apply)."""
    sections = []
    if execution.state:
        state = msgspec.json.format(msgspec.json.encode(execution.state), indent=2).decode()
        body = "\n".join("  " + line for line in state.splitlines())
        sections.append(style("\nState (ctx.set_state)", "bold") + "\n" + body)
    if view.pending_inputs:
        sections.append(style(f"\nWaiting for input ({len(view.pending_inputs)})", "bold") + "\n"
                        + inputs_table(view.pending_inputs, style, with_run=False) + "\n"
                        + style(f"  answer with `durable inputs provide {execution.id} "
                                f"{view.pending_inputs[0].key} --value JSON`", "dim"))
    if view.children:
        sections.append(style(f"\nChildren ({len(view.children)})", "bold") + "\n"
                        + _format.execution_table(view.children, style))
    return sections
