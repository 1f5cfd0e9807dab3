"""Media inspection: a video's streams, timeline origin and duration, read without decoding
more than one frame (``inspect_video``; ``inspect_row`` is the same for a Ray Data row).
Containers whose header gives no duration (live captures, some MPEG-TS/mkv) are measured
by demuxing packet timestamps.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace

import av

from pipelines.media.containers import UnreadableContainer, audio_stream, demux, tolerant_decode
from pipelines.media.sources import open_source

# Decoded length may exceed whole seconds by encoder padding (AAC priming);
# a stream counts as n whole seconds when it reaches n - DURATION_SLACK.
DURATION_SLACK = 0.05
# MPEG-TS timestamps are 33-bit at 90 kHz: they wrap every ~26.5 h, and a
# recording may start anywhere in that cycle (AAC priming even starts "just
# before 0", i.e. near the top). Times are unwrapped relative to the origin.
TS_WRAP_SECONDS = 2**33 / 90_000
# An unwrapped time this close below a full cycle is read as slightly negative.
WRAP_GUARD_SECONDS = 3600.0
# Demuxing for a duration: a packet further than this from the one before it in its stream is not
# believed unless the next packet of that stream agrees (a damaged timestamp is alone, a real gap is
# followed by more footage). A flipped bit from bit 23 of a 90 kHz timestamp up moves it by more;
# packets of one stream over a minute apart (a slow timelapse in MPEG-TS) count only at its ends.
TIMESTAMP_JUMP_SECONDS = 60.0
# Containers without a trustworthy duration header: measured by demuxing.
SCAN_DURATION_CONTAINERS = frozenset({"mpegts"})


class MediaError(RuntimeError):
    """A video that cannot be ingested; the message names the file and the reason."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason

    def __reduce__(self):  # travels whole from a decode's child process (pipelines.runtime.isolated)
        return (MediaError, (self.uri, self.reason))


