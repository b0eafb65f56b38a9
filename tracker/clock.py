"""Time rules every part shares: the current UTC time, and when a running run counts as crashed.

A run's process beats every `heartbeat_interval` seconds; a run still `running` once its deadline
(two intervals after the last beat) has passed is shown as crashed. The store writes the deadline,
queries compare it with the clock, and moving runs between stores computes it the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

DEFAULT_HEARTBEAT_S = 30.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def heartbeat_deadline(at: datetime, interval: float = DEFAULT_HEARTBEAT_S) -> datetime:
    """When a run that beat at `at` counts as crashed: two missed beats, so one slow write
    (a busy database, a long batch) does not make it look dead."""
    return at + timedelta(seconds=2 * interval)


def shown_status(
    status: str, reason: str | None, deadline: datetime, now: datetime
) -> tuple[str, str | None]:
    """The status a run is shown with: running past its heartbeat deadline means crashed."""
    if status == "running" and deadline < now:
        return "crashed", "crashed"  # its process stopped beating
    return status, reason
