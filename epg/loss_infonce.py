"""The multi-positive InfoNCE loss of EPG (``LossConfig.kind = "infonce"``), SupCon-style.

With L2-normalised embeddings and temperature T (fixed, or learned: ``epg.temperature``), for anchor i in the direction v → a:

    s_ij = cos(v_i, a_j) / T
    ℓ_i  = Σ_{p ∈ P_i} w_p · (log Σ_{k ∈ P_i ∪ N_i} exp s_ik − s_ip) / Σ_{p ∈ P_i} w_p

P_i: the aligned candidates (weight 1) and the mined ones (weight w, ``mined_as="positive"``);
N_i: every other candidate except mined ones with ``mined_as="ignore"``, same-stream ones within
±``negative_exclusion`` s, and, with ``BankConfig.mining_only``, bank rows (which then enter only
as mined positives). The loss is the mean of ℓ_i over anchors that have a positive, averaged
over both directions (v → a and a → v, one label matrix). The paper's distance becomes the
cosine one downstream (``LossConfig.distance_lam``). (Khosla et al. 2020, "Supervised
Contrastive Learning", L_out; Oord et al. 2018, InfoNCE.)

Memory: like the margin loss, candidates are taken one chunk at a time under activation
checkpointing; a chunk returns per-anchor log-sum-exp and positive sums, which combine exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from epg.config import LossConfig, MinedAs
from epg.loss_margin import LossTerms
from epg.pairs import ChunkPairs, PairLabels, loss_chunks, run_chunk
from epg.samples import CandidateSet, Samples


def _chunk_parts(v: torch.Tensor, a: torch.Tensor, cand_v: torch.Tensor, cand_a: torch.Tensor, pairs: ChunkPairs,
                 temperature: torch.Tensor | float, mined_weight: float, mined_positive: bool) -> tuple[torch.Tensor, ...]:
    """One candidate chunk, per direction: per-anchor log-sum-exp over P ∪ N, Σ w·s over P, Σ w; counts."""
    aligned, mined, negative = pairs.masks()
    if not mined_positive:
        mined = torch.zeros_like(mined)
    weight = aligned.float() + mined_weight * mined.float()
    member = aligned | mined | negative
    parts = []
    for anchor, cand in ((F.normalize(v, dim=1), F.normalize(cand_a, dim=1)), (F.normalize(a, dim=1), F.normalize(cand_v, dim=1))):
        logits = anchor @ cand.T / temperature
        parts.append(torch.logsumexp(logits.masked_fill(~member, float("-inf")), dim=1))
        parts.append((weight * logits).sum(dim=1))
    return (*parts, weight.sum(dim=1), aligned.sum(), mined.sum(), negative.sum())


def multi_positive_infonce_loss(
    anchors: Samples,
    candidates: CandidateSet,
    labels: PairLabels,
    config: LossConfig,
    mined_weight: float,
    mined_as: MinedAs,
    chunk_size: int,
    bank_mining_only: bool = False,
    temperature: torch.Tensor | None = None,
) -> LossTerms:
    """InfoNCE of ``anchors`` (with gradient) against ``candidates`` under ``labels``; see the module docstring.

    ``temperature``: a learned T (``epg.temperature.LearnedTemperature``, with gradient); default the fixed
    ``config.temperature``.

    ``LossTerms.aligned`` holds the v → a term and ``negative`` the a → v term (their mean is the
    loss); ``mined`` is 0. Counts are of pairs, one direction.
    """
    n = len(anchors)
    zero = anchors.v.new_zeros(())
    lse = {0: [], 1: []}
    positive_sum = {0: anchors.v.new_zeros(n), 1: anchors.v.new_zeros(n)}
    weights = anchors.v.new_zeros(n)
    counts = [0, 0, 0]
    for chunk, pairs in loss_chunks(n, candidates, labels, chunk_size, config.negative_exclusion, bank_mining_only):
        parts = run_chunk(_chunk_parts, anchors.v, anchors.a, chunk.v, chunk.a, pairs,
                          config.temperature if temperature is None else temperature, mined_weight,
                          mined_as == "positive")
        lse[0].append(parts[0])
        positive_sum[0] = positive_sum[0] + parts[1]
        lse[1].append(parts[2])
        positive_sum[1] = positive_sum[1] + parts[3]
        weights = weights + parts[4]
        counts = [c + int(p) for c, p in zip(counts, parts[5:])]
    has_positive = weights > 0
    terms = []
    for direction in (0, 1):
        total_lse = torch.logsumexp(torch.stack(lse[direction], dim=1), dim=1)
        per_anchor = total_lse - positive_sum[direction] / weights.clamp_min(1e-12)
        terms.append(per_anchor[has_positive].mean() if has_positive.any() else zero)
    loss = (terms[0] + terms[1]) / 2
    return LossTerms(loss, terms[0], zero, terms[1], counts[0], counts[1], counts[2])
