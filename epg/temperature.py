"""The learnable temperature of the InfoNCE loss (``LossConfig.learn_temperature``).

Kept as log T, so every step moves it by a ratio and it stays positive; clamped to
[``MIN_TEMPERATURE``, ``MAX_TEMPERATURE``] so the logits cannot grow without bound (the
CLIP recipe caps its logit scale at 100 for the same reason). It lives beside the encoders,
not in them: the model that scoring reads holds only f_v and f_a, and the cosine distance
downstream does not depend on T. Every rank computes the loss on the same gathered batch, so
the gradient of T is already the same on every rank and is not summed across them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 1.0


class LearnedTemperature(nn.Module):
    """``forward() -> T``, a 0-d tensor with gradient, starting at ``initial``."""

    def __init__(self, initial: float) -> None:
        super().__init__()
        if not MIN_TEMPERATURE <= initial <= MAX_TEMPERATURE:
            raise ValueError(f"temperature: initial value {initial} outside [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]")
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE)
