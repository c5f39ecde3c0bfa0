"""The sample workflow behind ``durable demo``, and the demo runner.

``process_order`` is small but real: a step, a step whose first attempt fails and is retried, a durable sleep,
a recorded value, and three steps in parallel. Serve it from another process with ``durable worker durable._demo``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from datetime import datetime, timedelta
from typing import IO, Any

import msgspec

import durable
from history import (
    DurableError,
    RecordedEvent,
    RunCancelled,
    RunCompleted,
    RunFailed,
    StepCompleted,
    StepFailed,
    TimerFired,
    TimerStarted,
    default_url,
    event_type,
)

from . import _format
from ._engine import Engine

DEMO_ORDER = {"order_id": "A-1001", "items": ["book", "lamp", "mug"], "amount": 42.5}
"""The demo's input; ``durable start process_order --input`` takes the same shape."""

log = logging.getLogger("demo.shop")
"""The demo steps' logger: what it logs is kept per step attempt (``durable logs <run id>``)."""

_DEMO_TIMEOUT = 30.0
"""The demo's run takes about two seconds; past this, something is wrong and the user is told so."""


class PaymentGatewayTimeout(ConnectionError):
    """What the demo's payment gateway raises on a first attempt."""


@durable.step
async def check_inventory(items: list[str]) -> dict[str, int]:
    """Pretend to look the items up in a warehouse."""
    await asyncio.sleep(0.05)
    stock = {item: 3 + len(item) for item in items}
    log.info("stock checked for %d items", len(items), extra={"stock": stock})
    return stock


@durable.step(retry=durable.Retry(max_attempts=3, backoff="constant", base=0.5))
async def charge_payment(order_id: str, amount: float) -> str:
    """Charge the customer. The first attempt of every charge fails, to show a retry.

    The attempt number comes from ``durable.current_step()``, not a global counter, so the outcome is the same
    whichever process runs the attempt.
    """
    await asyncio.sleep(0.08)
    step = durable.current_step()
    log.info("charging %s: %.2f", order_id, amount)
    if step is not None and step.attempt == 1:
        raise PaymentGatewayTimeout("payment gateway timed out (on purpose: the demo fails every first attempt)")
    return f"ch_{order_id.lower()}_{int(amount * 100)}"


@durable.step
async def ship_item(order_id: str, item: str) -> str:
    """Hand one item to a carrier; the three run at the same time."""
    await asyncio.sleep(0.1 + 0.03 * len(item))
    log.info("%s handed to the carrier", item)
    return f"{order_id}/{item}: shipped"


@durable.workflow
async def process_order(ctx: durable.WorkflowContext, order: dict[str, Any]) -> dict[str, Any]:
    """Check stock, charge (retried once), wait a second, ship every item in parallel, return a summary."""
    order_id = str(order.get("order_id", "A-0"))
    items = [str(item) for item in order.get("items", [])]
    ctx.logger.info("order %s: %d items", order_id, len(items))  # logged once, never again on replay
    stock = await check_inventory(items)
    charge_id = await charge_payment(order_id, float(order.get("amount", 0.0)))
    placed_at = ctx.now()
    await ctx.sleep(1)  # a durable timer: a restart during it resumes here, without redoing the steps above
    shipments = await asyncio.gather(*(ship_item(order_id, item) for item in items))
    return {
        "order_id": order_id,
        "charge": charge_id,
        "in_stock": stock,
        "shipments": list(shipments),
        "placed_at": placed_at.isoformat(timespec="seconds"),
    }


# -- the `durable demo` runner ------------------------------------------------------------------------------


async def run_demo(url: str, out: IO[str] = sys.stdout) -> int:
    """Run ``process_order`` end to end with an in-process worker on ``url``, narrating it; return 0."""
    style = _format.Style.for_stream(out)
    workflow_id = f"order-{secrets.token_hex(4)}"
    async with Engine(url, workflows=[process_order]) as engine:
        print(style(f"Durable demo: running workflow process_order on {engine.url}", "bold"), file=out)
        print(f"  input {_format.short(DEMO_ORDER, 200)}", file=out)
        handle = await engine.start(process_order, DEMO_ORDER, workflow_id=workflow_id)
        print(f"  run id {handle.id}\n", file=out)
        events = await _follow(engine, handle.id, out, style)
        execution = await engine.get_execution(handle.id)
    print(file=out)
    print(_format.execution_summary(execution, style), file=out)
    print(style(f"\nEvent history ({len(events)} events)", "bold"), file=out)
    print(_format.history_table(events, style), file=out)
    print(_next_steps(handle.id, style, url), file=out)
    return 0 if execution.status == "completed" else 1


