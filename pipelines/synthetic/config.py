"""Configuration and result types of the synthetic stream generator."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from epg.configs import Config

VIEW_NAMES: tuple[str, ...] = ("train", "similar", "challenging")

#: Largest frame side accepted (guards against typos such as 12800x720).
MAX_SIDE = 4096


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``320x180``) into ``(W, H)``; raises ValueError with the reason."""
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) != 2:
        raise ValueError(f"size must look like WxH (e.g. 320x180), got {text!r}")
    try:
        w, h = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"size must look like WxH with integers (e.g. 320x180), got {text!r}") from None
    size = (w, h)
    _check_size(size)
    return size


def parse_views(text: str) -> tuple[str, ...]:
    """Parse a comma-separated view list (``train,similar,challenging``)."""
    views = tuple(v.strip() for v in str(text).split(",") if v.strip())
    _check_views(views)
    return views


def _check_size(size) -> None:
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise ValueError(f"size must be a (width, height) pair, got {size!r}")
    w, h = size
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (w, h)):
        raise ValueError(f"size must hold two integers, got {size!r}")
    if w < 32 or h < 32 or w > MAX_SIDE or h > MAX_SIDE:
        raise ValueError(f"size {w}x{h} out of range: each side must be in [32, {MAX_SIDE}]")
    if w % 2 or h % 2:
        raise ValueError(f"size {w}x{h}: width and height must be even (H.264 yuv420p)")
    if not (0.5 <= w / h <= 4.0):
        raise ValueError(f"size {w}x{h}: aspect ratio must be between 1:2 and 4:1")


def _check_views(views) -> None:
    if not views:
        raise ValueError(f"views must name at least one of {', '.join(VIEW_NAMES)}")
    for v in views:
        if v not in VIEW_NAMES:
            raise ValueError(f"unknown view {v!r}; choose from {', '.join(VIEW_NAMES)}")
    if len(set(views)) != len(views):
        raise ValueError(f"views must not repeat a name, got {','.join(views)}")


@dataclass(frozen=True)
class SyntheticConfig(Config):
    """Everything that determines a generated set of streams.

    ``seed`` draws the event timeline (and the time of day the stream starts
    at); ``scene`` fixes the street layout and the camera views, so streams
    made with other seeds but the same scene share the cameras.
    """

    out: Path
    minutes: float
    seed: int = 0
    size: tuple[int, int] = (320, 180)
    fps: float = 10.0
    views: tuple[str, ...] = VIEW_NAMES
    scene: int = 0
    anomalies: bool = True
    rate_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.out is None or str(self.out) == "":
            raise ValueError("out: an output directory is required")
        object.__setattr__(self, "out", Path(self.out))
        try:
            minutes = float(self.minutes)
        except (TypeError, ValueError):
            raise ValueError(f"minutes must be a number, got {self.minutes!r}") from None
        if not math.isfinite(minutes) or minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes!r}")
        if minutes * 60 < 1.0:
            raise ValueError(f"minutes must give at least 1 second of stream, got {self.minutes!r}")
        if minutes > 48 * 60:
            raise ValueError(f"minutes must be <= {48 * 60} (48 hours), got {self.minutes!r}")
        object.__setattr__(self, "minutes", minutes)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.scene, bool) or not isinstance(self.scene, int) or self.scene < 0:
            raise ValueError(f"scene must be a non-negative integer, got {self.scene!r}")
        size = tuple(self.size) if isinstance(self.size, (tuple, list)) else self.size
        try:
            _check_size(size)
        except ValueError as e:
            raise ValueError(f"size: {e}") from None
        object.__setattr__(self, "size", size)
        try:
            fps = float(self.fps)
        except (TypeError, ValueError):
            raise ValueError(f"fps must be a number, got {self.fps!r}") from None
        if not math.isfinite(fps) or not (1.0 <= fps <= 120.0):
            raise ValueError(f"fps must be in [1, 120], got {self.fps!r}")
        object.__setattr__(self, "fps", fps)
        views = tuple(self.views) if isinstance(self.views, (tuple, list)) else self.views
        if isinstance(views, str):
            views = tuple(v for v in views.split(",") if v)
        try:
            _check_views(views)
        except ValueError as e:
            raise ValueError(f"views: {e}") from None
        object.__setattr__(self, "views", views)
        if not isinstance(self.anomalies, bool):
            raise ValueError(f"anomalies must be a bool, got {self.anomalies!r}")
        try:
            rate_scale = float(self.rate_scale)
        except (TypeError, ValueError):
            raise ValueError(f"rate_scale must be a number, got {self.rate_scale!r}") from None
        if not math.isfinite(rate_scale) or not (0.0 <= rate_scale <= 100.0):
            raise ValueError(f"rate_scale must be in [0, 100], got {self.rate_scale!r}")
        object.__setattr__(self, "rate_scale", rate_scale)

    @property
    def seconds(self) -> float:
        """Stream duration in seconds (video and audio alike)."""
        return self.n_frames / self.fps

    @property
    def n_frames(self) -> int:
        return max(1, int(round(self.minutes * 60.0 * self.fps)))



@dataclass
class GeneratedStreams:
    """What :func:`generate` wrote."""

    videos: dict[str, Path]
    labels: Path
    events: Path
    seconds: float
    wall_seconds: float
    config: Path | None = None
    event_counts: dict[str, int] = field(default_factory=dict)

    @property
    def realtime_factor(self) -> float:
        """Stream seconds generated per wall-clock second (all views together)."""
        return self.seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")
