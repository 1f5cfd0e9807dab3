"""A tiny random-init checkpoint, the model the job tests score with (no pretrained weights exist here)."""

from __future__ import annotations

from pathlib import Path

import torch

from epg.config import EPGConfig, ModelConfig
from pipelines.train.checkpoint import build_model, write_model
from pipelines.train.config import PretrainConfig


def tiny_checkpoint(run_dir: Path, clips: str = "unused", seed: int = 0) -> Path:
    """``run_dir/checkpoint_step000000000``: the tiny preset, seeded random init, as pretraining writes it."""
    torch.manual_seed(seed)
    config = PretrainConfig(clips=str(clips), run_dir=str(run_dir), epg=EPGConfig(model=ModelConfig.tiny()),
                            preset="tiny")
    checkpoint = Path(run_dir) / "checkpoint_step000000000"
    write_model(checkpoint, config, build_model(config).eval())
    return checkpoint