async def _follow(engine: Engine, run_id: str, out: IO[str], style: _format.Style) -> list[RecordedEvent]:
    """Print a line for each step outcome and timer as it is recorded, until the run finishes; return the
    whole history. Follows the run with ``engine.subscribe``, which ends after the run's last event."""
    start: datetime | None = None
    try:
        async with asyncio.timeout(_DEMO_TIMEOUT), engine.subscribe(run_id) as events:
            async for change in events:
                if change.seq is None or change.event is None:  # a live "step started": the outcome will say
                    continue
                start = start or change.at
                line = _progress_line(RecordedEvent(seq=change.seq, at=change.at, event=change.event), start, style)
                if line:
                    print(line, file=out, flush=True)
    except TimeoutError:
        raise DurableError(
            f"the demo run {run_id} did not finish within {_DEMO_TIMEOUT:g}s, which it should in about 2 s: see "
            f"where it stands with `durable show {run_id}`, and please report it"
        ) from None
    return list(await engine.get_history(run_id))


def _progress_line(rec: RecordedEvent, start: datetime, style: _format.Style) -> str | None:
    """One narrated line for a recorded step outcome, timer or end of run; ``None`` for other events."""
    event, at = rec.event, rec.at
    if isinstance(event, StepCompleted):
        tag, colour = "ok", "green"
        text = (
            f"{event.name}  attempt {event.attempt}, {_format.millis(event.duration_ms)} "
            f"-> {_format.short(event.result, 50)}"
        )
    elif isinstance(event, StepFailed):
        tag, colour = ("retry", "yellow") if event.retry_at else ("failed", "red")
        then = f"next attempt in {(event.retry_at - at).total_seconds():.1f}s" if event.retry_at else "no retry left"
        text = (
            f"{event.name}  attempt {event.attempt} failed after {_format.millis(event.duration_ms)}: "
            f"{event.error.type.rsplit('.', 1)[-1]}: {event.error.message}; {then}"
        )
    elif isinstance(event, TimerStarted):  # appended when it fires: date the line from when the sleep began
        at = event.fire_at - timedelta(seconds=event.seconds or 0.0)
        length = f"{event.seconds:g}s" if event.seconds is not None else f"until {_format.when(event.fire_at)}"
        tag, colour, text = "sleep", "cyan", f"{length}: ctx.sleep, a durable timer"
    elif isinstance(event, TimerFired):
        tag, colour, text = "awake", "cyan", "the next steps run in parallel (asyncio.gather)"
    elif isinstance(event, (RunCompleted, RunFailed, RunCancelled)):
        tag, colour, text = "done", "bold", event_type(event).replace("_", " ")
    else:
        return None
    clock = style(f"[{(at - start).total_seconds():5.2f}s]", "dim")
    return f"{clock} {style(tag.ljust(6), colour)} {text}"


def _next_steps(run_id: str, style: _format.Style, url: str) -> str:
    """What to try once the demo has run (on the same database: ``url``)."""
    order = msgspec.json.encode({**DEMO_ORDER, "order_id": "A-2002"}).decode()
    tips = [
        ("durable list", "the runs in this database, newest first"),
        (f"durable show {run_id}", "this run: its steps, result and event history"),
        (f"durable logs {run_id}", "what its steps (and ctx.logger) logged, per attempt"),
        ("durable stats", "runs, success rate and p50/p95/p99 durations per workflow"),
        ("durable worker durable._demo", "a worker process serving process_order (stop it with Ctrl-C); then,"),
        (f"durable start process_order --input '{order}' --wait", ""),
        ("", "in another terminal: start a run on that worker and wait for its result"),
        ("DURABLE_DATABASE_URL=postgresql://localhost/durable durable db upgrade", ""),
        ("", "use PostgreSQL instead of the embedded SQLite file (then any command)"),
        ("durable --help", "every command"),
    ]
    width = max(len(cmd) for cmd, text in tips if text) + 2
    lines = ["", style("What to try next", "bold")]
    if url != default_url():
        lines.append(f"  (this demo ran on {url}: add --database-url {url} after `durable` in each command)")
    for cmd, text in tips:
        shown = style(cmd, "cyan")
        lines.append(f"  {shown}" if not text else f"  {shown}{' ' * (width - len(cmd))}{style(text, 'dim')}")
    return "\n".join(lines)
