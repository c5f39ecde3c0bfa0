"""One encoder and one decoder for events and user payloads, built once and reused.

Events are stored as compact JSON (``msgspec.json``): readable with ``psql``, exported without conversion, and
user payloads inside them stay ``msgspec.Raw`` slices that are never re-encoded.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._errors import PayloadError, PayloadTooLarge
from ._events import Event

MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
"""Largest encoded payload (input, step arguments or result) accepted; histories stay small and fast to replay."""

_event_encoder = msgspec.json.Encoder()
_event_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)
_payload_encoder = msgspec.json.Encoder(decimal_format="number")
_raw_null = msgspec.Raw(b"null")


def encode_event(event: Event) -> bytes:
    """Encode one event to its stored bytes."""
    return _event_encoder.encode(event)


def decode_event(data: bytes | memoryview) -> Event:
    """Decode stored bytes back to an event."""
    return _event_decoder.decode(data)


def event_type(event: Event) -> str:
    """The persisted tag of an event (``"step_completed"``)."""
    return event.__struct_config__.tag  # type: ignore[return-value]


def encode_payload(value: Any, *, what: str, max_bytes: int = MAX_PAYLOAD_BYTES) -> msgspec.Raw:
    """Encode a user value to JSON, naming ``what`` (e.g. "the result of step 'charge'") in any error."""
    if value is None:
        return _raw_null
    try:
        data = _payload_encoder.encode(value)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise PayloadError(
            f"{what} cannot be stored: {exc}. Durable stores values as JSON: use dicts, lists, str, int, float, "
            f"bool, None, datetime, UUID, Decimal, dataclasses or msgspec Structs "
            f"(got a value of type {type(value).__qualname__})."
        ) from None
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"{what} is {len(data):,} bytes encoded, over the limit of {max_bytes:,} bytes. Store large data "
            f"elsewhere (a file, an object store) and pass a reference to it instead."
        )
    return msgspec.Raw(data)


def decode_payload(raw: msgspec.Raw | bytes, type_: Any = Any) -> Any:
    """Decode a JSON payload, converting it to ``type_`` when a type is known (e.g. a step's return annotation)."""
    if type_ is Any:
        return msgspec.json.decode(raw)
    return msgspec.json.decode(raw, type=type_)
