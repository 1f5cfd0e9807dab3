"""Ingest settings: one dataclass, defaults in one place, validated on load.

The config hash covers every field that changes the rows written, so a
resumed run only skips streams (and window parts) made with the same
settings; parallelism knobs are left out of it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from epg.configs import Config
from epg.features import LogMelConfig

FRAME_BACKENDS = ("decord", "pyav")
FRAME_SKIP_MODES = ("none", "nonref", "nonkey")  # the keys of pipelines.media.frames.FRAME_SKIPS

# Fields that do not change the output bytes and so stay out of the hash.
_NOT_HASHED = frozenset({"window_seconds", "decode_threads", "fallback_backend", "num_cpus_per_task", "decode_timeout"})


@dataclass(frozen=True)
class IngestConfig(Config):
    """How videos become 1-s clip rows (DESIGN §3.1)."""

    crop_size: int = 160
    frames_per_clip: int = 5
    clip_fps: float = 5.0  # frame k of clip t is the one shown at t + k / clip_fps
    jpeg_quality: int = 90
    window_seconds: int = 60  # unit of parallel decoding
    shard_rows: int = 1200  # rows per final Parquet file (~1-2k)
    frame_backend: str = "pyav"  # faster and safer than decord (bench/RESULTS.md, "Frame backends")
    fallback_backend: bool = True  # a window the backend cannot decode goes to the other one
    decode_threads: int = 1  # codec threads per task (tasks already run in parallel)
    num_cpus_per_task: float = 1.0
    max_frame_age: float = 1.0  # older last frame than this => has_video false
    # Frames the decoder may leave out (pipelines.media.frames.FRAME_SKIPS): none (exact), nonref, nonkey.
    frame_skip: str = "none"
    # With a skip: a window where any target takes a frame shown more than this many source frames
    # before it is decoded again in full, so every frame is within the tolerance of its target
    # (1: the exact frame or the one before it).
    frame_skip_tolerance: float = 1.0
    # Seconds one window's decode (or one file's inspection) may take. The decode runs in a child process
    # of the worker (pipelines.runtime.isolated): past the bound, or when a decoder crashes, that process
    # is stopped and the window (file) fails with the reason; the rest go on. 0: decode in the worker
    # itself, with no bound (a hung decoder then hangs the job, a crashed one makes Ray retry it forever).
    decode_timeout: float = 600.0
    compression: str = "zstd"
    logmel: LogMelConfig = field(default_factory=LogMelConfig)

    def __post_init__(self) -> None:
        positive = ("crop_size", "frames_per_clip", "clip_fps", "window_seconds", "shard_rows", "decode_threads")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"IngestConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"IngestConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.frame_backend not in FRAME_BACKENDS:
            raise ValueError(f"IngestConfig.frame_backend must be one of {FRAME_BACKENDS}, got {self.frame_backend!r}")
        if self.frames_per_clip / self.clip_fps > 1.0 + 1e-9:
            raise ValueError(
                f"IngestConfig.frames_per_clip / clip_fps must fit in one second, got "
                f"{self.frames_per_clip} / {self.clip_fps}"
            )
        if self.frame_skip not in FRAME_SKIP_MODES:
            raise ValueError(f"IngestConfig.frame_skip must be one of {FRAME_SKIP_MODES}, got {self.frame_skip!r}")
        if self.frame_skip_tolerance < 1:  # the exact decode's own frames are shown up to one frame before their targets
            raise ValueError(f"IngestConfig.frame_skip_tolerance must be >= 1 source frame, got {self.frame_skip_tolerance}")
        if not math.isfinite(self.decode_timeout) or self.decode_timeout < 0:
            raise ValueError(f"IngestConfig.decode_timeout must be >= 0 (0: no bound), got {self.decode_timeout}")
        if self.max_frame_age <= 0:
            raise ValueError(f"IngestConfig.max_frame_age must be > 0, got {self.max_frame_age}")
        if not isinstance(self.logmel, LogMelConfig):
            raise ValueError(f"IngestConfig.logmel must be a LogMelConfig, got {type(self.logmel).__name__}")

    def output_hash(self) -> str:
        """Short hash of the settings that determine the rows."""
        relevant = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        blob = json.dumps(relevant, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]
