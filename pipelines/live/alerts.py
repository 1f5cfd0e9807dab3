"""Live anomaly alerts: contiguous anomalous seconds of a stream become one event, announced twice.

``AlertTracker`` reads a stream's scored seconds in time order and says when an event starts
(its first anomalous second: an alert line goes out at once) and when it ends (the first
second after it that is scored and not anomalous, or a gap: an update line with its end and
peak). Its open event is part of the watcher's resume state, so a restarted watcher neither
repeats the start nor forgets the end. ``AlertSink`` appends each line to a JSON lines file
and, when given a webhook, POSTs it there (a failed POST is counted and logged, never fatal).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.request
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT = 5.0


@dataclass
class OpenEvent:
    start: int
    last: int  # its last anomalous second
    peak_t: int
    peak_score: float


def iso(wall: float | None) -> str | None:
    return None if wall is None else dt.datetime.fromtimestamp(wall, dt.timezone.utc).isoformat(timespec="milliseconds")


class AlertTracker:
    """Events of one stream from its scored seconds, in order."""

    def __init__(self, stream_id: str, threshold: float, state: dict | None = None) -> None:
        self.stream_id, self.threshold = stream_id, threshold
        self.open = OpenEvent(**state) if state else None

    def state(self) -> dict | None:
        return asdict(self.open) if self.open else None

    def update(self, t: list[int], scores: list[float], wall_clock) -> list[dict]:
        """Alert lines for these seconds (``t`` increasing, after every earlier call's); ``wall_clock(t)`` → POSIX s or None."""
        lines = []
        for second, score in zip(t, scores):
            if self.open is not None and second > self.open.last + 1:  # a gap ends the event
                lines.append(self._end(wall_clock))
            if score > self.threshold:
                if self.open is None:
                    self.open = OpenEvent(second, second, second, score)
                    lines.append(self._line("start", None, score, wall_clock))
                else:
                    self.open.last = second
                    if score > self.open.peak_score:
                        self.open.peak_t, self.open.peak_score = second, score
            elif self.open is not None:
                lines.append(self._end(wall_clock))
        return lines

    def _end(self, wall_clock) -> dict:
        line = self._line("end", self.open.last + 1, None, wall_clock)
        self.open = None
        return line

    def _line(self, kind: str, end: int | None, score: float | None, wall_clock) -> dict:
        e = self.open
        return {
            "kind": kind, "stream_id": self.stream_id, "start": e.start, "end": end,
            "start_time": iso(wall_clock(e.start)), "end_time": iso(wall_clock(end)) if end is not None else None,
            "score": score, "peak_t": e.peak_t, "peak_score": e.peak_score, "threshold": self.threshold,
            "emitted_at": iso(dt.datetime.now(dt.timezone.utc).timestamp()),
        }


class AlertSink:
    """Alert lines to a JSON lines file and an optional webhook."""

    def __init__(self, path: str | None, webhook: str | None) -> None:
        self.path, self.webhook = path, webhook
        self.webhook_failures = 0
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def send(self, line: dict) -> None:
        text = json.dumps(line, sort_keys=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(text + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        if self.webhook:
            request = urllib.request.Request(self.webhook, data=text.encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT):
                    pass
            except Exception as exc:  # the alert is in the file; the webhook is best effort
                self.webhook_failures += 1
                log.warning("webhook %s: %s: %s", self.webhook, type(exc).__name__, exc)