@dataclass(frozen=True)
class VideoInfo:
    """What ingest needs to know about a source before decoding it."""

    container: str
    duration: float  # seconds from the origin to the end of the longest stream
    duration_source: str  # "header", "streams" or "scan"
    origin: float  # container time that becomes t = 0
    width: int
    height: int
    fps: float
    video_codec: str
    video_start: float  # first video timestamp relative to the origin
    has_audio: bool
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    wrap_seconds: float | None = None  # timestamp wrap period (MPEG-TS), else None

    def timeline(self, raw: float) -> float:
        """Container time -> seconds from the origin, unwrapping 33-bit TS time."""
        rel = raw - self.origin
        if self.wrap_seconds:
            rel %= self.wrap_seconds
            if rel > self.wrap_seconds - WRAP_GUARD_SECONDS:
                rel -= self.wrap_seconds
        return rel

    def container_time(self, t: float) -> float:
        """Seconds from the origin -> container time (for seeking)."""
        raw = t + self.origin
        return raw % self.wrap_seconds if self.wrap_seconds else raw

    @property
    def whole_seconds(self) -> int:
        return max(0, int(math.floor(self.duration + DURATION_SLACK)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VideoInfo":
        return cls(**data)


def _stream_end(stream: av.stream.Stream) -> float | None:
    if stream.duration is None or stream.time_base is None:
        return None
    start = stream.start_time or 0
    return float((start + stream.duration) * stream.time_base)


def _scan_duration(uri: str, info: "VideoInfo") -> float:
    """Last packet end over all audio/video streams, by demuxing (no decoding).

    A packet's time counts when it is within ``TIMESTAMP_JUMP_SECONDS`` of the packet of its stream before
    it or after it: one damaged timestamp (a flipped bit can put a packet hours ahead) must not stretch the
    recording to hours of empty seconds, and neither the first packet nor the last escapes the check; a
    real gap in a capture is confirmed by the packets after it. A stream of a single packet counts when
    it lies near the others' end (or is all there is)."""
    end = 0.0
    previous: dict[int, float] = {}
    unconfirmed: dict[int, float] = {}  # a stream's packet that is far from the one before it
    packets: dict[int, int] = {}
    with open_source(uri) as handle, av.open(handle) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for packet in demux(container, *streams):
            if packet.pts is None or packet.time_base is None:
                continue
            stop = info.timeline(float((packet.pts + (packet.duration or 0)) * packet.time_base))
            index = packet.stream.index
            waiting = unconfirmed.pop(index, None)
            if waiting is not None and abs(stop - waiting) <= TIMESTAMP_JUMP_SECONDS:
                end = max(end, waiting)  # the packet after it agrees
            before = previous.get(index)
            if before is not None and abs(stop - before) <= TIMESTAMP_JUMP_SECONDS:
                end = max(end, stop)
            else:
                unconfirmed[index] = stop
            previous[index] = stop
            packets[index] = packets.get(index, 0) + 1
    for index, stop in unconfirmed.items():  # a stream of one packet (a still picture) has nothing to agree with
        if packets[index] == 1 and (end == 0.0 or abs(stop - end) <= TIMESTAMP_JUMP_SECONDS):
            end = max(end, stop)
    return end


def inspect_video(uri: str, min_seconds: float = 1.0) -> VideoInfo:
    """Open ``uri`` and describe it; raise MediaError with a clear reason (also when it is shorter than
    ``min_seconds``: a recording must hold one clip; a live segment may be any length)."""
    try:
        with open_source(uri) as handle, av.open(handle, metadata_errors="ignore") as container:
            if not container.streams.video:
                kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
                raise MediaError(uri, f"no video track (streams: {kinds})")
            video = container.streams.video[0]
            if video.codec_context is None or video.codec_context.name is None:
                raise MediaError(uri, "video codec not supported")
            try:
                first = next(tolerant_decode(container, video, [0]), None)
            except av.error.FFmpegError as exc:
                raise MediaError(uri, f"cannot decode video ({video.codec_context.name}): {exc}") from exc
            if first is None:
                raise MediaError(uri, f"video track ({video.codec_context.name}) has no decodable frames")

            if container.start_time is not None:
                origin = container.start_time / av.time_base
            else:
                starts = [float(s.start_time * s.time_base) for s in container.streams if s.start_time is not None]
                origin = min(starts) if starts else 0.0
            first_time = first.time if first.time is not None else origin
            wrap = TS_WRAP_SECONDS if container.format.name == "mpegts" else None
            audio = audio_stream(container)
            fps = float(video.average_rate or video.guessed_rate or 0.0)

            if container.format.name in SCAN_DURATION_CONTAINERS:
                duration, source = 0.0, "scan"
            elif container.duration is not None and container.duration > 0:
                duration, source = container.duration / av.time_base, "header"
                if container.format.name.startswith("matroska"):
                    duration -= origin  # Matroska's header duration runs from 0, not from the first timestamp
            else:
                ends = [e for e in (_stream_end(s) for s in (video, audio) if s is not None) if e is not None]
                duration, source = (max(ends) - origin, "streams") if ends else (0.0, "scan")
            info = VideoInfo(
                container=container.format.name,
                duration=duration,
                duration_source=source,
                origin=origin,
                width=first.width,
                height=first.height,
                fps=fps,
                video_codec=video.codec_context.name,
                video_start=0.0,
                has_audio=audio is not None,
                audio_codec=audio.codec_context.name if audio is not None else None,
                sample_rate=audio.codec_context.sample_rate if audio is not None else None,
                channels=audio.codec_context.channels if audio is not None else None,
                wrap_seconds=wrap,
            )
            info = replace(info, video_start=info.timeline(float(first_time)))
        if info.duration_source == "scan":
            info = replace(info, duration=_scan_duration(uri, info))
    except MediaError:
        raise
    except FileNotFoundError as exc:
        raise MediaError(uri, "no such file") from exc
    except av.error.FFmpegError as exc:
        raise MediaError(uri, f"not a readable video container ({exc.strerror or exc})") from exc
    except OSError as exc:
        raise MediaError(uri, f"cannot read: {exc}") from exc
    except UnreadableContainer as exc:
        raise MediaError(uri, str(exc)) from exc
    if info.duration < min_seconds - DURATION_SLACK:
        raise MediaError(uri, f"shorter than {min_seconds:g} s ({info.duration:.2f} s)")
    return info


def inspect_row(row: dict) -> dict:
    """``inspect_video`` for a Ray Data row {uri, ...}: adds ``info_json`` or ``error`` (naming the file)."""
    try:
        info = inspect_video(row["uri"])
        return {**row, "info_json": json.dumps(info.to_dict()), "error": ""}
    except MediaError as exc:
        return {**row, "info_json": "", "error": str(exc)}
    except Exception as exc:  # unexpected failures still name the file
        return {**row, "info_json": "", "error": f"{row['uri']}: {type(exc).__name__}: {exc}"}
