"""Optimiser and training schedule of the two encoders (DESIGN §4, "Training schedule").

Separate learning rate and weight decay per encoder (a pretrained f_v wants a
smaller step than a fresh f_a); with ``schedule="audio_first"`` f_v is frozen
(no gradient, BatchNorm statistics fixed) for the first ``audio_only_epochs``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from epg.config import OptimConfig
from epg.encoders import AVEncoders


def build_optimizer(model: AVEncoders, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with one parameter group per encoder (names ``visual`` and ``audio``)."""
    groups = [
        {"name": "visual", "params": list(model.visual.parameters()), "lr": config.lr_visual,
         "weight_decay": config.weight_decay_visual},
        {"name": "audio", "params": list(model.audio.parameters()), "lr": config.lr_audio,
         "weight_decay": config.weight_decay_audio},
    ]
    return torch.optim.AdamW(groups)


def apply_schedule(model: AVEncoders, config: OptimConfig, epoch: int) -> bool:
    """Freeze or unfreeze f_v for ``epoch``; returns whether f_v trains.

    Call before wrapping in DDP for the phase (DDP fixes the set of trained
    parameters when it is built), and after ``model.train()``: a frozen f_v is put
    in eval mode so its BatchNorm statistics stay those of the checkpoint.
    """
    train_visual = config.train_visual(epoch)
    _set_trainable(model.visual, train_visual)
    if not train_visual:
        model.visual.eval()
    return train_visual


def _set_trainable(module: nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)
