"""Augmentations for both modalities (DESIGN §4): composable, seeded, batched.

Why: without them embeddings learn the time of day (slow light and loudness
drifts shared by near-in-time clips) and mining latches on to it (DESIGN §4's
simulation). Every transform draws per-sample parameters from the
``torch.Generator`` it is called with, so a seed fixes the result; visual
parameters are shared by the frames of a clip (a clip stays temporally coherent).

Visual input: float [B, 3, F, H, W] in [0, 1]. Audio input: log-mel float
[B, 1, n_mels, T] in dB (``epg.features.log_mel``).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
import torch.nn.functional as F

from epg.config import AugmentConfig


class Transform(Protocol):
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    draw = torch.rand(shape, generator=generator, device=generator.device)
    return (low + (high - low) * draw).to(device=like.device, dtype=like.dtype)


def _sample_shape(x: torch.Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + (1,) * (x.dim() - 1)


class Compose:
    """Apply transforms in order with one generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x, generator)
        return x


class Brightness:
    """Add δ ~ U(−amount, amount) to every pixel of a clip."""

    def __init__(self, amount: float) -> None:
        self.amount = amount

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return (x + _uniform(generator, _sample_shape(x), -self.amount, self.amount, x)).clamp(0.0, 1.0)


class Contrast:
    """Scale deviations from the clip's mean by c ~ U(1 − amount, 1 + amount)."""

    def __init__(self, amount: float) -> None:
        self.amount = amount

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        factor = _uniform(generator, _sample_shape(x), 1 - self.amount, 1 + self.amount, x)
        mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        return ((x - mean) * factor + mean).clamp(0.0, 1.0)


class ColorGain:
    """Multiply each colour channel by its own g ~ U(1 − amount, 1 + amount) (white-balance drift)."""

    def __init__(self, amount: float) -> None:
        self.amount = amount

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        return (x * _uniform(generator, shape, 1 - self.amount, 1 + self.amount, x)).clamp(0.0, 1.0)


class SpatialShift:
    """Translate a clip by up to ``fraction`` of its side in x and y (reflect padding); size unchanged."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, f, h, w = x.shape
        pad = int(self.fraction * min(h, w))
        if pad == 0:
            return x
        offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=generator.device).tolist()
        padded = F.pad(x.reshape(b, c * f, h, w), (pad, pad, pad, pad), mode="reflect")
        out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
        return out.reshape(b, c, f, h, w)


class Gain:
    """Loudness change: add g ~ U(−db, db) dB to the whole log-mel."""

    def __init__(self, db: float) -> None:
        self.db = db

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x + _uniform(generator, _sample_shape(x), -self.db, self.db, x)


class AdditiveNoise:
    """With probability p, add white noise at a level L ~ U(low, high) dB, in the power domain."""

    def __init__(self, p: float, low_db: float, high_db: float) -> None:
        self.p, self.low_db, self.high_db = p, low_db, high_db

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = _sample_shape(x)
        apply = _uniform(generator, shape, 0.0, 1.0, x) < self.p
        level = 10.0 ** (_uniform(generator, shape, self.low_db, self.high_db, x) / 10.0)
        fluctuation = torch.empty(x.shape, device=generator.device).exponential_(generator=generator).to(x)
        noisy = 10.0 * torch.log10(10.0 ** (x / 10.0) + level * fluctuation)
        return torch.where(apply, noisy, x)


class Mask:
    """SpecAugment-style masks along one axis (``dim``: −1 time, −2 frequency), filled with the clip's mean."""

    def __init__(self, count: int, max_width: int, dim: int) -> None:
        self.count, self.max_width, self.dim = count, max_width, dim

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.count == 0 or self.max_width == 0:
            return x
        length = x.shape[self.dim]
        positions = torch.arange(length, device=x.device)
        masked = torch.zeros(x.shape[0], length, dtype=torch.bool, device=x.device)
        for _ in range(self.count):
            width = torch.randint(0, min(self.max_width, length) + 1, (x.shape[0], 1), generator=generator, device=generator.device).to(x.device)
            start = (_uniform(generator, (x.shape[0], 1), 0.0, 1.0, x) * (length - width + 1)).long().clamp_max(length - 1)
            masked |= (positions >= start) & (positions < start + width)
        shape = [x.shape[0]] + [1] * (x.dim() - 1)
        shape[self.dim] = length
        mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
        return torch.where(masked.view(shape), mean, x)


def visual_augment(config: AugmentConfig) -> Compose:
    return Compose([Brightness(config.brightness), Contrast(config.contrast), ColorGain(config.color), SpatialShift(config.shift)])


def audio_augment(config: AugmentConfig) -> Compose:
    return Compose([
        Gain(config.gain_db),
        AdditiveNoise(config.noise_p, config.noise_db_min, config.noise_db_max),
        Mask(config.time_masks, config.time_mask, dim=-1),
        Mask(config.freq_masks, config.freq_mask, dim=-2),
    ])
