"""Opaque keyset-pagination cursors: ``(created_at, id)`` of the last run of a page."""

from __future__ import annotations

import base64
from datetime import datetime

from ._errors import DurableError


def encode_cursor(created_at: datetime, run_id: str) -> str:
    """The cursor that resumes listing after this run."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{run_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Parse a cursor from ``encode_cursor``; a malformed one is a clear error."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        stamp, run_id = text.split("|", 1)
        return datetime.fromisoformat(stamp), run_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise DurableError(
            f"invalid cursor {cursor!r}: pass the next_cursor of a previous page unchanged"
        ) from exc
