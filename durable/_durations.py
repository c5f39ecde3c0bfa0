"""Durations and moments as people type them: ``30s``, ``15m``, ``24h``, ``7d``, ``2w`` for
``engine.get_metrics(period=)``, ``engine.cleanup``, ``Retention`` and the ``stats``, ``cleanup`` and
``worker --retention`` commands; "that long ago, or an ISO time" for ``list --since/--until`` and
``history export --since``. One parser, so every command takes the same forms."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
FORMS = "a whole number followed by s, m, h, d or w (e.g. 30s, 15m, 24h, 7d, 2w)"
"""How the accepted text forms are named in error messages (the command line's)."""
ACCEPTED = f"{FORMS}, or a datetime.timedelta"
"""How the accepted forms are named in the errors of the Python API."""


def parse_duration(value: str | timedelta, *, what: str = "duration", forms: str = ACCEPTED) -> timedelta:
    """``value`` as a positive ``timedelta``: a ``timedelta`` as is, or text such as ``"30s"``, ``"15m"``,
    ``"24h"``, ``"7d"``, ``"2w"`` (seconds, minutes, hours, days, weeks).

    Args:
        value: the duration.
        what: what the duration is, to name it in the error (``"period"``, ``"--completed-older-than"``).
        forms: how the error names the accepted forms (``FORMS`` on the command line, where text is all there is).

    Raises:
        ValueError: ``value`` is not one of the accepted forms, or is not positive; the message names them.
    """
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValueError(f"{what} must be positive, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{what} must be {forms}; got {value!r}")
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"invalid {what} {value!r}: use {forms}")
    count = int(match[1])
    if count <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    try:
        return timedelta(seconds=count * _UNITS[match[2].lower()])
    except OverflowError:
        raise ValueError(f"{what} {value!r} is too long: at most 999999999 days") from None


def format_duration(value: timedelta) -> str:
    """``value`` in the largest unit that divides it (``timedelta(days=14)`` is ``"2w"``), else in seconds."""
    seconds = value.total_seconds()
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
MOMENT_FORMS = "a duration ago (30s, 15m, 2h, 1.5d, 2w) or an ISO time (2026-01-31, 2026-01-31T12:00:00+00:00)"
"""How the accepted forms of ``parse_moment`` are named in error messages."""


def parse_moment(text: str, *, what: str, now: datetime | None = None) -> datetime:
    """``text`` as an aware datetime: ``<number><s|m|h|d|w>`` before ``now`` (default: the UTC wall clock), or an
    ISO 8601 date/time (UTC when it names no zone).

    Raises:
        ValueError: neither form; the message names ``what`` (``--since``) and the accepted forms.
    """
    ago = _AGO.match(text)
    if ago:
        return (now or datetime.now(UTC)) - timedelta(seconds=float(ago[1]) * _UNITS[ago[2].lower()])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what} {text!r} is not {MOMENT_FORMS}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
