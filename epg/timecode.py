"""Seconds from a stream's start as HH:MM:SS, optionally as wall-clock time.

Every report shows time this way: people read "01:23:45" faster than "5025".

Decisions (the design is silent):
- Stream time has no 24-hour wrap: second 90,000 is "25:00:00" (a stream may last
  longer than a day and its times must stay ordered).
- Wall-clock time (when the recording's start is given) is the local time of the
  start's own timezone; a time on a later day than the start carries "+Nd"
  ("00:10:00+1d"), so a day-long recording that crosses midnight stays readable.
- Fractions of a second are floored: a clip t covers [t, t + 1).
- Negative seconds (before the start) get a leading "-" in stream time.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta


def parse_start_time(text: str) -> datetime:
    """An ISO 8601 date-time (``2026-05-01T08:00:00``, optional offset or ``Z``); ValueError naming it."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"start time {text!r} is not an ISO 8601 date-time (e.g. 2026-05-01T08:00:00)") from exc


def hhmmss(seconds: float, start: datetime | None = None) -> str:
    """Seconds from the stream start as HH:MM:SS; wall-clock time of day when ``start`` is given."""
    whole = math.floor(seconds)
    if start is None:
        sign = "-" if whole < 0 else ""
        h, rest = divmod(abs(whole), 3600)
        m, s = divmod(rest, 60)
        return f"{sign}{h:02d}:{m:02d}:{s:02d}"
    when = start + timedelta(seconds=whole)
    days = (when.date() - start.date()).days
    suffix = f"+{days}d" if days > 0 else (f"{days}d" if days < 0 else "")
    return f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}{suffix}"


def seconds_of_day(start: datetime | None) -> int:
    """Seconds since midnight of ``start`` (0 without one): where round clock ticks fall on a timeline."""
    if start is None:
        return 0
    return start.hour * 3600 + start.minute * 60 + start.second
