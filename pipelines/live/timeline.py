"""Where a live segment's media falls on the stream's seconds.

t = 0 is the first video frame of the first segment the watcher ever read of the stream.
Later segments are placed by their own timestamps (MPEG-TS keeps one clock across
segments, so a segment the watcher missed leaves a hole, not a shift). When the source's
clock restarts (HLS ``EXT-X-DISCONTINUITY``, timestamps that run backwards, or a jump of
more than a day) a new *epoch* begins: its first frame is placed at the first whole second
after what came before, moved on by the wall-clock time that passed (the segments' program
date-time where HLS gives it, else when the watcher found them), so an outage shows as a
gap of about its length. The epochs are kept in the stream's manifest, so a restarted
watcher places the segments it reads again exactly where they were.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from pipelines.live.sources import Segment
from pipelines.media.info import VideoInfo

MAX_JUMP_SECONDS = 86_400.0  # a forward jump beyond this is a restarted clock, not missed segments
HOLE_SECONDS = 0.5  # a segment starting this much after its predecessor's end leaves a hole
# Following: a segment that starts more than this before its predecessor's end runs on a restarted clock
# (an NVR writing each file from 0). Resuming: a re-read segment may end up to this before the first second
# not yet committed (it is the lead-in), more means a clock that restarted while the watcher was away.
BACK_SECONDS = 1.0
RESUME_SECONDS = 2.0
# A new epoch follows on at once unless the wall clock says more time passed than this: program date-time
# is the source's own clock; a file's modification time (or when the watcher found a segment) also carries
# the writer's and the watcher's delays.
WALL_SLACK_SECONDS = 1.0
ARRIVAL_SLACK_SECONDS = 3.0
KEPT_EPOCHS = 4  # the epochs a resumed watcher may meet again (older ones are history, not state)


@dataclass(frozen=True)
class Epoch:
    """One run of the source's clock: container time ``origin`` is stream second 0."""

    origin: float
    wrap: float | None
    wall_origin: float | None  # wall clock (POSIX s) of stream second 0
    opened_by: str = ""  # the segment that opened it (a resumed watcher reading it again keeps this epoch)

    def seconds(self, container_time: float, near: float | None = None) -> float:
        """Container time -> stream seconds; a wrapping clock (MPEG-TS's 33 bits, ~26.5 h) is unwrapped to the
        value nearest ``near`` (the stream's position), else to the one nearest 0."""
        rel = container_time - self.origin
        if self.wrap:
            rel %= self.wrap
            turns = round(((near if near is not None else 0.0) - rel) / self.wrap)
            rel += turns * self.wrap
        return rel

    def wall_clock(self, t: float) -> float | None:
        return None if self.wall_origin is None else self.wall_origin + t


@dataclass(frozen=True)
class Placed:
    """A segment on the stream's seconds."""

    segment: Segment
    info: VideoInfo  # the segment file on its own
    epoch: Epoch
    start: float  # its earliest media
    first_video: float  # its first video frame
    end: float

    @property
    def first_whole_second(self) -> int:
        return math.ceil(self.first_video - 1e-3)

    @property
    def joins(self) -> bool:
        """MPEG-TS: its bytes continue its predecessor's."""
        return self.info.container == "mpegts"


class StreamTimeline:
    """The recent epochs of one stream, and the placing of each new segment."""

    def __init__(self, epochs: list[Epoch] | None = None) -> None:
        self.epochs = list(epochs or [])

    @property
    def current(self) -> Epoch | None:
        return self.epochs[-1] if self.epochs else None

    def place(self, segment: Segment, info: VideoInfo, after: float, key: str, resuming: bool) -> Placed:
        """Place ``segment`` (described by ``info``, known to the watcher as ``key``) on the stream.

        ``after``: where the stream's media ends so far; ``resuming``: no segment is held yet, and ``after`` is
        the first second not yet committed (re-read segments just before it are the lead-in)."""
        epoch = self.current
        if epoch is not None and (not segment.discontinuity or key == epoch.opened_by):
            start = epoch.seconds(info.origin, near=after)
            fits = (start + info.duration >= after - RESUME_SECONDS) if resuming else (start >= after - BACK_SECONDS)
            if fits and start <= after + MAX_JUMP_SECONDS:
                return self._placed(segment, info, epoch, start)
        first = math.ceil(after - 1e-3) if epoch is not None else 0
        began = segment.program_time if segment.program_time is not None else \
            segment.arrived - (segment.duration or info.duration)  # wall clock of its start
        slack = WALL_SLACK_SECONDS if segment.program_time is not None else ARRIVAL_SLACK_SECONDS
        if epoch is not None and epoch.wall_origin is not None and began - epoch.wall_origin > after + slack:
            first = math.ceil(began - epoch.wall_origin - 1e-3)
        video_at = info.origin + info.video_start  # container time of its first frame
        opened = Epoch(video_at - first, info.wrap_seconds, began - first, key)
        self.epochs = [*self.epochs[-(KEPT_EPOCHS - 1):], opened]
        return self._placed(segment, info, opened, opened.seconds(info.origin, near=first))

    def _placed(self, segment: Segment, info: VideoInfo, epoch: Epoch, start: float) -> Placed:
        return Placed(segment, info, epoch, start, start + info.video_start, start + info.duration)

    @staticmethod
    def chunk_info(chunk: VideoInfo, epoch: Epoch, near: float) -> VideoInfo:
        """A chunk file's description with the stream's seconds as its timeline (what ``window_clips`` reads)."""
        start = epoch.seconds(chunk.origin, near=near)
        return replace(chunk, origin=epoch.origin, duration=start + chunk.duration, video_start=start + chunk.video_start)

    def to_state(self) -> list[dict]:
        return [asdict(e) for e in self.epochs]

    @classmethod
    def from_state(cls, state: list[dict]) -> "StreamTimeline":
        return cls([Epoch(**e) for e in state])
