"""Schemas of human inputs (``ctx.wait_for_input``): built and checked when asked, validated when answered.

A spec is a plain JSON object, stored with the pending input so that any UI can render it:
``{"type": "single_choice", "choices": [...]}``, ``{"type": "multi_choice", "choices": [...]}``,
``{"type": "text", "max_length": 500}`` or ``{"type": "form", "fields": [{"name", "type", "required",
"options", "max_length", "min", "max"}]}``; field types are ``text``, ``number``, ``boolean`` and ``select``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

INPUT_TYPES = ("single_choice", "multi_choice", "text", "form")
FIELD_TYPES = ("text", "number", "boolean", "select")


def build_spec(
    type: str, choices: Sequence[Any] | None, fields: Sequence[Mapping[str, Any]] | None, max_length: int | None
) -> dict[str, Any]:
    """The spec for ``ctx.wait_for_input``'s arguments; a wrong combination is a ``ValueError`` naming it."""
    if type not in INPUT_TYPES:
        raise ValueError(f"wait_for_input(type=...) must be one of {', '.join(INPUT_TYPES)}, got {type!r}")
    spec: dict[str, Any] = {"type": type}
    if type in ("single_choice", "multi_choice"):
        if not choices:
            raise ValueError(f"wait_for_input(type={type!r}) needs choices=[...]")
        spec["choices"] = list(choices)
    elif type == "form":
        if not fields:
            raise ValueError("wait_for_input(type='form') needs fields=[{'name': ..., 'type': ...}, ...]")
        spec["fields"] = [_check_field(field) for field in fields]
    elif max_length is not None:
        spec["max_length"] = max_length
    return spec


def _check_field(field: Mapping[str, Any]) -> dict[str, Any]:
    name, kind = field.get("name"), field.get("type", "text")
    if not isinstance(name, str) or not name:
        raise ValueError(f"every form field needs a 'name', got {dict(field)!r}")
    if kind not in FIELD_TYPES:
        raise ValueError(f"form field {name!r}: type must be one of {', '.join(FIELD_TYPES)}, got {kind!r}")
    if kind == "select" and not field.get("options"):
        raise ValueError(f"form field {name!r}: a select needs options=[...]")
    return {**field, "type": kind}


def validate(spec: Mapping[str, Any], value: Any) -> dict[str, str]:
    """Problems with ``value`` as an answer to ``spec``, by field (``""`` for the value as a whole); empty
    when the value is valid."""
    kind = spec.get("type")
    if kind == "single_choice":
        return {} if value in spec["choices"] else {"": f"must be one of {spec['choices']!r}, got {value!r}"}
    if kind == "multi_choice":
        if not isinstance(value, list):
            return {"": f"must be a list of choices from {spec['choices']!r}, got {value!r}"}
        wrong = [v for v in value if v not in spec["choices"]]
        return {"": f"{wrong!r} not among the choices {spec['choices']!r}"} if wrong else {}
    if kind == "text":
        return _check_text("", value, spec.get("max_length"))
    if not isinstance(value, dict):
        return {"": f"must be an object with the form's fields, got {type(value).__name__}"}
    errors: dict[str, str] = {}
    known = {field["name"] for field in spec["fields"]}
    for extra in sorted(set(value) - known):
        errors[extra] = "is not a field of this form"
    for field in spec["fields"]:
        errors.update(_check_field_value(field, value))
    return errors


def _check_field_value(field: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, str]:
    name = field["name"]
    if name not in answer or answer[name] is None:
        return {name: "is required"} if field.get("required") else {}
    value, kind = answer[name], field["type"]
    if kind == "text":
        return _check_text(name, value, field.get("max_length"))
    if kind == "number":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return {name: f"must be a number, got {value!r}"}
        if field.get("min") is not None and value < field["min"]:
            return {name: f"must be at least {field['min']}, got {value}"}
        if field.get("max") is not None and value > field["max"]:
            return {name: f"must be at most {field['max']}, got {value}"}
        return {}
    if kind == "boolean":
        return {} if isinstance(value, bool) else {name: f"must be true or false, got {value!r}"}
    return {} if value in field["options"] else {name: f"must be one of {field['options']!r}, got {value!r}"}


def _check_text(name: str, value: Any, max_length: int | None) -> dict[str, str]:
    if not isinstance(value, str):
        return {name: f"must be text, got {type(value).__name__}"}
    if max_length is not None and len(value) > max_length:
        return {name: f"must be at most {max_length} characters, got {len(value)}"}
    return {}
