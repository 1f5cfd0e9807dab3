"""H.264 + AAC mp4 writer (PyAV), written to a temporary name and renamed when complete."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .audio import SR

#: Fixed encoder settings (recorded in config.json). ``ultrafast`` keeps a
#: 1280x720 30 fps stream faster than real time on one core.
VIDEO_CODEC = "libx264"
PRESET_SMALL = "veryfast"  # frames up to 640x360
PRESET_LARGE = "ultrafast"  # larger frames
CRF = 26
THREADS = 1
KEYFRAME_S = 2.0
AUDIO_CODEC = "aac"
AUDIO_BITRATE = 96_000
AAC_FRAME = 1024
#: no macroblock-tree and no adaptive quantisation: their floating-point analysis
#: made libx264 output depend on process history (FPU state), which broke
#: bit-exact determinism between two runs in one process
X264_EXTRA = "aq-mode=0:mbtree=0"


def encoder_settings(width: int, height: int, fps: float) -> dict:
    gop = max(1, int(round(KEYFRAME_S * fps)))
    return {
        "codec": VIDEO_CODEC,
        "pix_fmt": "yuv420p",
        "preset": PRESET_SMALL if width * height <= 640 * 360 else PRESET_LARGE,
        "crf": CRF,
        "threads": THREADS,
        "keyint": gop,
        "x264_params": f"keyint={gop}:min-keyint={gop}:scenecut=0:threads={THREADS}:{X264_EXTRA}",
        "audio_codec": AUDIO_CODEC,
        "audio_rate": SR,
        "audio_layout": "mono",
        "audio_bitrate": AUDIO_BITRATE,
    }


class StreamWriter:
    def __init__(self, path: Path, width: int, height: int, fps: float):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial.mp4")
        s = encoder_settings(width, height, fps)
        self.container = av.open(str(self.tmp), "w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self.v = self.container.add_stream(VIDEO_CODEC, rate=rate)
        self.v.width, self.v.height, self.v.pix_fmt = width, height, "yuv420p"
        self._vtb = 1 / rate
        cc = self.v.codec_context
        cc.gop_size = s["keyint"]
        cc.thread_count = THREADS
        self.v.options = {
            "preset": s["preset"],
            "crf": str(CRF),
            "x264-params": f"keyint={s['keyint']}:min-keyint={s['keyint']}:scenecut=0:threads={THREADS}:{X264_EXTRA}",
        }
        self.a = self.container.add_stream(AUDIO_CODEC, rate=SR)
        self.a.layout = "mono"
        self.a.bit_rate = AUDIO_BITRATE
        self.nv = 0
        self.na = 0
        self._abuf = np.zeros(0, np.float32)

    def video(self, rgb: np.ndarray) -> None:
        f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        f.pts = self.nv
        f.time_base = self._vtb
        self.nv += 1
        for p in self.v.encode(f):
            self.container.mux(p)

    def audio(self, y: np.ndarray, followers: tuple["StreamWriter", ...] = ()) -> None:
        """Append samples; the encoder is fed whole AAC frames (1024 samples) with exact pts.

        The encoded packets are also muxed into the ``followers`` (other views
        share the soundtrack), so the audio is encoded once for all views.
        """
        y = np.ascontiguousarray(y, np.float32)
        buf = np.concatenate([self._abuf, y]) if len(self._abuf) else y
        n = (len(buf) // AAC_FRAME) * AAC_FRAME
        if n:
            self._encode_audio(buf[:n], followers)
        self._abuf = buf[n:].copy()

    def _encode_audio(self, y, followers) -> None:
        for i in range(0, len(y), AAC_FRAME):
            seg = y[i : i + AAC_FRAME]
            f = av.AudioFrame.from_ndarray(seg[None, :], format="fltp", layout="mono")
            f.sample_rate = SR
            f.pts = self.na
            f.time_base = Fraction(1, SR)
            self.na += len(seg)
            self._mux_audio(self.a.encode(f), followers)

    def _mux_audio(self, packets, followers) -> None:
        for p in packets:
            if followers:
                data, pts, dts, tb, dur = bytes(p), p.pts, p.dts, p.time_base, p.duration
            self.container.mux(p)
            for w in followers:
                q = av.Packet(data)
                q.pts, q.dts, q.time_base, q.duration = pts, dts, tb, dur
                q.stream = w.a
                w.container.mux(q)

    def flush_audio(self, followers: tuple["StreamWriter", ...] = ()) -> None:
        if len(self._abuf):
            self._encode_audio(self._abuf, followers)
            self._abuf = np.zeros(0, np.float32)
        self._mux_audio(self.a.encode(), followers)
        self._audio_flushed = True

    def close(self) -> Path:
        for p in self.v.encode():
            self.container.mux(p)
        self.container.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass
