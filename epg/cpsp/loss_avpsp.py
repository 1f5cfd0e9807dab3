"""L_avpsp: audio-visual pair similarity loss (fully supervised), as read from the paper.

For one video with segment event mask e ∈ {0, 1}^T and s_t = cos(v_out_t, a_out_t)
(the propagated pair of segment t):

    ŝ_t = ReLU(s_t) / (Σ_u ReLU(s_u) + ε)        normalised similarity over the video
    y_t = e_t / Σ_u e_u                           soft label: 1/#event segments on events, 0 elsewhere
    L_avpsp = mean over videos with ≥ 1 event and over t of (ŝ_t − y_t)²

So the propagated pairs of event segments are pulled to equal, high similarity
and background pairs to none. Videos without an event segment have no soft label
and are left out (every AVE video has one; our 10-s windows may not). Weight 100
in the paper (``CPSPLossConfig.avpsp_weight``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def avpsp_loss(av_similarity: torch.Tensor, is_event: torch.Tensor) -> torch.Tensor:
    """av_similarity [B, T] (cosine per segment), is_event [B, T] (bool or 0/1) -> scalar loss."""
    event = is_event.to(av_similarity.dtype)
    has_event = event.sum(dim=1) > 0
    if not bool(has_event.any()):
        return av_similarity.sum() * 0.0
    s = F.relu(av_similarity[has_event])
    s = s / (s.sum(dim=1, keepdim=True) + EPS)
    y = event[has_event] / event[has_event].sum(dim=1, keepdim=True)
    return F.mse_loss(s, y)
