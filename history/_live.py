"""Live-only notices: a step attempt started (it is in the history only once it ends).

A step's ``StepScheduled`` event is written together with the attempt's outcome, in one commit (one round trip
per step; docs/architecture.md). So that a subscriber can show a step as running while it runs, the worker sends
a ``StepNotice`` when an attempt starts: through the store's hub in this process and, on PostgreSQL, a
best-effort NOTIFY to other processes. Notices are never stored and never needed for correctness.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class StepNotice(msgspec.Struct, frozen=True, array_like=True):
    """Attempt ``attempt`` of the step ``name`` (command ``command_id``) of run ``run_id`` started at ``at``.

    ``array_like``: sent as a compact JSON array in a NOTIFY payload (under its 8000-byte limit).
    """

    run_id: str
    workflow: str
    command_id: int
    name: str
    attempt: int
    at: datetime


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StepNotice)

MAX_NOTICE_BYTES = 7900
"""Longest notice payload sent by NOTIFY (PostgreSQL refuses payloads of 8000 bytes or more)."""


def encode_notice(notice: StepNotice) -> str | None:
    """The NOTIFY payload of ``notice``, or ``None`` when its names make it too long to send."""
    payload = _encoder.encode(notice)
    return payload.decode() if len(payload) < MAX_NOTICE_BYTES else None


def decode_notice(payload: str) -> StepNotice | None:
    """The notice in a NOTIFY payload, or ``None`` for one this version cannot read (sent by another version)."""
    try:
        return _decoder.decode(payload)
    except msgspec.DecodeError:
        return None
