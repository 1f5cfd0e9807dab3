"""Optimiser and training schedule of the two encoders (DESIGN §4, "Training schedule").

Separate learning rate and weight decay per encoder (a pretrained f_v wants a
smaller step than a fresh f_a); with ``schedule="audio_first"`` f_v is frozen
(no gradient, BatchNorm statistics fixed) for the first ``audio_only_epochs``;
``"alternating"`` then freezes one encoder per epoch in turn (OptimConfig).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from epg.config import OptimConfig
from epg.encoders import AVEncoders


def build_optimizer(model: AVEncoders, config: OptimConfig, temperature: nn.Module | None = None) -> torch.optim.AdamW:
    """AdamW with one parameter group per encoder (names ``visual`` and ``audio``), and a third
    (``temperature``, at the audio learning rate, no weight decay) for a learned InfoNCE temperature."""
    groups = [
        {"name": "visual", "params": list(model.visual.parameters()), "lr": config.lr_visual,
         "weight_decay": config.weight_decay_visual},
        {"name": "audio", "params": list(model.audio.parameters()), "lr": config.lr_audio,
         "weight_decay": config.weight_decay_audio},
    ]
    if temperature is not None:
        groups.append({"name": "temperature", "params": list(temperature.parameters()), "lr": config.lr_audio,
                       "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def apply_schedule(model: AVEncoders, config: OptimConfig, epoch: int) -> bool:
    """Freeze or unfreeze each encoder for ``epoch``; returns whether f_v trains.

    Call before wrapping in DDP for the phase (DDP fixes the set of trained
    parameters when it is built), and after ``model.train()``: a frozen encoder is
    put in eval mode so its BatchNorm statistics stay fixed.
    """
    for encoder, trains in ((model.visual, config.train_visual(epoch)), (model.audio, config.train_audio(epoch))):
        _set_trainable(encoder, trains)
        if not trains:
            encoder.eval()
    return config.train_visual(epoch)


def _set_trainable(module: nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)
