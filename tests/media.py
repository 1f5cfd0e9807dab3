"""Small real media files for the ingest tests, written with PyAV.

A test pattern has a dark grey picture with a full-white flash and a 1 kHz
audio click at chosen seconds, so alignment can be checked on the decoded
rows. Every container/codec combination of the ingest issue can be written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FLASH_SECONDS = 0.4  # flash lasts [s, s + 0.4): the frames at s and s + 0.2 are white
CLICK_HZ = 1000.0
CLICK_SECONDS = 0.3
DARK = 40


@dataclass
class Pattern:
    seconds: float = 6.0
    fps: float = 10.0
    size: tuple[int, int] = (160, 96)  # width, height
    container: str | None = None  # PyAV format name; None = from the suffix
    vcodec: str | None = "libx264"  # None: no video track
    acodec: str | None = "aac"  # None: no audio track
    sample_rate: int = 44_100
    channels: int = 1
    flash_at: tuple[int, ...] = ()
    click_at: tuple[int, ...] = ()
    tone_hz: float | None = None  # a continuous tone instead of silence
    audio_seconds: float | None = None  # audio stops early
    audio_gap: tuple[float, float] | None = None  # no audio packets in [a, b)
    vfr_jitter: float = 0.0  # random +- jitter of frame times (variable frame rate)
    video_start: float = 0.0  # first video frame time
    offset: float = 0.0  # both streams' timestamps start here (a non-zero container start)
    b_frames: int = 0  # encoder B-frames (AVI then has packets without pts)
    extra: dict = field(default_factory=dict)


def _video_codec_settings(stream: av.VideoStream, codec: str) -> None:
    if codec == "libx264":
        stream.options = {"preset": "ultrafast"}
    if codec in ("libx265", "hevc"):
        stream.options = {"preset": "ultrafast", "x265-params": "log-level=error"}


def write_pattern(path: Path, p: Pattern) -> Path:
    """Write the test pattern to ``path`` and return it."""
    container = av.open(str(path), "w", format=p.container)
    time_base = Fraction(1, 1000)
    vstream = astream = None
    if p.vcodec:
        rate = Fraction(p.fps).limit_denominator(1000)
        vstream = container.add_stream(p.vcodec, rate=rate)
        vstream.width, vstream.height = p.size
        vstream.pix_fmt = "yuv420p"
        vstream.time_base = time_base
        vstream.codec_context.time_base = time_base
        _video_codec_settings(vstream, p.vcodec)
        if p.b_frames:
            vstream.codec_context.max_b_frames = p.b_frames
    if p.acodec:
        astream = container.add_stream(p.acodec, rate=p.sample_rate)
        if p.acodec == "vorbis":
            astream.options = {"strict": "experimental"}
        astream.layout = "mono" if p.channels == 1 else ("stereo" if p.channels == 2 else f"{p.channels}.0" if p.channels != 6 else "5.1")
    rng = np.random.default_rng(0)

    if vstream is not None:
        w, h = p.size
        n = int(round((p.seconds - p.video_start) * p.fps))
        last_ms = -1
        for i in range(n):
            t = p.video_start + i / p.fps
            if p.vfr_jitter:
                t += float(rng.uniform(-p.vfr_jitter, p.vfr_jitter))
            ms = max(int(round((t + p.offset) * 1000)), last_ms + 1)
            last_ms = ms
            shown = ms / 1000 - p.offset
            white = any(s <= shown < s + FLASH_SECONDS for s in p.flash_at)
            img = np.full((h, w, 3), 255 if white else DARK, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = ms
            frame.time_base = time_base
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)

    if astream is not None:
        sr = p.sample_rate
        end = p.seconds if p.audio_seconds is None else p.audio_seconds
        total = int(round(end * sr))
        chunk = astream.codec_context.frame_size or 1024
        fmt = astream.codec_context.format.name
        layout = astream.layout.name
        pos = 0
        while pos < total:
            n = min(chunk, total - pos)
            if p.audio_gap and p.audio_gap[0] * sr <= pos < p.audio_gap[1] * sr:
                pos += n
                continue
            tt = (pos + np.arange(n)) / sr
            wave = 0.002 * rng.standard_normal(n)
            if p.tone_hz:
                wave = wave + 0.3 * np.sin(2 * np.pi * p.tone_hz * tt)
            for s in p.click_at:
                on = (tt >= s + 0.1) & (tt < s + 0.1 + CLICK_SECONDS)
                wave = wave + on * 0.5 * np.sin(2 * np.pi * CLICK_HZ * tt)
            samples = np.repeat(wave[None, :], p.channels, axis=0).astype(np.float32)
            if chunk and n < chunk and p.acodec in ("aac", "libopus", "opus", "libmp3lame", "mp3", "vorbis"):
                samples = np.pad(samples, ((0, 0), (0, chunk - n)))
            if not fmt.endswith("p"):
                samples = samples.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(_to_format(samples, fmt), format=fmt, layout=layout)
            frame.sample_rate = sr
            frame.pts = pos + int(round(p.offset * sr))
            frame.time_base = Fraction(1, sr)
            for packet in astream.encode(frame):
                container.mux(packet)
            pos += n
        for packet in astream.encode():
            container.mux(packet)
    container.close()
    return path


def write_frames(path: Path, images: list[np.ndarray], fps: int, fmt: str | None = None, options: dict | None = None) -> Path:
    """A video-only H.264 file of the given RGB images, one per 1/fps s."""
    container = av.open(str(path), "w", format=fmt, options=options or {})
    stream = container.add_stream("libx264", rate=fps)
    stream.height, stream.width = images[0].shape[:2]
    stream.pix_fmt = "yuv420p"
    for i, img in enumerate(images):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def _to_format(samples: np.ndarray, fmt: str) -> np.ndarray:
    """Float samples in [-1, 1] as the sample format an encoder wants."""
    base = fmt.rstrip("p")
    if base == "s16":
        return (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    if base == "s32":
        return (np.clip(samples, -1, 1) * 2147483647).astype(np.int32)
    return samples.astype(np.float64 if base == "dbl" else np.float32)
