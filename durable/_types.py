"""Typed decoding of recorded payloads, driven by a function's annotations (resolved once, at first use)."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec


def _decoder_for(annotation: Any) -> msgspec.json.Decoder[Any] | None:
    if annotation in (inspect.Parameter.empty, Any, None, type(None)):
        return None
    try:
        return msgspec.json.Decoder(annotation)
    except (TypeError, ValueError):  # a type msgspec cannot decode into: hand back plain JSON values
        return None


@functools.cache
def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    # Resolved once per function: get_type_hints re-parses string annotations on every call, which profiled at
    # ~10% of a busy worker's CPU when it ran for every run.
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


class ResultDecoder:
    """Decodes a raw JSON result into the function's return annotation, falling back to plain JSON values
    when the recorded value does not fit it (the same way live and on replay, so both see the same value)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._decoder: msgspec.json.Decoder[Any] | None = None
        self._resolved = False

    def __call__(self, raw: msgspec.Raw | bytes) -> Any:
        if not self._resolved:
            self._decoder = _decoder_for(_hints(self._fn).get("return", inspect.Parameter.empty))
            self._resolved = True
        if self._decoder is not None:
            try:
                return self._decoder.decode(raw)
            except msgspec.ValidationError:
                pass
        return msgspec.json.decode(raw)


def convert_arguments(fn: Callable[..., Any], names: list[str], values: list[Any]) -> list[Any]:
    """Convert decoded JSON arguments to the parameters' annotated types where msgspec can (dataclasses,
    Structs, datetimes...); a value that does not fit is passed as it is."""
    hints = _hints(fn)
    converted = []
    for name, value in zip(names, values, strict=False):
        hint = hints.get(name)
        if hint is None or hint is Any:
            converted.append(value)
            continue
        try:
            converted.append(msgspec.convert(value, hint))
        except (msgspec.ValidationError, TypeError, ValueError):
            converted.append(value)
    return converted
