"""Audio of a time window: decoded with PyAV, downmixed to mono and
resampled to the feature rate, placed on the window's timeline by packet
timestamps so gaps and early ends become silence (never a shift).
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from pipelines.media.containers import audio_stream, tolerant_decode
from pipelines.media.info import VideoInfo
from pipelines.media.sources import open_source

# Decoding starts this long before the window so the resampler is primed.
PREROLL_SECONDS = 0.5
# A jump in input timestamps larger than this is a gap, not jitter.
GAP_SECONDS = 0.02


@dataclass
class WindowAudio:
    waveform: np.ndarray  # float32 [seconds * sample_rate], zeros where nothing was decoded
    coverage: np.ndarray  # float32 [seconds]: share of each second that came from the stream
    warning: str | None = None  # a decode error that cut the audio short
    damaged_packets: int = 0  # packets the decoder could not decode and left out (their time is silence)


def read_audio(uri: str, info: VideoInfo, start: int, seconds: int, sample_rate: int) -> WindowAudio:
    """Mono audio of [start, start + seconds) at ``sample_rate``."""
    total = seconds * sample_rate
    waveform = np.zeros(total, dtype=np.float32)
    covered = np.zeros(total, dtype=bool)
    if not info.has_audio:
        return WindowAudio(waveform, np.zeros(seconds, dtype=np.float32))
    warning = None
    end = start + seconds
    with open_source(uri) as handle, av.open(handle) as container:
        stream = audio_stream(container)
        if stream is None:  # inspection found the track; the file changed since
            return WindowAudio(waveform, np.zeros(seconds, dtype=np.float32), "the audio track is gone")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        seek_to = start - PREROLL_SECONDS
        if seek_to > 0:
            container.seek(int(info.container_time(seek_to) / stream.time_base), stream=stream, backward=True)
        position: int | None = None  # next output sample, relative to the window start
        expected_time: float | None = None
        damaged = [0]
        try:
            for frame in tolerant_decode(container, stream, damaged):
                if frame.time is None:
                    continue
                frame_time = info.timeline(frame.time)
                if frame_time >= end:
                    break
                if expected_time is None or abs(frame_time - expected_time) > GAP_SECONDS:
                    position = int(round((frame_time - start) * sample_rate))
                expected_time = frame_time + frame.samples / frame.sample_rate
                for out in resampler.resample(frame):
                    position = _place(out, position, waveform, covered)
        except av.error.FFmpegError as exc:
            warning = f"audio decode stopped at {start}+ s: {exc}"
    coverage = covered.reshape(seconds, sample_rate).mean(axis=1).astype(np.float32)
    return WindowAudio(waveform, coverage, warning, damaged[0])


def _place(frame: av.AudioFrame, position: int, waveform: np.ndarray, covered: np.ndarray) -> int:
    samples = frame.to_ndarray().reshape(-1).astype(np.float32)
    lo, hi = position, position + samples.size
    a, b = max(lo, 0), min(hi, waveform.size)
    if a < b:
        waveform[a:b] = samples[a - lo : b - lo]
        covered[a:b] = True
    return hi
