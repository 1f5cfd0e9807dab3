"""The two encoders of EPG and the module that runs them together."""

from __future__ import annotations

import torch
import torch.nn as nn

from epg.config import ModelConfig
from epg.encoders.audio import AudioResNet, load_audio_checkpoint
from epg.encoders.checkpoint import CheckpointMismatchError, read_state_dict
from epg.encoders.visual import X3DEncoder, load_x3d_checkpoint


class AVEncoders(nn.Module):
    """f_v and f_a in one module, so one DDP wrapper and one state dict cover both.

    ``forward(video, audio) -> (v, a)``; the i-th audio row belongs to the i-th visual sample.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = X3DEncoder(config.visual)
        self.audio = AudioResNet(config.audio)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if video.shape[0] != audio.shape[0]:
            raise ValueError(f"video and audio must have one row per sample, got {video.shape[0]} and {audio.shape[0]}")
        return self.visual(video), self.audio(audio)


def build_encoders(config: ModelConfig) -> AVEncoders:
    return AVEncoders(config)


def parameter_counts(model: AVEncoders) -> dict[str, int]:
    """Parameters of each part: the X3D backbone (without the projection), projections, audio trunk."""
    visual_proj = sum(p.numel() for p in model.visual.projection.parameters())
    visual = sum(p.numel() for p in model.visual.parameters())
    audio_proj = sum(p.numel() for p in model.audio.proj.parameters())
    audio = sum(p.numel() for p in model.audio.parameters())
    return {
        "visual_backbone": visual - visual_proj,
        "visual_projection": visual_proj,
        "visual_total": visual,
        "audio_backbone": audio - audio_proj,
        "audio_projection": audio_proj,
        "audio_total": audio,
    }


__all__ = [
    "AVEncoders",
    "AudioResNet",
    "CheckpointMismatchError",
    "X3DEncoder",
    "build_encoders",
    "load_audio_checkpoint",
    "load_x3d_checkpoint",
    "parameter_counts",
    "read_state_dict",
]
