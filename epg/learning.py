"""Is the model learning? Diagnostics of embeddings of held-out footage, with no labels needed.

A loss value alone cannot tell learning from a resting point (a collapsed equilibrium gives a
steady loss too), so pretraining reports, every epoch, on seconds it never trains on:

    pair_auc           ROC-AUC of −D(v_i, a_j) separating the aligned pairs (a clip's own picture
                       and sound) from far pairs (another stream, or |Δt| > ``far`` s): 0.5 = chance
    recall_at_k        share of v_i whose k nearest a_j include one within ±``near`` s of t_i in
                       the same stream (v → a retrieval), and ``recall_chance`` for random ranking
    v_spread, a_spread per-dimension std over the mean norm of each modality: → 0 on collapse

``collapsed`` is true when either modality's spread falls below ``COLLAPSE_SPREAD`` or the pair
AUC stays within ``COLLAPSE_AUC`` of chance; a run says so in its log and report.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from epg.distance import pairwise_distance
from epg.metrics import roc_auc

# A run directory's record (under metrics/) of its initial model's diagnostics: the random-init anchor.
INIT_DIAGNOSTICS_FILE = "holdout_init.json"
COLLAPSE_SPREAD = 1e-3
COLLAPSE_AUC = 0.02


def chance_of_a_hit(candidates: Any, hits: Any, draws: int) -> Any:
    """The chance that ``draws`` candidates drawn at random without replacement from ``candidates``, ``hits`` of
    them hits, hold at least one hit: recall@k of a random ranking. Numbers, numpy arrays or tensors."""
    miss = 1.0
    for draw in range(draws):
        left = (candidates - hits - draw) / (candidates - draw)
        miss = miss * left * (left > 0)
    return 1.0 - miss


@torch.no_grad()
def learning_diagnostics(v: torch.Tensor, a: torch.Tensor, stream: torch.Tensor, t: torch.Tensor, *, lam: float,
                         far: int = 10, near: int = 2, k: int = 10) -> dict[str, float]:
    """The diagnostics of one set of clips: v, a [n, d] (a clip's visual and audio embedding), stream, t [n]."""
    n = v.shape[0]
    if n < 2:
        return {key: math.nan for key in ("pair_auc", "recall_at_k", "recall_chance", "v_spread", "a_spread")} | {
            "collapsed": math.nan}
    d = pairwise_distance(v.float(), a.float(), lam)
    same = stream[:, None] == stream[None, :]
    gap = (t[:, None] - t[None, :]).abs()
    aligned = torch.eye(n, dtype=torch.bool, device=v.device)
    far_pairs = ~same | (gap > far)
    scores = -torch.cat([d[aligned], d[far_pairs]])
    truth = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(int(far_pairs.sum()), dtype=torch.bool)])
    pair_auc = roc_auc(truth.cpu().numpy(), scores.cpu().numpy()) if far_pairs.any() else math.nan
    hit = same & (gap <= near)
    top = min(k, n)
    nearest = d.topk(top, dim=1, largest=False).indices
    recall = float(hit.gather(1, nearest).any(dim=1).float().mean())
    chance = float(chance_of_a_hit(n, hit.sum(dim=1).double(), top).mean())  # random ranking
    spreads = {f"{name}_spread": float(x.float().std(dim=0).mean() / x.float().norm(dim=1).mean().clamp_min(1e-12))
               for name, x in (("v", v), ("a", a))}
    collapsed = min(spreads.values()) < COLLAPSE_SPREAD or (math.isfinite(pair_auc) and abs(pair_auc - 0.5) < COLLAPSE_AUC)
    return {"pair_auc": pair_auc, "recall_at_k": recall, "recall_chance": chance, **spreads, "collapsed": float(collapsed)}
