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
# A segment that ends more than this before the stream's media so far runs on a restarted clock (one that
# ends about there is the lead-in a resumed watcher reads again).
OVERLAP_SECONDS = 2.0


@dataclass(frozen=True)
class Epoch:
    """One run of the source's clock: container time ``origin`` is stream second 0."""

    origin: float
    wrap: float | None
    wall_origin: float | None  # wall clock (POSIX s) of stream second 0

    def seconds(self, container_time: float) -> float:
        """Container time -> stream seconds (unwrapping MPEG-TS's 33-bit clock)."""
        rel = container_time - self.origin
        if self.wrap:
            rel %= self.wrap
            if rel > self.wrap / 2:
                rel -= self.wrap
        return rel


@dataclass(frozen=True)
class Placed:
    """A segment on the stream's seconds."""

    segment: Segment
    info: VideoInfo  # the segment file on its own
    epoch: int
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
    """The epochs of one stream, and the placing of each new segment."""

    def __init__(self, epochs: list[Epoch] | None = None) -> None:
        self.epochs = list(epochs or [])

    def place(self, segment: Segment, info: VideoInfo, after: float) -> Placed:
        """Place ``segment`` (described by ``info``) on the stream; ``after``: where the stream's media ends so far
        (or, for a resumed watcher, its first second not yet committed)."""
        if self.epochs and not segment.discontinuity:
            epoch = self.epochs[-1]
            start = epoch.seconds(info.origin)
            if start + info.duration >= after - OVERLAP_SECONDS and start <= after + MAX_JUMP_SECONDS:
                return self._placed(segment, info, len(self.epochs) - 1, start)
        first = math.ceil(after - 1e-3) if self.epochs else 0
        wall = segment.program_time
        if self.epochs and self.epochs[-1].wall_origin is not None:
            now = wall if wall is not None else segment.arrived - (segment.duration or info.duration)
            first = max(first, math.ceil(now - self.epochs[-1].wall_origin - 1e-3))
        video_at = info.origin + info.video_start  # container time of its first frame
        wall_origin = (wall if wall is not None else segment.arrived - (segment.duration or info.duration)) - first
        self.epochs.append(Epoch(video_at - first, info.wrap_seconds, wall_origin))
        return self._placed(segment, info, len(self.epochs) - 1, self.epochs[-1].seconds(info.origin))

    def _placed(self, segment: Segment, info: VideoInfo, epoch: int, start: float) -> Placed:
        return Placed(segment, info, epoch, start, start + info.video_start, start + info.duration)

    def wall_clock(self, epoch: int, t: float) -> float | None:
        origin = self.epochs[epoch].wall_origin
        return None if origin is None else origin + t

    def chunk_info(self, chunk: VideoInfo, epoch: int) -> VideoInfo:
        """A chunk file's description with the stream's seconds as its timeline (what ``window_clips`` reads)."""
        e = self.epochs[epoch]
        start = e.seconds(chunk.origin)
        return replace(chunk, origin=e.origin, duration=start + chunk.duration, video_start=start + chunk.video_start)

    def to_state(self) -> list[dict]:
        return [asdict(e) for e in self.epochs]

    @classmethod
    def from_state(cls, state: list[dict]) -> "StreamTimeline":
        return cls([Epoch(**e) for e in state])
