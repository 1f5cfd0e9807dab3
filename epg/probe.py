"""Linear probe on frozen embeddings (DESIGN §5, event localization).

One ``nn.Linear`` from the standardised features to the classes (background
included), trained with cross-entropy. Features: ``audio`` (a), ``visual`` (v) or
``both`` (the concatenation [v, a]).

Decisions (the design is silent):
- Standardisation: per feature, mean and standard deviation of the training rows
  (a feature constant in training is divided by 1); stored in the probe, applied
  to every input, so the probe is one self-contained module.
- Optimiser: Adam on minibatches (``batch_size``; 0 = full batch) for a fixed
  number of epochs, L2 weight decay on the weights only. The problem is convex
  (softmax regression), so the weights start at zero and the only randomness is
  the seeded shuffling: the same data and config give the same probe.
- ``class_weight``: ``none`` (default: the reported metric is per-second accuracy,
  dominated by background like the footage is) or ``balanced`` (each class
  weighted by N / (C · n_c) in the loss, for when rare classes matter more).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from epg.configs import Config

FeatureSet = Literal["audio", "visual", "both"]
FEATURE_SETS: tuple[str, ...] = get_args(FeatureSet)
ClassWeight = Literal["none", "balanced"]
CLASS_WEIGHTS: tuple[str, ...] = get_args(ClassWeight)


@dataclass(frozen=True)
class ProbeConfig(Config):
    """Training settings of the linear probe; validated on creation."""

    epochs: int = 50
    batch_size: int = 1024  # 0: full batch
    lr: float = 3e-3
    weight_decay: float = 1e-4
    class_weight: ClassWeight = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ValueError(f"ProbeConfig.epochs must be > 0, got {self.epochs}")
        if self.batch_size < 0:
            raise ValueError(f"ProbeConfig.batch_size must be >= 0 (0: full batch), got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"ProbeConfig.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"ProbeConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(f"ProbeConfig.class_weight must be one of {CLASS_WEIGHTS}, got {self.class_weight!r}")


def select_features(v: np.ndarray, a: np.ndarray, features: FeatureSet) -> np.ndarray:
    """The probe's input: a, v or [v, a] (float32 [N, d or 2d])."""
    if features == "audio":
        return np.asarray(a, dtype=np.float32)
    if features == "visual":
        return np.asarray(v, dtype=np.float32)
    if features == "both":
        return np.concatenate([np.asarray(v, dtype=np.float32), np.asarray(a, dtype=np.float32)], axis=1)
    raise ValueError(f"features must be one of {FEATURE_SETS}, got {features!r}")


class LinearProbe(nn.Module):
    """Standardisation (fixed, from the training rows) followed by one linear layer."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.linear = nn.Linear(dim, n_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.losses: list[float] = []  # mean training loss of every epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.scale)

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Class probabilities [N, C]."""
        x = np.asarray(x, dtype=np.float32)
        out = [F.softmax(self(torch.from_numpy(x[i : i + batch_size])), dim=1).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.linear.out_features), np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Most probable class per row (int64 [N])."""
        return self.predict_proba(x).argmax(axis=1).astype(np.int64)


def train_probe(features: np.ndarray, targets: np.ndarray, n_classes: int, config: ProbeConfig | None = None) -> LinearProbe:
    """Fit a linear probe with cross-entropy; ``targets`` are class indices in [0, n_classes)."""
    config = config or ProbeConfig()
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"train_probe: features [N, d] and targets [N] expected, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError("train_probe: no training rows")
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(f"train_probe: targets must lie in [0, {n_classes})")
    if not torch.isfinite(x).all():
        raise ValueError("train_probe: features contain non-finite values")
    probe = LinearProbe(x.shape[1], n_classes)
    probe.mean.copy_(x.mean(0))
    std = x.std(0, unbiased=False)
    probe.scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    weight = None
    if config.class_weight == "balanced":
        counts = torch.bincount(y, minlength=n_classes).float()
        weight = torch.where(counts > 0, len(y) / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    optimizer = torch.optim.Adam(
        [{"params": [probe.linear.weight], "weight_decay": config.weight_decay}, {"params": [probe.linear.bias], "weight_decay": 0.0}],
        lr=config.lr,
    )
    generator = torch.Generator().manual_seed(config.seed)
    n = x.shape[0]
    batch = n if config.batch_size == 0 else min(config.batch_size, n)
    probe.train()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator) if batch < n else torch.arange(n)
        total = 0.0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            loss = F.cross_entropy(probe(x[idx]), y[idx], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        probe.losses.append(total / n)
    probe.eval()
    return probe
