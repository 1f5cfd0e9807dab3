"""A tiny random-init checkpoint, the model the job tests score with (no pretrained weights exist here)."""

from __future__ import annotations

from pathlib import Path

from pipelines.train.checkpoint import write_random_init


def tiny_checkpoint(run_dir: Path, clips: str = "unused", seed: int = 0) -> Path:
    """``run_dir/checkpoint_step000000000``: the tiny preset, seeded random init, as pretraining writes it."""
    return write_random_init(Path(run_dir), "tiny", str(clips), seed)
