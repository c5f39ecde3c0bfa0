"""The engine's client calls for waiting runs: send events, list and answer people's inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from history import PendingInput, RunNotFound, encode_payload
from replay import input_spec

from .errors import InputNotPending, InputValidationError

if TYPE_CHECKING:
    from history import Store


class WorldClient:
    """Mixed into ``Engine``: everything here needs only the store."""

    store: Store

    def _require_open(self) -> None:  # pragma: no cover - provided by Engine
        raise NotImplementedError

    async def send_event(self, run_id: str, name: str, data: Any = None) -> None:
        """Send event ``name`` with ``data`` to a run; ``ctx.wait_for_event(name)`` receives it. An event sent
        before the run waits is kept until it does.

        Raises:
            RunNotFound: no such run.
            RunAlreadyFinished: the run has finished and takes no more events.
        """
        self._require_open()
        if not isinstance(name, str) or not name:
            raise ValueError(f"an event needs a non-empty string name, got {name!r}")
        payload = encode_payload(data, what=f"the data of event {name!r}")
        await self._to_run(run_id, "event", name, bytes(payload))

    async def list_pending_inputs(
        self, run_id: str | None = None, *, workflow: str | None = None, limit: int = 100
    ) -> list[PendingInput]:
        """Questions runs are waiting on (``ctx.wait_for_input``), oldest first, each with its prompt and its
        schema (``json.loads(pending.spec)``) so a UI can render it."""
        self._require_open()
        return await self.store.list_pending_inputs(run_id=run_id, workflow=workflow, limit=limit)

    async def provide_input(self, run_id: str, key: str, value: Any) -> None:
        """Answer input ``key`` of a run. The value is checked against the input's schema first.

        Raises:
            InputValidationError: the value does not fit; ``errors`` says what is wrong, field by field. The
                input stays pending.
            InputAlreadyProvided: it was answered already (the second answer is not applied).
            InputNotPending: the run does not wait for such an input.
            RunNotFound, RunAlreadyFinished.
        """
        self._require_open()
        pending = await self.store.list_pending_inputs(run_id=run_id, limit=1000)
        spec = next((p.spec for p in pending if p.key == key), None)
        if spec is not None:
            errors = input_spec.validate(msgspec.json.decode(spec), value)
            if errors:
                raise InputValidationError(run_id, key, errors)
        payload = encode_payload(value, what=f"the value of input {key!r}")
        try:
            await self.store.provide_input(run_id, key, bytes(payload))
        except InputNotPending as exc:
            waiting = ", ".join(repr(p.key) for p in pending) or "none"
            raise type(exc)(f"{exc} (inputs this run waits for: {waiting})") from None

    async def _to_run(self, run_id: str, kind: str, name: str, payload: bytes) -> None:
        try:
            await self.store.send_message(run_id, kind, name, payload)
        except RunNotFound:
            raise RunNotFound(
                f"no run with id {run_id!r} in {self.store.url}: check the id with `durable list`"
            ) from None
