"""When each stream started: turns seconds into the HH:MM:SS shown in reports.

``start_times`` maps a stream id to an ISO 8601 start (``--start-time STREAM=ISO``)
and ``"*"`` to the start of every other stream (``--start-time ISO``: e.g. the
views of one timeline, recorded together). Without a start, times are HH:MM:SS
from the stream's start (``epg.timecode``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from epg.timecode import hhmmss, parse_start_time

ALL_STREAMS = "*"


def parse_start_time_args(values: Iterable[str]) -> dict[str, str]:
    """``["ISO"]`` or ``["STREAM=ISO", ...]`` → {stream or "*": ISO}; ValueError naming a bad value."""
    out: dict[str, str] = {}
    for value in values:
        stream, sep, text = value.rpartition("=")
        key = stream if sep else ALL_STREAMS
        if sep and not stream:
            raise ValueError(f"--start-time {value!r}: empty stream id before '='")
        parse_start_time(text)
        if key in out:
            raise ValueError(f"--start-time given twice for {'all streams' if key == ALL_STREAMS else key!r}")
        out[key] = text
    return out


def check_start_times(field: str, start_times: Mapping[str, str] | None) -> None:
    """A job config's check of its ``start_times``: ValueError prefixed with ``field`` (e.g. ``"SearchJobConfig.start_times"``)."""
    try:
        Clock(start_times)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from exc


class Clock:
    """Formats a stream's seconds as HH:MM:SS (wall-clock when its start is known)."""

    def __init__(self, start_times: Mapping[str, str] | None = None):
        self._starts = {key: parse_start_time(text) for key, text in (start_times or {}).items()}

    def start(self, stream_id: str) -> datetime | None:
        return self._starts.get(stream_id, self._starts.get(ALL_STREAMS))

    def wall_clock(self, stream_id: str) -> bool:
        return self.start(stream_id) is not None

    def format(self, stream_id: str, seconds: float) -> str:
        return hhmmss(seconds, self.start(stream_id))
