"""L_vpsa: video-level positive sample activation (fully and weakly supervised), as read from the paper.

Each video b gets one feature g_b = mean_t fused_t / ‖fused_t‖ and a class c_b
(its event category; −1 = none, e.g. an all-background window, left out). With
Euclidean distances d(b, b') between the videos of the batch:

    d⁺_b = max_{b': c_b' = c_b} d(b, b')                     hardest positive (b itself counts: 0)
    d⁻_b = mean of the k smallest d(b, b') with c_b' ≠ c_b   nearest other-class videos (k = ``negatives``,
                                                              fewer when the batch has fewer)
    ℓ_b  = max(0, margin − (d⁻_b − d⁺_b))                    margin ranking

L_vpsa is the mean of ℓ_b over videos that have at least one other-class video in
the batch (0 when none has). Margin 0.2, k = 3, weight 1 in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def video_features(fused: torch.Tensor) -> torch.Tensor:
    """[B, T, D] -> [B, D]: the time average of the unit-length segment features."""
    return F.normalize(fused, dim=-1).mean(dim=1)


def vpsa_loss(fused: torch.Tensor, classes: torch.Tensor, margin: float = 0.2, negatives: int = 3) -> torch.Tensor:
    """fused [B, T, D], classes [B] int (−1 = no class) -> scalar loss."""
    keep = classes >= 0
    g = video_features(fused[keep])
    c = classes[keep]
    if g.shape[0] < 2:
        return fused.sum() * 0.0
    diff = g.unsqueeze(1) - g.unsqueeze(0)
    dist = diff.pow(2).sum(dim=-1).clamp_min(1e-12).sqrt()  # clamp: finite gradient at d = 0
    same = c.unsqueeze(1) == c.unsqueeze(0)
    has_negative = (~same).any(dim=1)
    if not bool(has_negative.any()):
        return fused.sum() * 0.0
    d_pos = dist.masked_fill(~same, float("-inf")).max(dim=1).values
    k = min(negatives, int((~same).sum(dim=1).max()))
    neg_dist = dist.masked_fill(same, float("inf"))
    nearest = neg_dist.topk(k, dim=1, largest=False).values  # [B, k], +inf where fewer negatives exist
    valid = torch.isfinite(nearest)
    d_neg = nearest.masked_fill(~valid, 0.0).sum(dim=1) / valid.sum(dim=1).clamp_min(1)
    loss = F.relu(margin - (d_neg - d_pos))
    return loss[has_negative].mean()
