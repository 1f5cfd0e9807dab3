"""The distance D of EPG (DESIGN §4, paper Eq. 5).

D(x, y) = λ·‖x − y‖₂ + (1 − λ)·(1 − cos(x, y)), on unnormalised embeddings.
It scores aligned pairs in the loss, neighbours in mining and anomalies downstream.

The Euclidean part has no derivative at x = y (√ at 0); both functions here
return gradient 0 there instead of NaN, which matters because an aligned pair
can reach distance 0 exactly. The cosine of a zero vector is undefined and
taken as 0 (``F.cosine_similarity``'s convention), so D(0, 0) = 1 − λ; trained
embeddings are never exactly zero.
"""

from __future__ import annotations

import torch

_EPS = 1e-8


def _safe_sqrt(squared: torch.Tensor) -> torch.Tensor:
    """√ with gradient 0 (not inf·0 = NaN) where the argument is 0."""
    positive = squared > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, squared, 1.0)), 0.0)


def distance(x: torch.Tensor, y: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """D between matching rows: x, y [..., d] → [...]. Exact (no expansion), so D(x, x) = 0."""
    euclidean = _safe_sqrt((x - y).pow(2).sum(-1))
    norms = (x.pow(2).sum(-1).clamp_min(_EPS**2) * y.pow(2).sum(-1).clamp_min(_EPS**2)).sqrt()
    cosine = (x * y).sum(-1) / norms
    return (lam * euclidean + (1.0 - lam) * (1.0 - cosine)).clamp_min(0.0)


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """D between every row of x [N, d] and every row of y [M, d] → [N, M].

    One matrix product serves both terms (‖x−y‖² = ‖x‖² + ‖y‖² − 2x·y), so the cost is
    that of x @ yᵀ. The expansion loses precision near 0 (about √(ε·‖x‖²)); callers
    bound N·M by chunking (``epg.pairs``/``epg.loss_margin``).
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"pairwise_distance expects [N, d] and [M, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    xx = x.pow(2).sum(-1, keepdim=True)
    yy = y.pow(2).sum(-1).unsqueeze(0)
    xy = x @ y.T
    if not (torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)):
        return _pairwise_no_grad(xx, yy, xy, lam)
    euclidean = _safe_sqrt((xx + yy - 2.0 * xy).clamp_min(0.0))
    cosine = xy / (xx.clamp_min(_EPS**2) * yy.clamp_min(_EPS**2)).sqrt()
    return (lam * euclidean + (1.0 - lam) * (1.0 - cosine)).clamp_min(0.0)


def _pairwise_no_grad(xx: torch.Tensor, yy: torch.Tensor, xy: torch.Tensor, lam: float) -> torch.Tensor:
    """The same numbers as ``pairwise_distance`` with two N × M buffers instead of ten (mining, metrics)."""
    inverse_norms = (xx.clamp_min(_EPS**2) * yy.clamp_min(_EPS**2)).rsqrt_()
    cosine_part = torch.mul(xy, inverse_norms).neg_().add_(1.0).mul_(1.0 - lam)
    euclidean = xy.mul_(-2.0).add_(xx).add_(yy).clamp_min_(0.0).sqrt_()
    return euclidean.mul_(lam).add_(cosine_part).clamp_min_(0.0)
