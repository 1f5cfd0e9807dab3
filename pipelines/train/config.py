"""One pretraining run's settings (``PretrainConfig``), the model presets, and what a resumed run may change."""

from __future__ import annotations

import errno
import os

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, get_args

from epg.config import EPGConfig, ModelConfig, VisualConfig
from epg.configs import Config

Pairing = Literal["epg", "tpg"]
LRSchedule = Literal["constant", "cosine"]
Precision = Literal["auto", "bf16", "fp32"]
PAIRINGS: tuple[str, ...] = get_args(Pairing)
PRECISIONS: tuple[str, ...] = get_args(Precision)

# Model presets: preset(crop_size or None) -> ModelConfig. tiny is the real architecture at a few thousand
# parameters (tests); small (~0.25 M) learns the synthetic streams on a CPU (demo, bench/quality.py).
PRESETS: dict[str, Callable[[int | None], ModelConfig]] = {
    "tiny": lambda crop: ModelConfig.tiny(crop_size=crop or 32),
    "small": lambda crop: ModelConfig.small(crop_size=crop or 64),
    "x3d_m": lambda crop: ModelConfig(visual=VisualConfig(crop_size=crop or 160)),
}

# Fields a resumed run may change; everything else must equal the recorded config.
OPERATIONAL_FIELDS = frozenset({"stop_after_steps", "max_failures", "log_every", "prefetch_batches", "keep_checkpoints",
                                "checkpoint_every", "log_batches", "cpus_per_worker", "gpus_per_worker", "precision",
                                "skip_bad_shards"})


class PretrainError(ValueError):
    """Bad input or configuration, found before any training starts."""


class RunDirWriteError(OSError):
    """Training could not write its run dir (a full disk, a read-only or lost filesystem); the message names
    the path. Checkpoints registered before it stay whole, and a rerun resumes from the last of them."""


