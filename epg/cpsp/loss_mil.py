"""L_mil: the weakly supervised multiple-instance loss of the CPSP head (video labels only).

Per segment t of a window: the event gate g_t = sigmoid(event logit) and class
probabilities p_tc = sigmoid(category logit), c = 1..C (per segment: the
``segment`` category head). Two attention-weighted averages over the T segments:

    f_c = Σ_t g_t p_tc / Σ_t g_t              what the open segments say   (foreground)
    b_c = Σ_t (1 − g_t) p_tc / Σ_t (1 − g_t)  what the closed segments say (background)

    L_mil = BCE(f, y) + β·BCE(b, 0) + π·BCE(event logits, all-event or all-background)
            + w·[BCE(max_t g_t q_tc, y) + BCE(max_t (1 − g_t), β)]

y ∈ {0, 1}^C are the classes present in the window and β ∈ {0, 1} whether it holds
background (background as a class of its own in the video label, derived from
per-second labels like y). The b term applies only to windows with background. π
marks the windows whose label fixes every gate: no background means every segment
is an event, and no class means every segment is background. The last two terms
(weight w, ``CPSPLossConfig.mil_presence_weight``) are multiple-instance presence
terms in the manner of the published code's max pooling, read per segment: with
q_t = softmax over the C classes of segment t's category logits, a labelled class
must be the dominant class of at least one open segment and an absent class of none,
and a window with background must hold at least one closed segment.

Why it localises: f must hold the window's classes and no other, so an open segment
whose probabilities disagree with the label dilutes f and its gate is pushed shut;
b must hold no class, so a closed segment that carries the label's class is pushed
open. Both averages are normalised, so neither rewards opening or closing every
gate; where a segment sits decides. On a busy street half the windows hold no
background, and the b term alone would ask them to show some in their least-open
segments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6


def attention_pool(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """values [B, T, C], weights [B, T] >= 0 -> [B, C]: Σ_t w_t x_tc / Σ_t w_t (0 when all weights are 0)."""
    return (weights.unsqueeze(-1) * values).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp_min(EPS)


def mil_loss(event_logits: torch.Tensor, class_logits: torch.Tensor, video_labels: torch.Tensor,
             background: torch.Tensor) -> dict[str, torch.Tensor]:
    """event_logits [B, T], class_logits [B, T, C], video_labels [B, C] multi-hot, background [B] bool
    -> {foreground, background, pinned, class_presence, background_presence} (each a mean over the batch's
    windows; the caller weighs the presence terms)."""
    if class_logits.dim() != 3 or class_logits.shape[:2] != event_logits.shape:
        raise ValueError(f"L_mil needs per-segment category logits [B, T, C] for events {list(event_logits.shape)}, "
                         f"got {list(class_logits.shape)}")
    labels = video_labels.to(class_logits.dtype)
    has_background = background.to(torch.bool)
    gate = torch.sigmoid(event_logits)
    probs = torch.sigmoid(class_logits)
    foreground = attention_pool(probs, gate).clamp(EPS, 1 - EPS)
    closed = attention_pool(probs, 1 - gate).clamp(EPS, 1 - EPS)
    closed_loss = F.binary_cross_entropy(closed, torch.zeros_like(closed), reduction="none").mean(dim=1)
    pinned = ~has_background | (labels.sum(dim=1) == 0)
    gate_target = (~has_background).to(event_logits.dtype).unsqueeze(1).expand_as(event_logits)
    pinned_loss = F.binary_cross_entropy_with_logits(event_logits, gate_target, reduction="none").mean(dim=1)
    dominant = torch.softmax(class_logits, dim=-1)
    class_presence = (gate.unsqueeze(-1) * dominant).amax(dim=1).clamp(EPS, 1 - EPS)
    background_presence = (1 - gate).amax(dim=1).clamp(EPS, 1 - EPS)
    return {
        "foreground": F.binary_cross_entropy(foreground, labels),
        "background": (closed_loss * has_background).mean(),
        "pinned": (pinned_loss * pinned).mean(),
        "class_presence": F.binary_cross_entropy(class_presence, labels),
        "background_presence": F.binary_cross_entropy(background_presence, has_background.to(gate.dtype)),
    }
