"""Probe a video: its streams, timeline origin and duration, without decoding
more than one frame. Containers whose header gives no duration (live
captures, some MPEG-TS/mkv) are measured by demuxing packet timestamps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import av

from pipelines.sources import open_source

# Decoded length may exceed whole seconds by encoder padding (AAC priming);
# a stream counts as n whole seconds when it reaches n - DURATION_SLACK.
DURATION_SLACK = 0.05


class MediaError(RuntimeError):
    """A video that cannot be ingested; the message names the file and the reason."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason


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


def _scan_end(uri: str) -> float:
    """Last packet end time over all audio/video streams, by demuxing the file."""
    end = 0.0
    with open_source(uri) as handle, av.open(handle) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for packet in container.demux(streams):
            if packet.pts is None or packet.time_base is None:
                continue
            stop = packet.pts + (packet.duration or 0)
            end = max(end, float(stop * packet.time_base))
    return end


def probe(uri: str) -> VideoInfo:
    """Open ``uri`` and describe it; raise MediaError with a clear reason."""
    try:
        with open_source(uri) as handle, av.open(handle, metadata_errors="ignore") as container:
            if not container.streams.video:
                kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
                raise MediaError(uri, f"no video track (streams: {kinds})")
            video = container.streams.video[0]
            if video.codec_context is None or video.codec_context.name is None:
                raise MediaError(uri, "video codec not supported")
            try:
                first = next(container.decode(video), None)
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
            audio = container.streams.audio[0] if container.streams.audio else None
            fps = float(video.average_rate or video.guessed_rate or 0.0)

            if container.duration is not None and container.duration > 0:
                duration, source = container.duration / av.time_base, "header"
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
                video_start=float(first_time - origin),
                has_audio=audio is not None,
                audio_codec=audio.codec_context.name if audio is not None else None,
                sample_rate=audio.codec_context.sample_rate if audio is not None else None,
                channels=audio.codec_context.channels if audio is not None else None,
            )
    except MediaError:
        raise
    except FileNotFoundError as exc:
        raise MediaError(uri, "no such file") from exc
    except av.error.FFmpegError as exc:
        raise MediaError(uri, f"not a readable video container ({exc.strerror or exc})") from exc
    except OSError as exc:
        raise MediaError(uri, f"cannot read: {exc}") from exc
    if info.duration_source == "scan":
        scanned = _scan_end(uri) - info.origin
        info = VideoInfo(**{**info.to_dict(), "duration": scanned})
    if info.whole_seconds < 1:
        raise MediaError(uri, f"shorter than one second ({info.duration:.2f} s)")
    return info
