"""`--since` and the UI's `since=`: a moment given as an ISO date or datetime, or as an age."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_AGE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """An ISO date or datetime (local time unless it names a zone) or an age: 30m, 2h, 3d, 1w.

    Raises:
        ValueError: `value` is neither.
    """
    text = value.strip()
    if m := _AGE.match(text.lower()):
        now = now or datetime.now(timezone.utc)
        return now - timedelta(**{_UNITS[m[2]]: int(m[1])})
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(
            "an ISO date or datetime (2026-01-31, 2026-01-31T14:00) or an age (30m, 2h, 3d, 1w)"
        ) from None
    return when if when.tzinfo else when.astimezone()
