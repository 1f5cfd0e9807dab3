"""L_spsa: segment-level positive sample activation (fully supervised), as read from the paper.

Within one video, E is the set of event segments and G the background ones;
f_t = fused_t / ‖fused_t‖ and S_ij = f_i · f_j / τ. For an event segment i:

    P_i = Σ_{p ∈ E} exp(S_ip)                  (E includes i itself)
    N_i = (1/|G|) Σ_{n ∈ G} exp(S_in)          (mean over the negatives; 0 when G is empty)
    ℓ_i = −log( P_i / (P_i + N_i) )

The video's loss is the mean of ℓ_i over i ∈ E, and L_spsa the mean over videos
with at least one event segment (an all-background video has no anchor). An
InfoNCE in which event segments attract each other and repel the background of
the same video. τ = 0.6 and weight 0.01 in the paper (``CPSPLossConfig``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def spsa_loss(fused: torch.Tensor, is_event: torch.Tensor, temperature: float = 0.6) -> torch.Tensor:
    """fused [B, T, D], is_event [B, T] (bool or 0/1) -> scalar loss."""
    event = is_event.bool()
    has_event = event.any(dim=1)
    if not bool(has_event.any()):
        return fused.sum() * 0.0
    f = F.normalize(fused[has_event], dim=-1)
    event = event[has_event]
    sim = torch.bmm(f, f.transpose(1, 2)) / temperature  # [B', T, T]
    # Subtract each row's max for stability; it cancels in P / (P + N).
    sim = sim - sim.max(dim=-1, keepdim=True).values.detach()
    exp = sim.exp()
    pos_mask = event.unsqueeze(1).to(exp.dtype)  # column p is an event
    neg_mask = (~event).unsqueeze(1).to(exp.dtype)
    pos = (exp * pos_mask).sum(dim=-1)
    num_bg = neg_mask.sum(dim=-1).clamp_min(1.0)
    neg = (exp * neg_mask).sum(dim=-1) / num_bg
    per_segment = -torch.log(pos / (pos + neg))  # [B', T], used only at event rows
    anchors = event.to(exp.dtype)
    per_video = (per_segment * anchors).sum(dim=1) / anchors.sum(dim=1)
    return per_video.mean()