# Errors of a write that say the storage refused it, not the program (EIO is left out: it is also a read's).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def storage_reason(exc: OSError) -> str:
    """What went wrong in a failed write, without the library's wrapping ("No space left on device")."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


@dataclass(frozen=True)
class PretrainConfig(Config):
    """One pretraining run: data, method (``epg``), cluster shape, checkpoints and logging. Validated on creation."""

    clips: str
    run_dir: str
    epg: EPGConfig = field(default_factory=EPGConfig)
    pairing: Pairing = "epg"
    preset: str = "x3d_m"
    labels: str | None = None
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    precision: Precision = "auto"
    checkpoint_every: int = 500  # steps; a checkpoint is also written at every epoch end
    keep_checkpoints: int | None = 3
    max_failures: int = 0
    stop_after_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    shuffle_buffer: int = 512  # visual samples per worker; 0 = no shuffle
    global_shuffle: bool = True  # clips in a seeded random order across all footage (else file and time order)
    holdout_fraction: float = 0.1  # last share of every stream's seconds kept out of training, for the diagnostics
    holdout_max_clips: int = 1000  # held-out clips embedded at every epoch end (evenly spread)
    prefetch_batches: int = 2
    lr_warmup_steps: int = 20
    lr_schedule: LRSchedule = "cosine"  # after the warm-up: constant, or cosine decay to 0 at the last step
    freeze_batchnorm: bool = False  # BatchNorm on running statistics (exact data-parallel equivalence on CPU)
    sync_batchnorm: bool = True  # SyncBatchNorm across GPU workers
    log_every: int = 10
    log_batches: bool = False
    skip_bad_shards: bool = False  # leave out clips files (or streams) that cannot be read, instead of stopping

    config_error = PretrainError

    def __post_init__(self) -> None:
        def fail(name: str, rule: str, value: object) -> None:
            raise PretrainError(f"PretrainConfig.{name} must be {rule}, got {value!r}")

        if not self.clips:
            fail("clips", "a clips directory", self.clips)
        if not self.run_dir:
            fail("run_dir", "a run directory", self.run_dir)
        if self.preset not in PRESETS:
            fail("preset", f"one of {sorted(PRESETS)}", self.preset)
        if self.pairing not in PAIRINGS:
            fail("pairing", f"one of {PAIRINGS}", self.pairing)
        if self.epg.pairs.enabled != (self.pairing == "epg"):
            fail("epg.pairs.enabled", f"{self.pairing == 'epg'} for pairing {self.pairing!r}", self.epg.pairs.enabled)
        if self.precision not in PRECISIONS:
            fail("precision", f"one of {PRECISIONS}", self.precision)
        if not 0.0 <= self.holdout_fraction < 0.5:
            fail("holdout_fraction", "in [0, 0.5)", self.holdout_fraction)
        if self.holdout_max_clips < 2:
            fail("holdout_max_clips", ">= 2", self.holdout_max_clips)
        if self.lr_schedule not in get_args(LRSchedule):
            fail("lr_schedule", f"one of {get_args(LRSchedule)}", self.lr_schedule)
        if self.workers < 1:
            fail("workers", ">= 1", self.workers)
        if self.cpus_per_worker <= 0:
            fail("cpus_per_worker", "> 0", self.cpus_per_worker)
        if self.gpus_per_worker < 0:
            fail("gpus_per_worker", ">= 0", self.gpus_per_worker)
        if self.epg.optim.batch_size % 2:
            fail("epg.optim.batch_size", "even (two visual samples per clip)", self.epg.optim.batch_size)
        if self.checkpoint_every < 1:
            fail("checkpoint_every", ">= 1", self.checkpoint_every)
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            fail("keep_checkpoints", ">= 1 or None", self.keep_checkpoints)
        if self.max_failures < -1:
            fail("max_failures", ">= -1 (-1 = retry forever)", self.max_failures)
        if self.stop_after_steps is not None and self.stop_after_steps < 1:
            fail("stop_after_steps", ">= 1 or None", self.stop_after_steps)
        for name in ("shuffle_buffer", "prefetch_batches", "lr_warmup_steps"):
            if getattr(self, name) < 0:
                fail(name, ">= 0", getattr(self, name))
        if self.log_every < 1:
            fail("log_every", ">= 1", self.log_every)

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


def build_pretrain_config(
    clips: str,
    run_dir: str,
    *,
    preset: str = "x3d_m",
    crop_size: int | None = None,
    pairing: Pairing = "epg",
    epg: EPGConfig | None = None,
    visual_checkpoint: str | None = None,
    audio_checkpoint: str | None = None,
    pairs: Mapping[str, Any] | None = None,
    optim: Mapping[str, Any] | None = None,
    bank: Mapping[str, Any] | None = None,
    loss: Mapping[str, Any] | None = None,
    visual: Mapping[str, Any] | None = None,
    augment: bool = True,
    **run: Any,
) -> PretrainConfig:
    """A ``PretrainConfig`` from a model preset and overrides, by the rules ``jobs/pretrain.py`` follows.

    The model comes from ``preset`` (and ``crop_size``) with the pretrained-weight paths and the
    ``visual`` fields replaced (``init``, ``input``); the EPG
    config is ``epg`` (default ``EPGConfig()``) with ``pairs``/``optim``/``bank``/``loss`` fields replaced;
    mining is on exactly for ``pairing="epg"``; the schedule is ``audio_first`` with a visual
    checkpoint and ``joint`` without, unless ``optim`` names one; ``augment=False`` switches
    augmentation off. ``run`` holds the other ``PretrainConfig`` fields (workers, labels ...).
    """
    if preset not in PRESETS:
        raise PretrainError(f"PretrainConfig.preset must be one of {sorted(PRESETS)}, got {preset!r}")
    base = epg or EPGConfig()
    model = PRESETS[preset](crop_size)
    try:
        visual_config = replace(model.visual, checkpoint=visual_checkpoint, **(visual or {}))
    except (TypeError, ValueError) as exc:
        raise PretrainError(str(exc)) from None
    model = replace(model, visual=visual_config, audio=replace(model.audio, checkpoint=audio_checkpoint))
    optim = {"schedule": "audio_first" if visual_checkpoint else "joint", **(optim or {})}
    try:
        epg = replace(
            base,
            model=model,
            pairs=replace(base.pairs, **{"enabled": pairing == "epg", **(pairs or {})}),
            optim=replace(base.optim, **optim),
            bank=replace(base.bank, **(bank or {})),
            loss=replace(base.loss, **(loss or {})),
            augment=base.augment if augment else replace(base.augment, enabled=False),
        )
    except (TypeError, ValueError) as exc:
        raise PretrainError(str(exc)) from None
    return PretrainConfig(clips=clips, run_dir=run_dir, epg=epg, pairing=pairing, preset=preset, **run)
