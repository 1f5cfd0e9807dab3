"""The main job's settings (``MainJobConfig``) and where each of its stages writes (``DemoLayout``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from epg.configs import Config
from epg.timecode import parse_start_time
from pipelines.train.config import PAIRINGS, PRESETS

VIEWS: tuple[str, ...] = ("train", "similar", "challenging")
REFERENCE_VIEW = "train"
QUERY_VIEW = "similar"
QUERY_CLASSES: tuple[str, ...] = ("emergency_vehicle", "bus", "truck", "motorcycle", "car")
CONFIG_FILE = "config.json"
STAGES_FILE = "stages.json"
SUMMARY_FILE = "summary.txt"  # every job's full summary, as its own CLI prints it


class MainJobError(RuntimeError):
    """A stage failed (its summary says why); raised after the stage's own report was printed."""


@dataclass(frozen=True)
class MainJobConfig(Config):
    """One end-to-end run; the defaults are the README's demo. Validated on creation (errors name the field).

    Sized for a 2-core laptop (a few minutes): 10 minutes of 3 views at 320x180, the ``small``
    preset, 3 epochs (1 TPG warm-up + 2 EPG). The event rate is 4x the generator's default and
    seed 2 is chosen because that timeline holds every class, five anomalies among them, within
    10 minutes: at the natural rates a short stream has no anomaly to find.
    """

    output: str = "out/demo"
    minutes: float = 10.0
    seed: int = 2
    rate_scale: float = 4.0
    views: tuple[str, ...] = VIEWS
    size: tuple[int, int] = (320, 180)
    fps: float = 10.0
    preset: str = "small"
    pairing: str = "epg"
    epochs: int = 3
    batch_size: int | None = None  # None: the EPG config's default
    anomaly_sigma: float = 2.0
    search_k: int = 5
    start_time: str | None = None  # ISO 8601 start of the recording: wall-clock HH:MM:SS in the outputs
    ray_address: str | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ValueError(f"MainJobConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        if not self.output:
            fail("output", "an output folder")
        if not math.isfinite(self.minutes) or self.minutes <= 0:
            fail("minutes", "> 0")
        if self.seed < 0:
            fail("seed", ">= 0")
        if REFERENCE_VIEW not in self.views or len(set(self.views)) != len(self.views) or set(self.views) - set(VIEWS):
            fail("views", f"distinct views of {VIEWS} including {REFERENCE_VIEW!r}")
        if len(self.views) < 2:
            fail("views", "at least two views (localization is scored on a view it was not trained on)")
        if self.preset not in PRESETS:
            fail("preset", f"one of {sorted(PRESETS)}")
        if self.pairing not in PAIRINGS:
            fail("pairing", f"one of {PAIRINGS}")
        if self.epochs < 1:
            fail("epochs", ">= 1")
        if self.batch_size is not None and (self.batch_size < 2 or self.batch_size % 2):
            fail("batch_size", "an even number >= 2")
        if not math.isfinite(self.anomaly_sigma) or self.anomaly_sigma < 0:
            fail("anomaly_sigma", ">= 0")
        if self.search_k < 1:
            fail("search_k", ">= 1")
        if self.start_time is not None:
            parse_start_time(self.start_time)

    @property
    def crop_size(self) -> int:
        return PRESETS[self.preset](None).visual.crop_size


@dataclass(frozen=True)
class DemoLayout:
    """Where each stage writes under the output folder."""

    root: Path

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def labels(self) -> Path:
        return self.videos / "labels.parquet"

    @property
    def clips(self) -> Path:
        return self.root / "clips"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def anomaly(self) -> Path:
        return self.root / "anomaly"

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def localize(self) -> Path:
        return self.root / "localize"

    @property
    def report(self) -> Path:
        return self.root / "report"
